"""The coverage tool: outcome classes, one real pair on the CPU and a simulated accelerator, the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ropefix.prove import coverage as cv
from ropefix.prove import coverage_sweep as sw
from ropefix.prove import tinymodels as tm

DEVICE_TEXT = (
    "RuntimeError: Expected all tensors to be on the same device, but found at least two devices, cpu and cuda:0!"
)


@pytest.mark.parametrize(
    ("cpu", "sim", "same", "outcome"),
    [
        (cv.Run(True), cv.Run(True), True, cv.OK),
        (cv.Run(True), cv.Run(True), False, cv.MISMATCH),
        (cv.Run(False, "RuntimeError: shape mismatch"), None, None, cv.CPU),
        (cv.Run(False, "NotImplementedError: \"x\" not implemented for 'Long'"), None, None, cv.CPU_KERNEL),
        (cv.Run(True), cv.Run(False, DEVICE_TEXT), False, cv.DEVICE),
        (
            cv.Run(True),
            cv.Run(False, "NotImplementedError: \"histogram_cpu\" not implemented for 'Int'"),
            False,
            cv.SIMULATOR,
        ),
        (cv.Run(True), cv.Run(False, "ValueError: something else"), False, cv.SIM_ERROR),
    ],
)
def test_outcomes_are_classified(cpu: cv.Run, sim: cv.Run | None, same: bool | None, outcome: str) -> None:
    assert cv._classify(cpu, sim, same) == outcome


def test_a_real_pair_runs_on_cpu_and_one_simulated_accelerator() -> None:
    import transformers

    root = str(Path(transformers.__file__).parent)
    pair = cv.cover_pair(tm.build("qwen2_vl"), "generate-greedy", "image", root)
    assert pair.outcome == cv.OK, pair
    assert pair.cpu.ok and pair.sim.ok


def test_padded_positions_are_not_compared() -> None:
    import torch

    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    a = torch.zeros(2, 3, 4)
    b = a.clone()
    b[0, 0] = 7  # a padded position: the sdpa mask differs by device type there
    assert cv._same(a, b, mask)
    b[1, 2] = 7
    assert not cv._same(a, b, mask)


def _cov(version: str, fams: list[cv.FamilyCoverage]) -> cv.Coverage:
    return cv.Coverage(version, "2.13.0", fams)


def test_report_counts_and_groups_across_releases() -> None:
    err = cv.Run(False, "RuntimeError: size 23 vs 12", "models/x/modeling_x.py:10")
    ok = cv.Pair("forward", "text", cv.OK, cv.Run(True), cv.Run(True))
    results = [
        _cov(
            v,
            [
                cv.FamilyCoverage(
                    "x", True, True, kinds=["text"], pairs=[ok, cv.Pair("decode-loop", "text", cv.CPU, err)]
                ),
                cv.FamilyCoverage("y", True, False, reason="RopefixError: y refuses its defaults"),
                cv.FamilyCoverage("z", False, True, pairs=[cv.Pair("forward", "text", cv.CPU, err)]),  # not flagged
            ],
        )
        for v in ("4.49.0", "4.50.3", "4.51.3")
    ]
    s = sw.summary(results)
    assert (s["pairs"], s["built"], s["all_pairs"], s["all_built"]) == (6, 3, 9, 6)  # x, y flagged; z not
    assert (s["cells_run"], s["judged_cpu"], s["by_class"][cv.CPU]) == (9, 3, 6)
    assert len(s["not_built"]) == 3
    text = sw.render(results, "cmd", "abc", "2026-01-01")
    assert "| `cpu` | x | 4.49.0–4.51.3 | decode-loop/text |" in text  # one row for the three releases
    assert "| y | 4.49.0–4.51.3 | RopefixError: y refuses its defaults |" in text
    assert "| `cpu` | z | 4.49.0–4.51.3 | forward/text |" in text  # unflagged families are covered too
    assert "| 4.49.0 | 3 | 2 | 2 | 3 | 1 |" in text  # families, flagged, built, cells run, ok


def test_json_round_trip_and_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    c = _cov(
        "4.49.0",
        [cv.FamilyCoverage("x", True, True, pairs=[cv.Pair("forward", "text", cv.OK, cv.Run(True), cv.Run(True))])],
    )
    (tmp_path / "4.49.0.json").write_text(json.dumps(c.to_json()))
    monkeypatch.setattr(sw.proc, "run", lambda *a, **k: pytest.fail("a kept release must not run again"))
    assert sw.run_release("4.49.0", tmp_path) == c


def test_release_ranges() -> None:
    order = ["4.45.2", "4.46.3", "4.47.1", "5.0.0", "5.1.0"]
    assert sw._ranges(["5.1.0", "4.45.2", "4.46.3", "5.0.0"], order) == "4.45.2–4.46.3, 5.0.0–5.1.0"


def test_a_failure_keeps_its_site_and_a_device_error_its_hazard() -> None:
    def device_error() -> None:
        raise RuntimeError(DEVICE_TEXT.removeprefix("RuntimeError: "))

    run, out = cv._run(device_error, "/nonexistent")
    assert out is None and not run.ok and run.error == DEVICE_TEXT
    assert run.site == "<outside transformers>" and run.hazard  # named by the hazard catalogue
    run, _ = cv._run(lambda: int("x"), "/nonexistent")
    assert run.error.startswith("ValueError") and run.hazard == ""


def test_a_release_whose_run_fails_is_reported_and_the_sweep_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ropefix.proc import Completed
    from ropefix.releases import relenv

    good = _cov("4.50.3", [cv.FamilyCoverage("x", True, True, pairs=[cv.Pair("forward", "text", cv.OK)])])
    (tmp_path / "4.50.3.json").write_text(json.dumps(good.to_json()))
    monkeypatch.setattr(relenv, "python_for", lambda v: Path("/bin/false"))
    monkeypatch.setattr(
        sw.proc, "run", lambda cmd, **k: Completed(tuple(cmd), 1, "", "Traceback...\nImportError: boom")
    )
    results = sw.sweep(["4.49.0", "4.50.3"], tmp_path, parallel=2)
    assert results[0].error.endswith("ImportError: boom") and results[1] == good
    assert not (tmp_path / "4.49.0.json").exists()  # a failed run is retried next time, never kept
    text = sw.render(results, "cmd", "abc", "2026-01-01")
    assert "| 4.49.0 | the coverage process failed (exit 1): ImportError: boom |" in text


def test_all_lists_families_discovery_skipped_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        tm, "discover", lambda: ([], [tm.Skipped("foo_vl", "the config class refuses its own defaults")])
    )
    cov = cv.cover(all_discovered=True, scan=False)
    assert [(f.name, f.built) for f in cov.families] == [("foo_vl", False)]
    assert cov.families[0].reason == "not discovered: the config class refuses its own defaults"
