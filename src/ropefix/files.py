"""The kit's one way to write a file: whole or not at all, with the destination's mode kept.

Every writer in ropefix (cache entries, patched sources, installed files, reports, PR outputs)
goes through here. A new file is written beside its destination under a hidden ``.NAME.*.part``
name, flushed and fsynced, given the destination's mode (or the umask's default for a new file:
``mkstemp`` alone would leave 0o600), and moved into place with ``os.replace``, which is atomic
on one file system: a reader or a crash sees the old file or the new one, never half of either.
On any failure the temporary file is removed and the destination is untouched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

PART_SUFFIX = ".part"


def _umask() -> int:
    # The only portable way to read the umask is to set it; done once, before any thread starts.
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def _to_bytes(data: bytes | str) -> bytes:
    # Text is encoded as is: no newline translation, so "\r\n" in a source file stays "\r\n".
    return data.encode("utf-8") if isinstance(data, str) else data


def _mode_for(dest: Path) -> int:
    try:
        return dest.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~_UMASK


def _stage(dest: Path) -> tuple[int, Path]:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=PART_SUFFIX)
    return fd, Path(tmp)


def _finish(fh: IO[bytes], tmp: Path, dest: Path) -> None:
    fh.flush()
    os.fsync(fh.fileno())
    os.chmod(tmp, _mode_for(dest))


def _sync_folder(folder: Path) -> None:
    # Makes the rename itself durable; some file systems cannot open a folder, which costs nothing.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_open(dest: Path) -> Iterator[IO[bytes]]:
    """A binary file handle whose bytes replace ``dest`` only if the block finishes (streamed writes)."""
    dest = Path(dest)
    fd, tmp = _stage(dest)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            _finish(fh, tmp, dest)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _sync_folder(dest.parent)


def atomic_write(dest: Path, data: bytes | str) -> Path:
    """Replace ``dest`` with ``data`` (bytes, or str written as UTF-8) in one step; returns ``dest``."""
    with atomic_open(dest) as fh:
        fh.write(_to_bytes(data))
    return Path(dest)


def atomic_write_many(items: Iterable[tuple[Path, bytes | str]]) -> list[Path]:
    """Write several files together: every temporary file is complete before the first replace.

    A failure while writing (disk full, a folder that cannot exist) leaves every destination as
    it was; the replaces that follow are renames, which do not fail for want of space.
    """
    staged: list[tuple[Path, Path]] = []
    try:
        for dest, data in items:
            dest = Path(dest)
            fd, tmp = _stage(dest)
            staged.append((tmp, dest))
            with os.fdopen(fd, "wb") as fh:
                fh.write(_to_bytes(data))
                _finish(fh, tmp, dest)
        for tmp, dest in staged:
            os.replace(tmp, dest)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
    for folder in {dest.parent for _, dest in staged}:
        _sync_folder(folder)
    return [dest for _, dest in staged]


@contextlib.contextmanager
def atomic_dir(dest: Path, scratch: Path) -> Iterator[Path]:
    """Build a folder under ``scratch`` (same file system as ``dest``); it becomes ``dest`` only if the block
    finishes, and is removed otherwise."""
    scratch.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=scratch, prefix=dest.name + "."))
    try:
        yield tmp
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_writable(folder: Path) -> None:
    """Raise OSError unless a file can be created in ``folder``: ``os.access`` says yes to root on an immutable
    folder or a read-only mount, so this creates (and removes) a real file."""
    fd, probe = tempfile.mkstemp(dir=folder, prefix=".ropefix-probe.")
    os.close(fd)
    os.unlink(probe)
