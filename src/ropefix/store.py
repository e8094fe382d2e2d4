"""The kit's one cache: keyed entries, a file lock, atomic writes, nothing half-made survives a crash.

Layout under the root (``$ROPEFIX_CACHE`` or the platformdirs user cache)::

    downloads/   verified release archives, named by file name
    repos/       git repositories (mirrors of remotes, the local sdist history repo)
    worktrees/   work trees handed out by ``ropefix checkout`` when no --into is given
    results/     anything later steps want to keep between runs

Every writer takes ``store.lock()``; new files are written through ``ropefix.files`` (beside their
final name, then ``os.replace``); new directories are built under ``tmp/`` and renamed. Names
below a section are plain file names the kit checked (``path`` refuses separators and ``..``), so
nothing a package index says can place a file outside the cache. A crash can leave *orphans*:
``.NAME.*.part`` files and folders under ``tmp/``; ``orphans()`` finds them for ``cache list``,
``cache prune`` and ``cache clear``. The cache reaches several GB (release archives, the release
history, a work tree per release, an interpreter per release).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ropefix import files
from ropefix.errors import RopefixError

if TYPE_CHECKING:  # filelock and platformdirs come with the kit's extras; the lean core imports this module too
    import filelock

ENV_VAR = "ROPEFIX_CACHE"
SECTIONS = ("downloads", "repos", "worktrees", "results")
# A .part file or tmp/ folder untouched this long belongs to no running ropefix: a live download
# or clone writes every few seconds.
ORPHAN_AGE_S = 3600


def default_root() -> Path:
    override = os.environ.get(ENV_VAR)
    if override:
        return Path(override).expanduser().resolve()
    import platformdirs

    return Path(platformdirs.user_cache_dir("ropefix"))


@dataclass(frozen=True)
class Entry:
    section: str
    name: str
    path: Path
    size: int


@dataclass(frozen=True)
class Orphan:
    """What a crashed or killed run left: a ``.part`` file or a folder under ``tmp/``."""

    path: Path
    size: int
    age_s: float  # since its newest file changed

    @property
    def stale(self) -> bool:
        return self.age_s >= ORPHAN_AGE_S


class Memo:
    """Answers worth keeping between runs (JSON values by string key) in one file under ``results/``: read on
    first use, written whole under the store's lock by ``save()``. A ``Store`` owns its memos: ``store.memo(name)``
    gives every ``Store`` of one cache folder the same object in a process, so a memo is loaded once."""

    def __init__(self, store: Store, name: str) -> None:
        self.path = store.path("results", f"{name}.json")
        self._store, self._name = store, name
        self._data: dict[str, Any] | None = None
        self.new = 0  # answers added since the last save

    def _loaded(self) -> dict[str, Any]:
        if self._data is None:
            try:
                data = json.loads(self.path.read_text()) if self.path.exists() else {}
            except (OSError, ValueError):
                data = {}  # a cache: unreadable means empty (the next save replaces it)
            self._data = data if isinstance(data, dict) else {}
        return self._data

    def get(self, key: str) -> Any:
        return self._loaded().get(key)

    def __contains__(self, key: str) -> bool:
        return key in self._loaded()

    def __setitem__(self, key: str, value: Any) -> None:
        self._loaded()[key] = value
        self.new += 1

    def save(self) -> None:
        if not self.new:
            return
        with self._store.lock(self._name):
            files.atomic_write(self.path, json.dumps(self._loaded()))
        self.new = 0


_MEMOS: dict[tuple[Path, str], Memo] = {}


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
        try:
            files.check_writable(self.root / "tmp")
        except OSError as e:
            raise RopefixError(
                f"The ropefix cache at {self.root} cannot be written ({e.strerror}). Point {ENV_VAR} at a "
                "folder you can write to (e.g. `export ROPEFIX_CACHE=~/ropefix-cache`), or fix its permissions."
            ) from e

    def path(self, section: str, *parts: str) -> Path:
        """``root/section/parts...``; each part must be a plain name (the last line of defence against a
        name from the network carrying ``..``, a separator or an absolute path)."""
        if section not in SECTIONS:
            raise ValueError(f"unknown cache section {section!r}")
        for part in parts:
            if not plain_name(part):
                raise RopefixError(
                    f"Refusing to use {part!r} as a name in the ropefix cache: it is not a plain file name "
                    "(separators, '..', or an absolute path). Nothing was written. If it came from a package "
                    "index, that index is broken or hostile; report it, or set ROPEFIX_INDEX_URL to another."
                )
        return self.root.joinpath(section, *parts)

    def memo(self, name: str) -> Memo:
        """This cache's memo ``name`` (a plain file name), one object per process."""
        key = (self.root, name)
        if key not in _MEMOS:
            _MEMOS[key] = Memo(self, name)
        return _MEMOS[key]

    @contextlib.contextmanager
    def lock(self, name: str = "store", timeout: float = 600) -> Iterator[None]:
        """An inter-process lock; concurrent ropefix runs serialise on it."""
        import filelock

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
        """``files.atomic_open`` for callers that stream (``mode`` "w" gives a UTF-8 text handle)."""
        with files.atomic_open(dest) as fh:
            if "b" in mode:
                yield fh
            else:
                text = io.TextIOWrapper(fh, encoding="utf-8", newline="")
                yield text
                text.flush()
                text.detach()

    @contextlib.contextmanager
    def atomic_dir(self, dest: Path) -> Iterator[Path]:
        """Build a directory under tmp/; it is renamed to ``dest`` only if the block succeeds."""
        with files.atomic_dir(dest, self.root / "tmp") as tmp:
            yield tmp

    def entries(self) -> list[Entry]:
        found = []
        for section in SECTIONS:
            base = self.root / section
            for child in sorted(base.iterdir()):
                if child.name.startswith("."):
                    continue
                found.append(Entry(section, child.name, child, _size(child)))
        return found

    def orphans(self) -> list[Orphan]:
        """``.part`` files (downloads/, results/ and the folders one level down) and everything under tmp/."""
        candidates = []
        for section in ("downloads", "results"):
            base = self.root / section
            candidates += sorted([*base.glob(f".*{files.PART_SUFFIX}"), *base.glob(f"*/.*{files.PART_SUFFIX}")])
        candidates += sorted((self.root / "tmp").iterdir())
        found = []
        for path in candidates:
            try:
                found.append(_orphan(path))
            except FileNotFoundError:
                continue  # a running ropefix finished with it while we looked
        return found

    def remove_orphans(self, section: str | None = None) -> list[Orphan]:
        """Remove what crashed runs left (in ``section``, or anywhere) that no running ropefix can still be writing."""
        with self.lock():
            where = self.root / section if section else self.root
            gone = [o for o in self.orphans() if o.stale and o.path.is_relative_to(where)]
            for o in gone:
                _remove(o.path)
            return gone

    def clear(self, section: str | None = None) -> list[Entry]:
        """Remove every entry (or one section's) and the stale orphans there; returns the entries.

        Callers that must not lose work ask ``ropefix.housekeeping.at_risk`` first (``ropefix cache clear`` does).
        """
        with self.lock():
            removed = [e for e in self.entries() if section in (None, e.section)]
            for e in removed:
                _remove(e.path)
            self.remove_orphans(section)
            return removed


def plain_name(name: str) -> bool:
    """A single path component: no separators (either kind), not empty, ``.`` or ``..``, no NUL."""
    return bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\0")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _orphan(path: Path) -> Orphan:
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for p in path.rglob("*"):
            newest = max(newest, p.lstat().st_mtime)
    return Orphan(path, _size(path), max(0.0, time.time() - newest))


# One FileLock object per lock file in this process: FileLock counts re-entries on the same
# object, so a function holding the lock can call another that takes it (a second object on
# the same file would wait for itself forever).
_LOCKS: dict[str, filelock.FileLock] = {}


def _file_lock(path: Path) -> filelock.FileLock:
    import filelock

    key = str(path)
    if key not in _LOCKS:
        _LOCKS[key] = filelock.FileLock(key)
    return _LOCKS[key]


def _size(path: Path) -> int:
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if not p.is_dir() or p.is_symlink())
