"""Patch the transformers installed in an environment, and undo it byte for byte.

The installed side of ``ropefix backport``. Before a byte changes, every file is checked against
the wheel's RECORD (sha256), so files someone else changed are refused, not overwritten. The
originals are backed up next to the install (``<site-packages>/.ropefix/transformers-<version>/``,
so ``ropefix cache clear`` cannot lose them), every file is written through a temporary file and
``os.replace``, and a state file records what was done. If any write fails, the files already
written are put back before the error is raised: nothing half-done survives.
"""

from __future__ import annotations

import base64
import contextlib
import enum
import hashlib
import importlib.metadata as md
import json
import shlex
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ropefix.errors import RopefixError
from ropefix.files import atomic_write, check_writable
from ropefix.fix.patch import FileChange, Patch  # the one patch model (re-exported for callers)

DIST = "transformers"
STATE_DIR = ".ropefix"


@dataclass(frozen=True)
class Installed:
    """A transformers distribution installed from a wheel: where it is and what its RECORD says."""

    version: str
    site: Path
    record: dict[str, str]  # path relative to site -> sha256 hex digest from RECORD

    @property
    def state_dir(self) -> Path:
        return self.site / STATE_DIR / f"{DIST}-{self.version}"


class FileState(str, enum.Enum):
    UNPATCHED = "unpatched"  # matches the wheel's RECORD
    PATCHED = "patched"  # matches what ropefix wrote
    MODIFIED = "modified"  # neither: changed by someone else


@dataclass(frozen=True)
class InstallReport:
    version: str
    site: Path
    files: dict[str, FileState]
    changed: tuple[str, ...] = field(default=())  # files this call wrote

    @property
    def overall(self) -> FileState:
        states = set(self.files.values())
        if FileState.MODIFIED in states or len(states) > 1:
            return FileState.MODIFIED
        return states.pop() if states else FileState.UNPATCHED


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def find_installed(site: Path | None = None) -> Installed:
    """The transformers in ``site`` (a site-packages folder), or the one this interpreter imports."""
    dists = list(md.distributions(name=DIST, path=[str(site)])) if site else _default_dists()
    if not dists:
        where = site or "this Python environment"
        raise RopefixError(
            f"transformers is not installed in {where}. Install it (`pip install transformers==X`) "
            "or pass the site-packages folder that holds it with --site."
        )
    dist = dists[0]
    record_text = dist.read_text("RECORD")
    if not record_text:
        raise RopefixError(
            f"transformers {dist.version} was not installed from a wheel (its metadata has no RECORD file, as with "
            "conda or `setup.py develop`), so ropefix cannot prove its files are unchanged. Reinstall it with "
            f"`pip install --force-reinstall --no-deps transformers=={dist.version}`, or use `ropefix.hotfix(model)`, "
            "which changes no files."
        )
    record: dict[str, str] = {}
    for line in record_text.splitlines():
        path, _, rest = line.partition(",")
        algo, _, digest = rest.partition(",")[0].partition("=")
        if algo == "sha256":
            record[path] = base64.urlsafe_b64decode(digest + "=" * (-len(digest) % 4)).hex()
    return Installed(dist.version, Path(str(dist.locate_file(""))).resolve(), record)


def _default_dists() -> list[md.Distribution]:
    try:
        return [md.distribution(DIST)]
    except md.PackageNotFoundError:
        return []


def status(patch: Patch, inst: Installed) -> InstallReport:
    _check_matches(patch, inst)
    return InstallReport(inst.version, inst.site, {c.path: _state(c, inst) for c in patch.changes})


def install(
    patch: Patch,
    inst: Installed,
    *,
    diff: str | None = None,
    write: Callable[[Path, bytes], object] | None = None,
) -> InstallReport:
    """Apply ``patch`` to ``inst``; idempotent. ``diff`` (the patch as text) is kept in the state folder beside
    the backups, the one place an install writes besides the patched files. ``write`` replaces the atomic
    writer (tests inject failures)."""
    before = status(patch, inst)
    _refuse_other_install(patch, inst)
    modified = [p for p, s in before.files.items() if s is FileState.MODIFIED]
    if modified:
        raise RopefixError(
            f"These installed transformers {inst.version} files match neither the wheel's RECORD nor ropefix's patch, "
            f"so someone else changed them: {', '.join(modified)}. Nothing was changed. Reinstall transformers "
            f"(`pip install --force-reinstall --no-deps transformers=={inst.version}`) and retry."
        )
    todo = [c for c in patch.changes if before.files[c.path] is FileState.UNPATCHED]
    if not todo:
        return before
    _check_writable(inst, todo)
    writer = write or atomic_write
    _save_backups(inst, patch, todo, diff)  # back up first: the originals are what --revert restores
    done: list[FileChange] = []
    try:
        for c in todo:
            writer(inst.site / c.path, c.patched)
            done.append(c)
    except BaseException as e:
        for c in done:
            atomic_write(inst.site / c.path, c.original)
        _remove_state(inst)
        if isinstance(e, OSError):
            raise RopefixError(
                f"Writing {inst.site} failed ({e}); the files already written were restored and "
                "nothing is changed. Fix the cause (disk full? permissions?) and retry."
            ) from e
        raise
    after = status(patch, inst)
    return InstallReport(after.version, after.site, after.files, tuple(c.path for c in todo))


def revert(inst: Installed) -> InstallReport:
    """Restore the originals ropefix backed up, byte-identical (checked against RECORD); idempotent.

    Without ropefix's record (never patched, already reverted, or the state folder deleted) nothing can be
    restored: that is fine when the model files match the wheel's RECORD (an empty report), and an error
    naming the changed files otherwise, never a silent "reverted 0 files".
    """
    state = _load_state(inst)
    if state is None:
        changed = [p for p in _model_files(inst) if _sha_of(inst.site / p) != inst.record[p]]
        if changed:
            shown = ", ".join(changed[:5]) + (" ..." if len(changed) > 5 else "")
            raise RopefixError(
                f"There is no record of a ropefix install in {inst.state_dir} (it was deleted, or the files were "
                f"changed by other means), but these files of transformers {inst.version} differ from the wheel's "
                f"RECORD: {shown}. Without its backups ropefix cannot restore them; nothing was changed. Reinstall "
                f"with that environment's pip: `pip install --force-reinstall --no-deps transformers=={inst.version}`."
            )
        return InstallReport(inst.version, inst.site, {})
    files: dict[str, dict[str, str]] = state["files"]
    originals: dict[str, bytes] = {}
    for path, digests in files.items():
        current = _read(inst.site / path)
        if current is not None and sha256(current) not in (digests["original"], digests["patched"]):
            raise RopefixError(
                f"{inst.site / path} changed after ropefix patched it, so reverting would lose "
                f"someone's edit. Nothing was changed. Reinstall transformers=={inst.version} instead."
            )
        backup = _read(inst.state_dir / "originals" / path)
        if backup is None or sha256(backup) != digests["original"]:
            raise RopefixError(
                f"The backup of {path} under {inst.state_dir} is missing or damaged. Nothing was "
                f"changed. Reinstall with `pip install --force-reinstall --no-deps "
                f"transformers=={inst.version}`."
            )
        originals[path] = backup
    _check_writable(inst, [FileChange(p, b"", b"") for p in originals])
    changed = []
    for path, data in originals.items():
        if _read(inst.site / path) != data:
            atomic_write(inst.site / path, data)
            changed.append(path)
    _remove_state(inst)
    return InstallReport(inst.version, inst.site, {p: FileState.UNPATCHED for p in originals}, tuple(changed))


def recorded_plan(inst: Installed) -> dict[str, list[str]] | None:
    """The proven plan (family -> rules) the current install was made with, if it was made from one."""
    state = _load_state(inst)
    return dict(state["plan"]) if state and state.get("plan") else None


def recorded_rules(inst: Installed) -> list[str] | None:
    """The rules the current install was made with (None when ropefix has not patched it)."""
    state = _load_state(inst)
    return list(state["rules"]) if state else None


def _refuse_other_install(patch: Patch, inst: Installed) -> None:
    """An install made with other rules (another proven plan, or the static patch of --force) is ropefix's own
    work, not someone else's edit: say what it was made with and how to switch or keep it."""
    state = _load_state(inst)
    if state is None or (tuple(state["rules"]) == patch.rules and state.get("plan") == patch.plan):
        return
    if any(_sha_of(inst.site / p) != d["patched"] for p, d in state["files"].items()):
        return  # not (only) what ropefix wrote: the checks that follow name the files
    site = shlex.quote(str(inst.site))
    raise RopefixError(
        f"transformers {inst.version} in {inst.site} is already patched by ropefix, installed with rules "
        f"{', '.join(state['rules'])} ({_describe_plan(state.get('plan'))}); this install would apply rules "
        f"{', '.join(patch.rules)} ({_describe_plan(patch.plan)}). Nothing was changed. To switch, revert and "
        f"install again: `ropefix backport --revert --site {site}`, then `ropefix backport --install --site {site}`. "
        f"To keep the current install, nothing is needed (`ropefix backport --status --site {site}` checks it)."
    )


def _describe_plan(plan: dict[str, list[str]] | None) -> str:
    if not plan:
        return "the unproven static patch, --force"
    return "proven for " + "; ".join(f"{family}: {', '.join(rules)}" for family, rules in sorted(plan.items()))


def _model_files(inst: Installed) -> list[str]:
    """The files a ropefix patch can touch: model sources listed in RECORD."""
    return sorted(p for p in inst.record if p.startswith("transformers/models/") and p.endswith(".py"))


def _sha_of(path: Path) -> str | None:
    data = _read(path)
    return None if data is None else sha256(data)


def _save_backups(inst: Installed, patch: Patch, todo: list[FileChange], diff: str | None) -> None:
    """The originals, the state and the patch text, in ``<site>/.ropefix/``; all of them or none."""
    existed = inst.state_dir.exists()
    try:
        inst.state_dir.mkdir(parents=True, exist_ok=True)
        check_writable(inst.state_dir)
        for c in todo:
            atomic_write(inst.state_dir / "originals" / c.path, c.original)
        if diff is not None:
            atomic_write(inst.state_dir / f"{DIST}-{patch.version}.patch", diff)
        _save_state(inst, patch)
    except OSError as e:
        if not existed:
            _remove_state(inst)
        raise RopefixError(
            f"Cannot write ropefix's state folder {inst.site / STATE_DIR} ({e.strerror or e}), where the backups "
            "that --revert restores must go. Nothing was changed. Make that folder writable (or remove it if it is "
            "a leftover), or use `ropefix.hotfix(model)`, which changes no files."
        ) from e


def _check_matches(patch: Patch, inst: Installed) -> None:
    if patch.version != inst.version:
        raise RopefixError(
            f"The patch is for transformers {patch.version} but {inst.site} holds {inst.version}. "
            f"Run `ropefix backport --to {inst.version} --install --site {shlex.quote(str(inst.site))}` for the "
            "installed release."
        )
    missing = [c.path for c in patch.changes if c.path not in inst.record]
    if missing:
        raise RopefixError(
            f"The wheel's RECORD in {inst.site} does not list {', '.join(missing)} (an editable or "
            "repackaged install?). Reinstall transformers from its wheel and retry."
        )


def _state(change: FileChange, inst: Installed) -> FileState:
    data = _read(inst.site / change.path)
    if data is None:
        return FileState.MODIFIED
    digest = sha256(data)
    if digest == inst.record[change.path] and data == change.original:
        return FileState.UNPATCHED
    if data == change.patched:
        return FileState.PATCHED
    return FileState.MODIFIED


def _check_writable(inst: Installed, changes: Iterable[FileChange]) -> None:
    """Probe every folder we will write by creating a file in it: os.access lies for root and read-only mounts."""
    folders = {(inst.site / c.path).parent for c in changes} | {inst.site}
    for folder in sorted(folders):
        try:
            check_writable(folder)
        except OSError as e:
            raise RopefixError(
                f"Cannot write to {folder} ({e.strerror}): the site-packages is read-only for this user. Nothing was "
                "changed. Run as the environment's owner, install into a virtual environment you own, or use "
                "`ropefix.hotfix(model)`, which changes no files."
            ) from e


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _save_state(inst: Installed, patch: Patch) -> None:
    state = {
        "version": inst.version,
        "rules": list(patch.rules),
        "plan": patch.plan,
        "files": {c.path: {"original": sha256(c.original), "patched": sha256(c.patched)} for c in patch.changes},
    }
    atomic_write(inst.state_dir / "state.json", json.dumps(state, indent=2).encode())


def _load_state(inst: Installed) -> dict | None:
    data = _read(inst.state_dir / "state.json")
    return json.loads(data) if data else None


def _remove_state(inst: Installed) -> None:
    shutil.rmtree(inst.state_dir, ignore_errors=True)
    with contextlib.suppress(OSError):
        (inst.site / STATE_DIR).rmdir()
