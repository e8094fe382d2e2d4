"""Unpack release archives safely: no member may land outside the target or link out of it."""

from __future__ import annotations

import posixpath
import tarfile
from collections.abc import Iterator
from pathlib import Path

from ropefix.errors import RopefixError


def check_members(archive: Path, members: list[tarfile.TarInfo]) -> None:
    """Reject the whole archive if any member escapes, links out, or is not a plain file or folder.

    tarfile's ``data`` filter would refuse these too; checking first lets the message name the
    member and guarantees nothing is written before the refusal.
    """
    for m in members:
        problem = _problem(m)
        if problem:
            raise RopefixError(
                f"Refusing to unpack {archive.name}: member {m.name!r} {problem}. A release archive never "
                "needs that; the file may be corrupt or tampered with. Delete it (`ropefix cache clear "
                "--section downloads`) and retry, or report it to the index."
            )


def _problem(m: tarfile.TarInfo) -> str | None:
    name = m.name
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "has an absolute path"
    if _escapes(name):
        return "points outside the target folder (via '..')"
    if m.issym():
        # A symlink's target is relative to the link's own folder.
        if m.linkname.startswith("/") or _escapes(posixpath.join(posixpath.dirname(name), m.linkname)):
            return f"is a symlink out of the target folder (to {m.linkname!r})"
    elif m.islnk():
        if m.linkname.startswith("/") or _escapes(m.linkname):
            return f"is a hard link out of the target folder (to {m.linkname!r})"
    elif not (m.isfile() or m.isdir()):
        return "is a device, fifo or other special file"
    return None


def _escapes(relpath: str) -> bool:
    norm = posixpath.normpath(relpath)
    return norm == ".." or norm.startswith("../")


def extract(archive: Path, dest: Path) -> Path:
    """Unpack ``archive`` into the (new or empty) folder ``dest``; returns its single top folder.

    sdists hold one folder (``transformers-X.Y.Z/``); that folder is what is returned.
    """
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            check_members(archive, members)
            dest.mkdir(parents=True, exist_ok=True)
            # Defence in depth: the data filter also strips modes and owners we never want.
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, EOFError, OSError) as e:
        raise RopefixError(
            f"{archive} could not be unpacked ({type(e).__name__}: {e}). Delete it (`ropefix cache clear "
            "--section downloads`) and retry."
        ) from e
    tops = {m.name.split("/", 1)[0] for m in members if m.name not in ("", ".")}
    if len(tops) == 1:
        top = dest / tops.pop()
        if top.is_dir():
            return top
    return dest


def files(archive: Path) -> Iterator[tuple[str, int, bytes]]:
    """Every file of ``archive`` as (path below its single top folder, git mode, bytes), in order.

    The same checks as ``extract`` run first (a refused archive yields nothing); symlinks come
    as mode 0o120000 with their target as bytes; hard links as copies of what they point at.
    Nothing touches the disk, so a release can be streamed straight into git.
    """
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            check_members(archive, members)
            tops = {posixpath.normpath(m.name).split("/", 1)[0] for m in members}
            strip = len(tops) == 1 and any("/" in posixpath.normpath(m.name) for m in members)
            for m in members:
                name = posixpath.normpath(m.name)
                if strip:
                    if "/" not in name:
                        continue  # the top folder itself
                    name = name.split("/", 1)[1]
                if m.issym():
                    yield name, 0o120000, m.linkname.encode()
                elif m.isfile() or m.islnk():
                    fh = tar.extractfile(m)
                    data = fh.read() if fh else b""
                    yield name, 0o100755 if m.mode & 0o100 else 0o100644, data
    except (tarfile.TarError, EOFError, OSError) as e:
        raise RopefixError(
            f"{archive} could not be read ({type(e).__name__}: {e}). Delete it (`ropefix cache clear "
            "--section downloads`) and retry."
        ) from e
