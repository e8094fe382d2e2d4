"""Unpack release archives safely: no member may land outside the target or link out of it."""

from __future__ import annotations

import posixpath
import tarfile
from collections.abc import Iterator
from pathlib import Path

from ropefix.errors import RopefixError


def check_members(archive: Path, members: list[tarfile.TarInfo]) -> None:
    """Reject the whole archive if any member escapes, links out, or is not a plain file or folder.

    tarfile's ``data`` filter refuses most of these too, but only while extracting (after earlier
    members are written) and some odd archives crash it; checking every member first names the
    culprit and guarantees nothing is written before a refusal. The rules are stricter than
    needed for safety, and no release archive breaks them: names are plain relative paths
    (no ``.``, ``..``, empty or ``.git`` parts), nothing sits below a file or link, a link's target never passes
    through another link, and a hard link points at a file stored earlier.
    """
    links = {_clean(m.name) for m in members if m.issym() or m.islnk()}
    not_folders = links | {_clean(m.name) for m in members if not m.isdir()}
    files: set[str] = set()
    for m in members:
        problem = _problem(m) or _link_problem(m, links, not_folders, files)
        if m.isfile():
            files.add(_clean(m.name))
        if problem:
            raise RopefixError(
                f"Refusing to unpack {archive.name}: member {m.name!r} {problem}. A release archive never "
                "needs that; the file may be corrupt or tampered with. Delete it (`ropefix cache clear "
                "--section downloads`) and retry, or report it to the index."
            )


def _clean(name: str) -> str:
    return name.removeprefix("./").rstrip("/")


def _problem(m: tarfile.TarInfo) -> str | None:
    name = m.name
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "has an absolute path"
    if _escapes(name):
        return "points outside the target folder (via '..')"
    if any(part in ("", ".", "..") for part in _clean(name).split("/")):
        return "is not a plain relative path (it has '.', '..' or empty parts)"
    if any(part.lower() == ".git" for part in _clean(name).split("/")):
        return "is inside a '.git' folder (git metadata, which a release never ships and git must not read)"
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


def _link_problem(m: tarfile.TarInfo, links: set[str], not_folders: set[str], files: set[str]) -> str | None:
    parts = _clean(m.name).split("/")
    for i in range(1, len(parts)):
        if "/".join(parts[:i]) in not_folders:
            return f"sits below {'/'.join(parts[:i])!r}, which is a file or link, not a folder"
    if m.islnk() and _clean(posixpath.normpath(m.linkname)) not in files:
        return f"is a hard link to {m.linkname!r}, which is not a file stored earlier in the archive"
    if m.issym():
        # Walk the target one part at a time: no step may land on another link (a chain of links
        # can leave the folder even when the target looks inside on paper).
        here = parts[:-1]
        for part in m.linkname.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                here = here[:-1]
                continue
            here = [*here, part]
            if "/".join(here) in links:
                return f"is a symlink through another link ({'/'.join(here)!r})"
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
