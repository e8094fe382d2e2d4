"""The one way ropefix writes a file: whole or not at all (temp file beside it, fsync, os.replace)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def atomic_write(dest: Path, data: bytes | str) -> None:
    """Write ``data`` to ``dest``: a reader sees the old file or the new one, never a part; the mode is kept."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        if dest.exists():
            os.chmod(tmp, dest.stat().st_mode & 0o7777)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
