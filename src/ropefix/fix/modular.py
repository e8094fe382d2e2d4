"""Confirm that patched modular files regenerate the patched modeling files (upstream's converter).

Upstream generates ``modeling_*.py`` from ``modular_*.py`` with ``utils/modular_model_converter.py``
(git checkouts have it; sdists and installed packages do not). When it is there we run it on
every modular file we touched and require each modeling file it writes to equal ours.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from ropefix import proc, ui
from ropefix.errors import RopefixError
from ropefix.files import atomic_write

CONVERTER = "utils/modular_model_converter.py"


class Changed(Protocol):
    file: str
    after: str


def converter_args(root: Path) -> list[str] | None:
    """How this tree's converter takes file names (the option was renamed), or None without one."""
    script = root / CONVERTER
    if not script.exists():
        return None
    text = script.read_text(errors="replace")
    flag = "--files_to_parse" if "--files_to_parse" in text else "--files"
    return [proc.python(), CONVERTER, flag]


def confirm(root: Path, prefix: str, changes: list[Changed]) -> list[str]:
    """Run the converter on touched modular files; returns them. Mismatch or failure: RopefixError."""
    args = converter_args(root)
    modular = [ch.file for ch in changes if Path(ch.file).name.startswith("modular_")]
    if args is None or not modular:
        return []
    ours = {ch.file: ch.after for ch in changes}
    folders = {str(Path(f).parent) for f in modular}
    generated = [p for d in folders for p in sorted((root / d).glob("modeling_*.py"))]
    snapshot = {p: p.read_text() for p in generated}
    ui.info(f"running {CONVERTER} on {len(modular)} modular file(s)")
    done = proc.run([*args, *modular], cwd=root)
    try:
        if not done.ok:
            raise RopefixError(
                f"Upstream's modular converter failed on the patched modular files, so ropefix cannot show "
                f"that modular and modeling files agree; the patch was rolled back.\n{done.describe()}"
            )
        bad = []
        for p in generated:
            rel = p.relative_to(root).as_posix()
            if p.read_text() != ours.get(rel, snapshot[p]):
                bad.append(rel)
        if bad:
            raise RopefixError(
                f"The modular converter regenerates {', '.join(bad)} differently from the patched file(s); "
                "modular and modeling edits disagree, so the patch was rolled back. Report this with "
                "`ropefix apply --dry-run` output."
            )
    finally:
        for p, text in snapshot.items():  # the converter's output never stays: ours (or the rollback) does
            atomic_write(p, text)
    return modular
