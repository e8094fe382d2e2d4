"""The committed patches carry their proof and cannot drift from the engine or from the verdicts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from verdict_fixtures import report

from ropefix.prove import verdicts
from ropefix.prove.verdict import State
from ropefix.releases import sources
from ropefix.ship import patches

ROOT = Path(__file__).resolve().parent.parent
PATCHES = ROOT / "patches"
INDEX = patches.load_index(PATCHES)
PATCHED = patches.patched_entries(INDEX)


def test_index_and_patch_files_agree() -> None:
    listed = {e["patch"] for e in PATCHED}
    assert listed == {p.name for p in PATCHES.glob("*.patch")}  # no orphan, no missing patch
    for e in PATCHED:
        assert e["patch"] == f"transformers-{e['release']}.patch" and e["sites"] > 0
        text = (PATCHES / e["patch"]).read_text()
        assert {f["path"] for f in e["files"]} == {ln[6:] for ln in text.splitlines() if ln.startswith("+++ b/")}
        for f in e["files"]:
            assert len(f["sha256_before"]) == len(f["sha256_after"]) == 64 and f["sha256_before"] != f["sha256_after"]


def test_every_patch_is_proven_by_its_committed_verdict() -> None:
    """The gate: a patch exists only where the kit's committed verdict proves exactly its plan."""
    for e in INDEX["releases"]:
        committed = verdicts.committed(e["release"])
        if committed is None:
            assert e["patch"] is None and e["reason"] == "no verdict"
            continue
        plan, why = committed.ship_plan()
        if e["patch"] is None:
            assert not plan and e["reason"] == why, e["release"]
            continue
        assert plan and e["plan"] == plan and e["state"] == committed.state.value
        for fam in e["families"]:
            for proof in fam["proofs"]:
                assert proof["site"].startswith("transformers/") and proof["layout"]["device_map"]
            if fam["rules"]:
                assert fam["state"] == State.REPRODUCED_FIXED.value and fam["judged"] > 0


def test_the_readme_release_table_is_generated_from_the_index() -> None:
    readme = (ROOT / "README.md").read_text()
    assert patches.release_table(INDEX) in readme, "run `ropefix patches --table` and paste it into README.md"


@pytest.mark.network
@pytest.mark.slow
@pytest.mark.parametrize("entry", PATCHED, ids=lambda e: e["release"])
def test_patch_applies_to_its_release_and_equals_a_fresh_one(entry: dict, shared_store) -> None:
    root = sources.release_tree(entry["release"], shared_store)
    assert patches.check_one(PATCHES, entry, root, regenerate=True) == []


def _tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    model = root / "src/transformers/models/qwen2_vl"
    model.mkdir(parents=True)
    (root / "src/transformers/__init__.py").write_text("")
    snippet = (Path(__file__).parent / "snippets/store_then_add.py").read_text()
    (model / "modeling_qwen2_vl.py").write_text(snippet)
    return root


def test_only_proven_verdicts_make_patches(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    assert patches.generate_proven("0.0.0", root, report(State.REPRODUCED_FIXED, "0.0.0")) is not None
    for state in (State.LATENT, State.NOT_AFFECTED, State.NOT_JUDGED, State.FIX_FAILED):
        assert patches.generate_proven("0.0.0", root, report(state, "0.0.0")) is None, state
    entry = patches.release_entry("0.0.0", report(State.NOT_JUDGED, "0.0.0"), None)
    assert entry["patch"] is None and "not-judged" in entry["reason"]


def test_a_drifted_patch_is_reported(tmp_path: Path) -> None:
    from ropefix.fix import engine

    root = _tree(tmp_path)
    plan = {"qwen2_vl": ["rope-deltas"]}
    made = patches.generate("0.0.0", root, plan)
    assert made.sites == 2 and made.diff == engine.apply_tree(root, dry_run=True, rules=["rope-deltas"]).diff
    out = tmp_path / "patches"
    out.mkdir()
    name = patches.patch_name(made.version)
    files = [
        {"path": c.checkout_path, "sha256_before": c.sha256_before, "sha256_after": c.sha256_after}
        for c in made.changes
    ]
    entry = {"release": "0.0.0", "patch": name, "files": files, "plan": plan}
    (out / name).write_text(made.diff)
    assert patches.check_one(out, entry, root, regenerate=True) == []
    # an edited added line still applies, but is no longer what the engine makes
    (out / name).write_text(made.diff.replace("rope_deltas.to(", "rope_deltas.cuda().to(", 1))
    assert [p.split(": ", 1)[1] for p in patches.check_one(out, entry, root, regenerate=True)] == [
        f"{name} differs from what the engine makes now"
    ]
    # a removed line the release does not hold: the patch no longer applies
    (out / name).write_text(made.diff.replace("-            self.rope_deltas = rope_deltas", "-  x = 1", 1))
    problems = patches.check_one(out, entry, root, regenerate=False)
    assert len(problems) == 1 and "git apply --check fails" in problems[0]


def test_an_index_of_another_schema_is_refused(tmp_path: Path) -> None:
    from ropefix.errors import RopefixError

    (tmp_path / patches.INDEX).write_text(json.dumps({"spec": "x", "patches": []}))
    with pytest.raises(RopefixError, match="schema"):
        patches.load_index(tmp_path)


def test_one_patch_model_the_diff_and_the_installed_bytes_agree(tmp_path: Path) -> None:
    # patches/ writes the diff, backport --install and the wheel write the bytes: applying the one to the
    # release tree must give the other, at the path site-packages has
    from ropefix import proc
    from ropefix.ship import backport

    root = _tree(tmp_path)
    made = patches.generate("0.0.0", root, {"qwen2_vl": ["rope-deltas"]})
    assert made == backport.make_patch("0.0.0", tree=root, plan={"qwen2_vl": ["rope-deltas"]})
    (change,) = made.changes
    assert change.path == "transformers/models/qwen2_vl/modeling_qwen2_vl.py"
    assert change.original == (root / "src" / change.path).read_bytes() and change.sites == made.sites == 2
    proc.run(["git", "init", "-q"], cwd=root)
    (tmp_path / "p.diff").write_text(made.diff)
    assert proc.run(["git", "apply", "-p1", str(tmp_path / "p.diff")], cwd=root).ok
    assert (root / "src" / change.path).read_bytes() == change.patched
    entry = patches.release_entry("0.0.0", report(State.REPRODUCED_FIXED, "0.0.0"), made)
    assert entry["files"] == [
        {"path": "src/" + change.path, "sha256_before": change.sha256_before, "sha256_after": change.sha256_after}
    ]


def test_the_readme_quotes_the_committed_full_matrix() -> None:
    matrix = (ROOT / "docs" / "matrix-full.md").read_text().splitlines()
    readme = (ROOT / "README.md").read_text()
    verdict = next(line for line in matrix if line.startswith(("**PASS**", "**FAIL**")))
    made = next(line for line in matrix if line.startswith("Generated "))
    assert f"> {verdict}\n> {made}\n" in readme, "quote docs/matrix-full.md's result and provenance lines"
    assert (ROOT / "docs" / "matrix-full.png").stat().st_size > 10_000


def test_the_readme_what_users_hit_table_is_generated_from_the_committed_verdicts() -> None:
    from ropefix.prove import render

    readme = (ROOT / "README.md").read_text()
    table = render.hazard_summary(verdicts.all_committed())
    assert table in readme, "run `ropefix sweep --table` and paste it into README.md"


def test_the_readme_quotes_the_committed_sweep() -> None:
    sweep = (ROOT / "docs" / "sweep.md").read_text().splitlines()
    readme = (ROOT / "README.md").read_text()
    counts = next(line for line in sweep if " release x family cells, " in line)
    assert f"> {counts}\n" in readme, "quote docs/sweep.md's count line"
    assert (ROOT / "docs" / "sweep.png").stat().st_size > 10_000 and (ROOT / "docs" / "findings.md").exists()
