"""The committed patches cannot drift from the engine: each applies to its release and equals a fresh one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ropefix.releases import sources
from ropefix.ship import patches

PATCHES = Path(__file__).resolve().parent.parent / "patches"
INDEX = json.loads((PATCHES / patches.INDEX).read_text()) if (PATCHES / patches.INDEX).exists() else {"patches": []}


def test_index_and_patch_files_agree() -> None:
    listed = {e["patch"] for e in INDEX["patches"]}
    assert listed, "patches/index.json lists no patch: run `ropefix patches --refresh`"
    assert listed == {p.name for p in PATCHES.glob("*.patch")}  # no orphan, no missing patch
    for e in INDEX["patches"]:
        assert e["patch"] == f"transformers-{e['release']}.patch" and e["sites"] > 0
        text = (PATCHES / e["patch"]).read_text()
        assert {f["path"] for f in e["files"]} == {ln[6:] for ln in text.splitlines() if ln.startswith("+++ b/")}
        for f in e["files"]:
            assert len(f["sha256_before"]) == len(f["sha256_after"]) == 64 and f["sha256_before"] != f["sha256_after"]
    assert not set(INDEX["not_affected"]) & {e["release"] for e in INDEX["patches"]}


@pytest.mark.network
@pytest.mark.slow
@pytest.mark.parametrize("entry", INDEX["patches"], ids=lambda e: e["release"])
def test_patch_applies_to_its_release_and_equals_a_fresh_one(entry: dict, shared_store) -> None:
    root = sources.release_tree(entry["release"], shared_store)
    assert patches.check_one(PATCHES, entry, root, regenerate=True) == []


def test_a_drifted_patch_is_reported(tmp_path: Path) -> None:
    from ropefix.fix import engine

    root = tmp_path / "tree"
    model = root / "src/transformers/models/m"
    model.mkdir(parents=True)
    (root / "src/transformers/__init__.py").write_text("")
    snippet = (Path(__file__).parent / "snippets/store_then_add.py").read_text()
    (model / "modeling_m.py").write_text(snippet)
    made = patches.generate("0.0.0", root)
    assert made.sites == 2 and made.diff == engine.apply_tree(root, dry_run=True).diff
    out = tmp_path / "patches"
    out.mkdir()
    entry = {"release": "0.0.0", "patch": made.patch_name, "files": [vars(f) for f in made.files]}
    (out / made.patch_name).write_text(made.diff)
    assert patches.check_one(out, entry, root, regenerate=True) == []
    # an edited added line still applies, but is no longer what the engine makes
    (out / made.patch_name).write_text(made.diff.replace("rope_deltas.to(", "rope_deltas.cuda().to(", 1))
    assert [p.split(": ", 1)[1] for p in patches.check_one(out, entry, root, regenerate=True)] == [
        f"{made.patch_name} differs from what the engine makes now"
    ]
    # a removed line the release does not hold: the patch no longer applies
    (out / made.patch_name).write_text(made.diff.replace("-            self.rope_deltas = rope_deltas", "-  x = 1", 1))
    problems = patches.check_one(out, entry, root, regenerate=False)
    assert len(problems) == 1 and "git apply --check fails" in problems[0]
