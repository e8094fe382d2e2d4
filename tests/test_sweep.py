"""The full-history sweep: cells run once, survive an interruption, merge per release, say what was not judged."""

from __future__ import annotations

from pathlib import Path

import pytest
from verdict_fixtures import family

from ropefix.prove import render, sweep, verdicts
from ropefix.prove.verdict import FamilyReport, Report, State


def _fake_cells(monkeypatch: pytest.MonkeyPatch, outcomes: dict[str, State | BaseException]) -> list[sweep.Cell]:
    """run_cell answers from ``outcomes`` (by family); an exception interrupts the sweep there."""
    calls: list[str] = []

    def run_cell(cell: sweep.Cell, opts: sweep.Options, store: object = None) -> Report:
        calls.append(str(cell))
        what = outcomes[cell.family]
        if isinstance(what, BaseException):
            raise what
        if what is State.NOT_JUDGED:
            fam = FamilyReport(cell.family, State.NOT_JUDGED, reason="verify crashed: boom")
        else:
            fam = family(what, name=cell.family, release=cell.release)
        return Report(cell.release, "2.13.0", "0.0.0", "ci", (fam,), 2.0)

    monkeypatch.setattr(sweep, "run_cell", run_cell)
    monkeypatch.setattr("ropefix.releases.relenv.python_for", lambda release, store=None: Path("/usr/bin/python3"))
    monkeypatch.setattr(sweep, "_calls", calls, raising=False)
    return [sweep.Cell("4.49.0", "qwen2_vl"), sweep.Cell("4.49.0", "qwen2_5_vl"), sweep.Cell("5.0.0", "glm4v")]


def test_an_interrupted_sweep_keeps_finished_cells_and_resumes_from_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opts = sweep.Options(tmp_path, parallel=1)
    cells = _fake_cells(
        monkeypatch,
        {"qwen2_vl": State.REPRODUCED_FIXED, "qwen2_5_vl": State.LATENT, "glm4v": KeyboardInterrupt()},
    )
    with pytest.raises(KeyboardInterrupt):
        sweep.sweep(cells, opts)
    kept = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "cells").rglob("*.json"))
    assert kept == ["cells/4.49.0/qwen2_5_vl.json", "cells/4.49.0/qwen2_vl.json"]
    assert not list(tmp_path.rglob("*.part"))

    cells = _fake_cells(
        monkeypatch,
        {"qwen2_vl": AssertionError("must not re-run"), "qwen2_5_vl": AssertionError(), "glm4v": State.NOT_AFFECTED},
    )
    result = sweep.sweep(cells, opts)
    assert sweep._calls == ["5.0.0 glm4v"]  # only the unfinished cell ran
    assert [o.reused for o in result.outcomes] == [True, True, False] and result.reused == 2
    # kept cells count with the verify time their own run measured, so the summed figure survives resuming
    assert result.cell_seconds == round(
        sum(o.report.duration_s for o in result.outcomes[:2]) + result.outcomes[2].seconds, 1
    )
    assert result.outcomes[0].seconds == result.outcomes[0].report.duration_s > 0
    assert set(result.reports) == {"4.49.0", "5.0.0"}
    assert [f.family for f in result.reports["4.49.0"].families] == ["qwen2_5_vl", "qwen2_vl"]
    assert result.reports["4.49.0"].state is State.REPRODUCED_FIXED


def test_a_crashed_cell_is_not_judged_listed_and_tried_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opts = sweep.Options(tmp_path, parallel=2)
    cells = _fake_cells(
        monkeypatch, {"qwen2_vl": State.NOT_JUDGED, "qwen2_5_vl": State.LATENT, "glm4v": State.NOT_AFFECTED}
    )
    result = sweep.sweep(cells, opts)
    assert result.not_judged() == [(cells[0], "verify crashed: boom")]
    assert not (tmp_path / "cells/4.49.0/qwen2_vl.json").exists()  # not kept: the next run tries it again
    assert not result.reports["4.49.0"].passed()
    written = sweep.write(result, opts)
    table = (tmp_path / "sweep.md").read_text()
    assert "| 4.49.0 |" in table and "not-judged 33.3%" in table and "- 4.49.0 qwen2_vl: verify crashed: boom" in table
    assert (tmp_path / "verdicts" / "transformers-5.0.0.json") in written
    assert Report.load(tmp_path / "verdicts" / "transformers-5.0.0.json").state is State.NOT_AFFECTED
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"


def test_a_foreign_cell_file_stops_the_sweep_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ropefix.errors import RopefixError

    cells = _fake_cells(monkeypatch, {"qwen2_vl": State.LATENT, "qwen2_5_vl": State.LATENT, "glm4v": State.LATENT})
    bad = sweep.cell_path(tmp_path, cells[0])
    bad.parent.mkdir(parents=True)
    bad.write_text('{"schema": 1}')
    with pytest.raises(RopefixError, match=str(bad)):
        sweep.sweep(cells, sweep.Options(tmp_path))
    assert bad.read_text() == '{"schema": 1}'


def test_the_findings_table_counts_hazards_per_family() -> None:
    r = Report("4.49.0", "2.13.0", "0.0.0", "ci", (family(State.REPRODUCED_FIXED, hazards=("embedding-merge",)),))
    table = render.findings_table([r])
    assert (
        "| 4.49.0 | qwen2_vl | embedding-merge | 1 |" in table and "| 4.49.0 | qwen2_vl | rope-deltas | 1 |" in table
    )


def test_what_users_hit_sums_each_hazard_over_the_history() -> None:
    def rel(version: str, *fams: FamilyReport) -> Report:
        return Report(version, "2.13.0", "0.0.0", "ci", fams)

    reports = [
        rel("4.48.3", family(State.REPRODUCED_FIXED, release="4.48.3")),
        rel("4.49.0", family(State.REPRODUCED_FIXED, release="4.49.0", hazards=("embedding-merge",))),
        rel("4.50.3", family(State.LATENT, release="4.50.3")),
        rel("4.51.3", family(State.FIX_FAILED, "glm4v", release="4.51.3")),
    ]
    rows = {line.split(" | ")[0].lstrip("| "): line for line in render.hazard_summary(reports).splitlines()[2:]}
    # rope-deltas: proven and fixed in 4.48.3-4.49.0, reproduced but not fixed in 4.51.3 (its own run of releases)
    assert rows["rope-deltas"].startswith(
        "| rope-deltas | 4.48.3-4.49.0, 4.51.3 | glm4v, qwen2_vl | 3 | 2 | fixed by `rope-deltas` where proven | 4.51.3:"
    )
    assert "| embedding-merge | 4.49.0 | qwen2_vl | 1 | 2 | reported (no rule) | 4.49.0:" in rows["embedding-merge"]
    assert list(rows) == ["rope-deltas", "embedding-merge"]  # most cells first
    assert "(none found)" in render.hazard_summary([rel("5.2.0", family(State.LATENT, release="5.2.0"))])


def test_a_sweep_from_a_source_checkout_records_its_commit() -> None:
    # the cells import this checkout through PYTHONPATH; an editable install's metadata keeps an older commit
    import subprocess

    src = Path(sweep.__file__).resolve().parents[2]
    cmd = ["git", "-C", src, "rev-parse", "--short=9", "HEAD"]
    head = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    assert verdicts.kit_version().startswith(f"ropefix git {head.stdout.strip()}")
