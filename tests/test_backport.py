"""backport: the engine's patch for a pinned release, written to patches/ and installed into a real wheel venv."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fsutil import read_only
from wheelenv import WHEEL_RELEASE

from ropefix.errors import RopefixError
from ropefix.main import main
from ropefix.prove import verdicts
from ropefix.prove.verdict import FamilyReport, Report, State, Verdict
from ropefix.releases import sources
from ropefix.ship import backport, install, patches
from ropefix.store import ENV_VAR, Store

VERSION = WHEEL_RELEASE


@pytest.fixture(scope="session")
def release(shared_store: Store) -> Path:
    return sources.release_tree(VERSION, store=shared_store)


def _proven_report(proven: dict[str, tuple[str, ...]], other: State = State.NOT_AFFECTED) -> Report:
    families = []
    for fam in ("qwen2_vl", "qwen2_5_vl"):
        rules = proven.get(fam, ())
        vs = tuple(
            Verdict(VERSION, "2.13.0", fam, r, State.REPRODUCED_FIXED if r in rules else other, 9, 5)
            for r in ("rope-deltas", "causal-mask", "rope-index-scatter")
        )
        families.append(FamilyReport(fam, State.REPRODUCED_FIXED if rules else other, vs, judged_pairs=("a/text",)))
    return Report(VERSION, "2.13.0", "0.0.0", "ci", tuple(families))


@pytest.mark.parametrize(
    ("report", "message"),
    [
        (_proven_report({"qwen2_vl": ("rope-deltas",)}, State.FIX_FAILED), "fix-failed"),
        (_proven_report({"qwen2_vl": ("rope-deltas",)}, State.NOT_JUDGED), "not-judged"),
        (_proven_report({}, State.LATENT), "proves nothing"),
    ],
)
def test_the_gate_refuses_what_the_verdict_does_not_prove(report: Report, message: str) -> None:
    with pytest.raises(RopefixError, match=message):
        backport.proven_plan(report)
    assert backport.proven_plan(report, force=True) is None  # --force: the unproven static patch


def test_the_gate_passes_the_proven_plan() -> None:
    plan = backport.proven_plan(_proven_report({"qwen2_vl": ("rope-deltas", "causal-mask")}))
    assert plan == {"qwen2_vl": ["rope-deltas", "causal-mask"]}


@pytest.mark.network
@pytest.mark.slow
def test_patch_comes_from_the_releases_own_tree(release: Path, tmp_path: Path) -> None:
    patch = backport.make_patch(VERSION, tree=release)
    assert patch.rules[0] == "rope-deltas"
    assert "transformers/models/qwen2_vl/modeling_qwen2_vl.py" in {c.path for c in patch.changes}
    for c in patch.changes:
        assert c.original == (release / "src" / c.path).read_bytes()
        assert c.patched != c.original
        compile(c.patched, c.path, "exec")
    dest = backport.write_patch(patch, tmp_path / "patches")
    assert dest.name == f"transformers-{VERSION}.patch"
    text = dest.read_text()
    assert "+++ b/src/transformers/models/qwen2_vl/modeling_qwen2_vl.py" in text
    assert "cache_position.device" in text
    # the same generator as `ropefix patches --refresh`: identical text for the same tree and rules
    assert text == patches.generate(VERSION, release).diff


@pytest.mark.network
@pytest.mark.slow
def test_engine_patch_install_status_revert_round_trip(release: Path, site: Path) -> None:
    inst = install.find_installed(site)
    originals = {p: (site / p).read_bytes() for p in inst.record if p.endswith(".py") and "/models/qwen2" in p}
    patch = backport.make_patch(VERSION, tree=release)
    assert install.status(patch, inst).overall is install.FileState.UNPATCHED
    done = install.install(patch, inst)
    assert done.overall is install.FileState.PATCHED and done.changed
    assert b"cache_position.device" in (site / "transformers/models/qwen2_vl/modeling_qwen2_vl.py").read_bytes()
    install.revert(inst)
    assert {p: (site / p).read_bytes() for p in originals} == originals
    assert all(install.sha256(data) == inst.record[p] for p, data in originals.items())


@pytest.mark.network
@pytest.mark.slow
def test_a_proven_plan_patches_only_its_families_and_rules(release: Path) -> None:
    plan = {"qwen2_vl": ["rope-deltas"]}
    patch = backport.make_patch(VERSION, tree=release, plan=plan)
    assert patch.plan == plan and patch.rules == ("rope-deltas",)
    assert {c.path for c in patch.changes} == {"transformers/models/qwen2_vl/modeling_qwen2_vl.py"}
    assert patch.diff == patches.generate(VERSION, release, plan).diff


@pytest.mark.network
@pytest.mark.slow
def test_cli_install_status_revert(
    release: Path,
    site: Path,
    shared_store: Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(ENV_VAR, str(shared_store.root))  # the release tree is already in the shared cache
    # the verdict verify finds on this release (kept out of the shared cache): both families proven
    proven = _proven_report({"qwen2_vl": ("rope-deltas", "causal-mask"), "qwen2_5_vl": ("rope-deltas",)})
    monkeypatch.setattr(verdicts, "lookup", lambda release, store=None: proven)
    target = site / "transformers/models/qwen2_vl/modeling_qwen2_vl.py"
    before = target.read_bytes()
    cwd = tmp_path / "read-only-cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    common = ["--site", str(site)]
    assert main(["backport", "--status", *common]) == 0
    assert "unpatched" in capsys.readouterr().out
    with read_only(cwd):  # the install writes only under the site (its state folder), never here
        assert main(["backport", "--install", "--to", VERSION, *common]) == 0
    assert list(cwd.iterdir()) == []
    inst = install.find_installed(site)
    assert (inst.state_dir / f"transformers-{VERSION}.patch").read_text() == patches.generate(
        VERSION, release, backport.proven_plan(proven)
    ).diff
    assert main(["backport", "--status", *common]) == 0
    assert f"transformers {VERSION} in {site}: patched" in capsys.readouterr().out
    assert main(["backport", "--install", *common]) == 0  # idempotent
    assert "patched 0 file(s)" in capsys.readouterr().out
    assert main(["backport", "--revert", *common]) == 0
    assert target.read_bytes() == before
    assert main(["backport", "--install", "--to", "4.53.3", *common]) == 1  # not the installed release
    assert "does not match the installed" in capsys.readouterr().err
    # a verdict that proves nothing: refused, nothing written
    monkeypatch.setattr(verdicts, "lookup", lambda release, store=None: _proven_report({}, State.LATENT))
    assert main(["backport", "--install", *common]) == 1
    assert "proves nothing" in capsys.readouterr().err and target.read_bytes() == before
    # installed from one verdict, then the verdict changes: named as ropefix's own install, with the way out
    monkeypatch.setattr(verdicts, "lookup", lambda release, store=None: proven)
    assert main(["backport", "--install", *common]) == 0
    narrower = _proven_report({"qwen2_vl": ("rope-deltas",)})
    monkeypatch.setattr(verdicts, "lookup", lambda release, store=None: narrower)
    capsys.readouterr()
    assert main(["backport", "--install", *common]) == 1
    err = capsys.readouterr().err
    assert "installed with rules rope-deltas, causal-mask" in err and "someone else" not in err and "--revert" in err
    shutil.rmtree(inst.state_dir)
    assert main(["backport", "--revert", *common]) == 1  # no record: an error, not "reverted 0 file(s)"
    assert "no record" in capsys.readouterr().err


def test_release_the_engine_cannot_patch_is_refused(tmp_path: Path) -> None:
    pkg = tmp_path / "src" / "transformers"
    (pkg / "models" / "toy").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "models" / "toy" / "modeling_toy.py").write_text(
        "def forward(self, cache_position=None):\n    return self.cache_length + self.rope_deltas\n"
    )
    with pytest.raises(RopefixError, match="changes nothing"):
        backport.make_patch("9.9.9", tree=tmp_path)
