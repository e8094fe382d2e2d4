"""The kit's one cache: keyed entries, a file lock, atomic writes, nothing half-made survives a crash.

Layout under the root (``$ROPEFIX_CACHE`` or the platformdirs user cache)::

    downloads/   verified release archives, named by file name
    repos/       git repositories (mirrors of remotes, the local sdist history repo)
    worktrees/   work trees handed out by ``ropefix checkout`` when no --into is given
    results/     anything later steps want to keep between runs

Every writer takes ``store.lock()``; new files are written next to their final name and
moved into place with ``os.replace``; new directories are built under ``tmp/`` and renamed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import filelock
import platformdirs

from ropefix.errors import RopefixError

ENV_VAR = "ROPEFIX_CACHE"
SECTIONS = ("downloads", "repos", "worktrees", "results")


def default_root() -> Path:
    override = os.environ.get(ENV_VAR)
    if override:
        return Path(override).expanduser().resolve()
    return Path(platformdirs.user_cache_dir("ropefix"))


@dataclass(frozen=True)
class Entry:
    section: str
    name: str
    path: Path
    size: int


class Store:
    def __init__(self, root: Path | None = None) -> None:
        self.root = (root or default_root()).resolve()
        try:
            for section in (*SECTIONS, "tmp"):
                (self.root / section).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RopefixError(
                f"The ropefix cache at {self.root} cannot be created ({e.strerror}). "
                f"Point {ENV_VAR} at a writable folder and retry."
            ) from e

    def path(self, section: str, *parts: str) -> Path:
        if section not in SECTIONS:
            raise ValueError(f"unknown cache section {section!r}")
        return self.root.joinpath(section, *parts)

    @contextlib.contextmanager
    def lock(self, name: str = "store", timeout: float = 600) -> Iterator[None]:
        """An inter-process lock; concurrent ropefix runs serialise on it."""
        lock = _file_lock(self.root / f".{name}.lock")
        try:
            with lock.acquire(timeout=timeout):
                yield
        except filelock.Timeout as e:
            raise RopefixError(
                f"Another ropefix run has held the cache lock {lock.lock_file} for {timeout:.0f}s. "
                "Wait for it to finish, or remove the lock file if no ropefix process is running."
            ) from e

    @contextlib.contextmanager
    def atomic_file(self, dest: Path, mode: str = "wb") -> Iterator[IO]:
        """Write to a temporary file beside ``dest``; it replaces ``dest`` only if the block succeeds."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        try:
            with os.fdopen(fd, mode) as fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    @contextlib.contextmanager
    def atomic_dir(self, dest: Path) -> Iterator[Path]:
        """Build a directory under tmp/; it is renamed to ``dest`` only if the block succeeds."""
        tmp = Path(tempfile.mkdtemp(dir=self.root / "tmp", prefix=dest.name + "."))
        try:
            yield tmp
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def entries(self) -> list[Entry]:
        found = []
        for section in SECTIONS:
            base = self.root / section
            for child in sorted(base.iterdir()):
                if child.name.startswith("."):
                    continue
                found.append(Entry(section, child.name, child, _size(child)))
        return found

    def clear(self, section: str | None = None) -> list[Entry]:
        """Remove every entry (or one section's); returns what was removed."""
        with self.lock():
            removed = [e for e in self.entries() if section in (None, e.section)]
            for e in removed:
                if e.path.is_dir() and not e.path.is_symlink():
                    shutil.rmtree(e.path)
                else:
                    e.path.unlink()
            return removed


# One FileLock object per lock file in this process: FileLock counts re-entries on the same
# object, so a function holding the lock can call another that takes it (a second object on
# the same file would wait for itself forever).
_LOCKS: dict[str, filelock.FileLock] = {}


def _file_lock(path: Path) -> filelock.FileLock:
    key = str(path)
    if key not in _LOCKS:
        _LOCKS[key] = filelock.FileLock(key)
    return _LOCKS[key]


def _size(path: Path) -> int:
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if not p.is_dir() or p.is_symlink())
