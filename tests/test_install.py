"""install.py on a real transformers wheel in a throw-away venv: install, status, revert, refusals."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from fsutil import read_only
from wheelenv import WHEEL_RELEASE

from ropefix.errors import RopefixError
from ropefix.ship import install as ins

VERSION = WHEEL_RELEASE
FILES = [
    "transformers/models/qwen2_vl/modeling_qwen2_vl.py",
    "transformers/models/qwen2_5_vl/modeling_qwen2_5_vl.py",
    "transformers/models/qwen2_5_vl/modular_qwen2_5_vl.py",
    "transformers/models/qwen2_audio/modeling_qwen2_audio.py",
]


def synthetic_patch(site: Path, files: list[str] = FILES) -> ins.Patch:
    changes = []
    for rel in files:
        original = (site / rel).read_bytes()
        changes.append(ins.FileChange(rel, original, original + b"# ropefix test edit\n"))
    return ins.Patch(VERSION, ("rope-deltas",), tuple(changes))


pytestmark = [pytest.mark.network, pytest.mark.slow]


def test_install_then_revert_is_byte_identical_and_idempotent(site: Path) -> None:
    inst = ins.find_installed(site)
    assert inst.version == VERSION
    before = {rel: (site / rel).read_bytes() for rel in FILES}
    patch = synthetic_patch(site)
    assert ins.status(patch, inst).overall is ins.FileState.UNPATCHED

    report = ins.install(patch, inst)
    assert set(report.changed) == set(FILES)
    assert report.overall is ins.FileState.PATCHED
    for c in patch.changes:
        assert (site / c.path).read_bytes() == c.patched
    assert ins.install(patch, inst).changed == ()  # idempotent

    reverted = ins.revert(inst)
    assert set(reverted.changed) == set(FILES)
    for rel in FILES:
        data = (site / rel).read_bytes()
        assert data == before[rel]
        assert ins.sha256(data) == inst.record[rel]
    assert not (site / ins.STATE_DIR).exists()
    assert ins.revert(inst).changed == ()  # idempotent
    assert ins.status(patch, inst).overall is ins.FileState.UNPATCHED


def test_file_changed_by_someone_else_is_refused(site: Path) -> None:
    inst = ins.find_installed(site)
    patch = synthetic_patch(site)
    victim = site / FILES[1]
    victim.write_bytes(victim.read_bytes().replace(b"import", b"import ", 1))
    snapshot = {rel: (site / rel).read_bytes() for rel in FILES}
    assert ins.status(patch, inst).files[FILES[1]] is ins.FileState.MODIFIED
    with pytest.raises(RopefixError, match="someone else changed"):
        ins.install(patch, inst)
    assert {rel: (site / rel).read_bytes() for rel in FILES} == snapshot
    assert not (site / ins.STATE_DIR).exists()


def test_failed_third_write_rolls_back_the_first_two(site: Path) -> None:
    inst = ins.find_installed(site)
    patch = synthetic_patch(site)
    snapshot = {rel: (site / rel).read_bytes() for rel in FILES}
    calls: list[Path] = []

    def flaky(dest: Path, data: bytes) -> None:
        calls.append(dest)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        ins.atomic_write(dest, data)

    with pytest.raises(RopefixError, match="restored"):
        ins.install(patch, inst, write=flaky)
    assert len(calls) == 3
    assert {rel: (site / rel).read_bytes() for rel in FILES} == snapshot
    assert not (site / ins.STATE_DIR).exists()
    assert ins.status(patch, inst).overall is ins.FileState.UNPATCHED


def test_read_only_site_packages_is_refused(site: Path) -> None:
    inst = ins.find_installed(site)
    patch = synthetic_patch(site)
    folder = (site / FILES[0]).parent
    snapshot = {rel: (site / rel).read_bytes() for rel in FILES}
    # root ignores mode bits, so make the folder immutable when we are root
    use_chattr = os.geteuid() == 0
    if use_chattr:
        if subprocess.run(["chattr", "+i", folder], check=False, capture_output=True).returncode != 0:
            pytest.skip("running as root without chattr: cannot make a folder read-only")
    else:
        folder.chmod(0o555)
    try:
        with pytest.raises(RopefixError, match="read-only"):
            ins.install(patch, inst)
    finally:
        if use_chattr:
            subprocess.run(["chattr", "-i", folder], check=True)
        else:
            folder.chmod(0o755)
    assert {rel: (site / rel).read_bytes() for rel in FILES} == snapshot
    assert not (site / ins.STATE_DIR).exists()


def test_install_without_record_is_refused(site: Path) -> None:
    (next(site.glob("transformers-*.dist-info")) / "RECORD").unlink()
    with pytest.raises(RopefixError, match="not installed from a wheel"):
        ins.find_installed(site)


def test_patch_for_another_release_is_refused(site: Path) -> None:
    inst = ins.find_installed(site)
    patch = synthetic_patch(site)
    other = ins.Patch("4.53.3", patch.rules, patch.changes)
    with pytest.raises(RopefixError, match="backport --to 4.49.0"):
        ins.install(other, inst)
    assert ins.status(patch, inst).overall is ins.FileState.UNPATCHED


def test_an_unwritable_state_folder_is_refused_before_any_change(site: Path) -> None:
    inst = ins.find_installed(site)
    patch = synthetic_patch(site)
    snapshot = {rel: (site / rel).read_bytes() for rel in FILES}
    (site / ins.STATE_DIR).mkdir()
    with read_only(site / ins.STATE_DIR), pytest.raises(RopefixError, match="state folder") as e:
        ins.install(patch, inst)
    assert str(site / ins.STATE_DIR) in str(e.value) and "Nothing was changed" in str(e.value)
    assert {rel: (site / rel).read_bytes() for rel in FILES} == snapshot


def test_revert_without_its_state_is_an_error_when_files_are_patched(site: Path) -> None:
    inst = ins.find_installed(site)
    patch = synthetic_patch(site)
    ins.install(patch, inst)
    shutil.rmtree(site / ins.STATE_DIR)
    with pytest.raises(RopefixError) as e:
        ins.revert(inst)
    assert "no record" in str(e.value) and FILES[0] in str(e.value) and "--force-reinstall" in str(e.value)
    assert all((site / c.path).read_bytes() == c.patched for c in patch.changes)  # nothing pretended


def test_an_install_with_other_rules_is_named_not_blamed_on_someone_else(site: Path) -> None:
    inst = ins.find_installed(site)
    only_mask = ins.Patch(VERSION, ("causal-mask",), synthetic_patch(site, FILES[:2]).changes)
    ins.install(only_mask, inst)
    snapshot = {rel: (site / rel).read_bytes() for rel in FILES}
    everything = ins.Patch(VERSION, ("rope-deltas", "causal-mask"), synthetic_patch(site).changes)
    everything = ins.Patch(
        VERSION,
        everything.rules,
        tuple(
            ins.FileChange(c.path, (site / c.path).read_bytes(), c.patched + b"# more\n") for c in everything.changes
        ),
    )
    with pytest.raises(RopefixError) as e:
        ins.install(everything, inst)
    text = str(e.value)
    assert "someone else" not in text
    assert "installed with rules causal-mask" in text and "--revert" in text and "--status" in text
    assert {rel: (site / rel).read_bytes() for rel in FILES} == snapshot
