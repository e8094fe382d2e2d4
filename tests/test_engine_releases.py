"""The engine on real releases through the cache: scan -> apply -> scan finds nothing affected.

CI-sized: the first Qwen2-VL release (generation-kwargs shape), the first with Qwen2.5-VL and a
modular file (stored-attribute shape), the first 5.x (many siblings, ``self.model.rope_deltas``)
and the latest release checked here (later refactor: no cache_position left to agree with).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ropefix.fix import engine, pieces
from ropefix.fix.rules import AFFECTED, SAFE, UNKNOWN
from ropefix.releases import sources

pytestmark = [pytest.mark.network, pytest.mark.slow]

AFFECTED_RELEASES = ["4.45.2", "4.49.0", "5.0.0"]
REFACTORED = "5.24.0"


def copy_models(src: Path, dst: Path, models: set[str]) -> Path:
    """The models we rewrite, copied out of the read-only release tree into a tree of our own."""
    pkg = dst / "src" / "transformers"
    (pkg / "models").mkdir(parents=True)
    shutil.copy(src / "src/transformers/__init__.py", pkg / "__init__.py")
    for m in models:
        shutil.copytree(src / "src/transformers/models" / m, pkg / "models" / m)
    return dst


@pytest.mark.parametrize("version", AFFECTED_RELEASES)
def test_release_scan_apply_scan(version: str, shared_store, tmp_path: Path) -> None:
    root = sources.release_tree(version, shared_store)
    report = engine.scan_tree(root)
    assert "qwen2_vl" in {s.model for s in report.affected}
    models = {s.model for s in report.sites}
    work = copy_models(root, tmp_path, models)
    first = engine.apply_tree(work)
    assert first.changed
    for ch in first.changes:
        compile(ch.after, ch.file, "exec")
        assert max(len(ln) for ln in ch.after.splitlines()) <= max(119, *map(len, ch.before.splitlines()))
    after = engine.scan_tree(work)
    assert after.affected == []
    assert len(after.sites) == len(report.sites)  # every site is still reported, now as fixed
    assert [s.shape for s in after.with_status(UNKNOWN)] == [s.shape for s in report.with_status(UNKNOWN)]
    assert not engine.apply_tree(work).changed  # idempotent
    assert engine.scan_tree(root).sites == report.sites  # the cached release tree was not touched


def test_modular_and_modeling_files_get_the_same_edits(shared_store) -> None:
    root = sources.release_tree("4.49.0", shared_store)
    # rope-deltas sites sit in both files; the causal-mask method is inherited by the modular file
    # from qwen2_vl (whose modeling file the same apply patches), so compare the rope-deltas edits
    report = engine.apply_tree(root, models=["qwen2_5_vl"], rules="rope-deltas", dry_run=True)
    added = {
        ch.file.rsplit("/", 1)[1]: sorted(ln for ln in ch.diff.splitlines() if ln.startswith("+ "))
        for ch in report.changes
    }
    assert added["modular_qwen2_5_vl.py"] == added["modeling_qwen2_5_vl.py"] != []


def test_later_refactor_leaves_no_rope_deltas_site_affected(shared_store) -> None:
    root = sources.release_tree(REFACTORED, shared_store)
    report = engine.scan_tree(root, rules="rope-deltas")
    assert report.sites and report.with_status(AFFECTED) == []
    assert not engine.apply_tree(root, rules="rope-deltas", dry_run=True).changed


def test_stores_that_only_meet_an_int_cache_length_are_safe_and_left_alone(shared_store) -> None:
    """5.0.0: Qwen2.5-Omni adds its stored deltas to past_key_values_length only (safe); Qwen2-VL's
    generation path adds them to cache_position (affected)."""
    root = sources.release_tree("5.0.0", shared_store)
    sites = engine.scan_tree(root, models=["qwen2_5_omni", "qwen2_vl"], rules="rope-deltas").sites
    omni = [s for s in sites if s.model == "qwen2_5_omni"]
    assert omni and {s.status for s in omni} == {SAFE}
    assert {s.reason for s in omni if s.shape == "store-unaligned"} == {
        "the stored deltas only meet an int cache length"
    }
    assert ("store-unaligned", AFFECTED) in {(s.shape, s.status) for s in sites if s.model == "qwen2_vl"}
    patch = engine.apply_tree(root, models=["qwen2_5_omni", "qwen2_vl"], rules="rope-deltas", dry_run=True)
    assert {c.file.split("/")[3] for c in patch.changes} == {"qwen2_vl"}


def test_statement_slices_find_what_whole_functions_find(shared_store, monkeypatch) -> None:
    """The scan parses only statements a rule reads; parsing whole functions must find the same sites."""
    root = sources.release_tree("5.0.0", shared_store)
    sliced = engine.scan_tree(root, memo=False)
    monkeypatch.setattr(pieces, "sliced", lambda piece, *args, **kwargs: piece)
    assert engine.scan_tree(root, memo=False) == sliced
