"""Fuzzing what the network hands the kit: the index's JSON and the archive's members.

Whatever a hostile or broken index serves (names, versions, URLs, hashes, sizes; archive members
of any name, type, size or link target; truncated or non-gzip bytes), ``ropefix checkout latest
--source pypi`` either succeeds or fails with a one-paragraph error (exit 1), and nothing is
written outside the cache: the folders around it stay exactly as they were.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from upstream import sdist_bytes

from ropefix.main import main

SEGMENT = st.sampled_from(["a", "b", "src", "..", ".", "", ".git", "a\\..\\b", "C:", "x" * 40])
RELPATH = st.lists(SEGMENT, min_size=1, max_size=4).map("/".join)
NAME = st.one_of(
    RELPATH.map(lambda p: f"transformers-1.0.0/{p}"),  # inside the top folder
    RELPATH,  # no top folder
    RELPATH.map(lambda p: f"/{p}"),  # absolute
)
MEMBER = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["file", "dir", "sym", "hard", "fifo", "chr"]),
        "name": NAME,
        "target": st.one_of(NAME, RELPATH, st.sampled_from(["/etc/passwd", "..", "../../../outside"])),
        "data": st.binary(max_size=32),
        "mode": st.sampled_from([0o644, 0o755, 0o4755, 0o777]),
    }
)
ARCHIVE = st.fixed_dictionaries(
    {
        "extra": st.lists(MEMBER, max_size=4),
        "damage": st.sampled_from(["none", "none", "truncate", "not-gzip", "empty"]),
        "cut": st.floats(min_value=0.05, max_value=0.95),
    }
)
ENTRY = st.fixed_dictionaries(
    {
        "version": st.sampled_from(["1.0.0"] * 5 + ["../1.0.0", "1.0.0/..", "v1.0.0", "1.0.0\n", ".."]),
        "filename": st.sampled_from(
            [
                "transformers-1.0.0.tar.gz",
                "transformers-1.0.0.tar.gz",
                "../../outside/victim.tar.gz",
                "{outside}/victim.tar.gz",
                "sub/transformers-1.0.0.tar.gz",
                "..",
                "",
                "transformers-1.0.0.exe",
                "a\\b.tar.gz",
                ".tar.gz",
                5,
            ]
        ),
        "sha256": st.sampled_from(["right", "right", "wrong", "short", None]),
        "size": st.sampled_from(["right", None, -1, "big", 10**12]),
        "url": st.sampled_from(["relative", "relative", "elsewhere", "http-nowhere", "ftp", None]),
    }
)
DOCUMENT = st.sampled_from(["ok"] * 6 + ["not-json", "releases-list", "entry-str", "top-list"])


def _archive(spec: dict) -> bytes:
    if spec["damage"] == "empty":
        return b""
    buf = io.BytesIO()
    with (
        tarfile.open(fileobj=buf, mode="w") as tar,
        tarfile.open(fileobj=io.BytesIO(_gunzip(sdist_bytes("1.0.0")))) as base,
    ):
        for m in base.getmembers():
            tar.addfile(m, base.extractfile(m))
        for member in spec["extra"]:
            info = tarfile.TarInfo(member["name"])
            info.mode = member["mode"]
            kind = member["kind"]
            if kind == "file":
                info.size = len(member["data"])
                tar.addfile(info, io.BytesIO(member["data"]))
                continue
            info.type = {
                "dir": tarfile.DIRTYPE,
                "sym": tarfile.SYMTYPE,
                "hard": tarfile.LNKTYPE,
                "fifo": tarfile.FIFOTYPE,
                "chr": tarfile.CHRTYPE,
            }[kind]
            info.linkname = member["target"] if kind in ("sym", "hard") else ""
            tar.addfile(info)
    raw = buf.getvalue()
    if spec["damage"] == "not-gzip":
        return raw
    import gzip

    data = gzip.compress(raw, mtime=0)
    if spec["damage"] == "truncate":
        data = data[: int(len(data) * spec["cut"])]
    return data


def _gunzip(data: bytes) -> bytes:
    import gzip

    return gzip.decompress(data)


def _document(entry: dict, data: bytes, doc_kind: str, outside: Path) -> bytes:
    if doc_kind == "not-json":
        return b'{"releases": {"1.0.0": ['
    filename = entry["filename"]
    if isinstance(filename, str):
        filename = filename.replace("{outside}", str(outside))
    digest = hashlib.sha256(data).hexdigest()
    file = {
        "packagetype": "sdist",
        "filename": filename,
        "digests": {"sha256": {"right": digest, "wrong": "0" * 64, "short": "abc", None: None}[entry["sha256"]]},
        "size": len(data) if entry["size"] == "right" else entry["size"],
        "yanked": False,
    }
    url = {
        "relative": "../../packages/transformers-1.0.0.tar.gz",
        "elsewhere": (outside / "served.tar.gz").as_uri(),
        "http-nowhere": "http://127.0.0.1:9/transformers-1.0.0.tar.gz",
        "ftp": "ftp://127.0.0.1:9/transformers-1.0.0.tar.gz",
        None: None,
    }[entry["url"]]
    if url is not None:
        file["url"] = url
    releases: object = {entry["version"]: [file]}
    if doc_kind == "releases-list":
        releases = [file]
    elif doc_kind == "entry-str":
        releases = {entry["version"]: "sdist"}
    doc: object = {"info": {"name": "transformers"}, "releases": releases}
    if doc_kind == "top-list":
        doc = [doc]
    return json.dumps(doc).encode()


def _snapshot(root: Path, skip: Path) -> dict[str, tuple[str, int]]:
    found = {}
    for p in root.rglob("*"):
        if p.is_relative_to(skip):
            continue
        kind = "link" if p.is_symlink() else "dir" if p.is_dir() else "file"
        found[str(p.relative_to(root))] = (kind, 0 if kind == "dir" else p.lstat().st_size)
    return found


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


GOOD_ENTRY = {"version": "1.0.0", "filename": "transformers-1.0.0.tar.gz", "sha256": "right", "size": "right",
              "url": "relative"}  # fmt: skip
GOOD_ARCHIVE = {"extra": [], "damage": "none", "cut": 0.5}


def _checkout_from(entry: dict, archive: dict, doc_kind: str) -> tuple[int, str]:
    """``ropefix checkout latest --source pypi`` against a file:// index serving what was drawn; asserts that
    nothing outside the cache changed and returns (exit code, stderr)."""
    with tempfile.TemporaryDirectory(prefix="ropefix-fuzz-") as tmp:
        sandbox = Path(tmp)
        outside, cache = sandbox / "outside", sandbox / "box" / "cache"
        data = _archive(archive)
        (sandbox / "index" / "pypi" / "transformers").mkdir(parents=True)
        (sandbox / "index" / "packages").mkdir()
        (sandbox / "index" / "packages" / "transformers-1.0.0.tar.gz").write_bytes(data)
        outside.mkdir()
        (outside / "served.tar.gz").write_bytes(data)
        (sandbox / "index" / "pypi" / "transformers" / "json").write_bytes(_document(entry, data, doc_kind, outside))
        cache.mkdir(parents=True)
        before = _snapshot(sandbox, cache)

        err = io.StringIO()
        index_url = (sandbox / "index" / "pypi").as_uri()
        with (
            _environ(ROPEFIX_CACHE=str(cache), ROPEFIX_INDEX_URL=index_url),
            contextlib.redirect_stderr(err),
            contextlib.redirect_stdout(io.StringIO()),
        ):
            rc = main(["checkout", "latest", "--source", "pypi"])
        text = err.getvalue()

        assert _snapshot(sandbox, cache) == before, text
        assert rc in (0, 1), text  # 3 would be a crash: a bug, not a clear refusal
        if rc == 1:
            message = [line for line in text.splitlines() if line.startswith("ropefix: error:")]
            assert message and "Traceback" not in text, text
        for p in cache.rglob("*"):
            if p.is_symlink():  # a link a release carries may point within the cache only
                assert Path(os.path.realpath(p)).is_relative_to(cache.resolve()), (p, os.readlink(p))
        event(f"exit {rc}: " + (text.split("error: ", 1)[-1].replace(tmp, "TMP")[:70] if rc else "checked out"))
        return rc, text


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(entry=ENTRY, doc_kind=DOCUMENT)
def test_the_index_document_cannot_write_outside_the_cache(entry: dict, doc_kind: str) -> None:
    _checkout_from(entry, GOOD_ARCHIVE, doc_kind)


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(archive=ARCHIVE)
def test_archive_members_cannot_write_outside_the_cache(archive: dict) -> None:
    rc, _ = _checkout_from(GOOD_ENTRY, archive, "ok")
    if archive["damage"] == "none" and not archive["extra"]:
        assert rc == 0  # the baseline release itself checks out: the refusals above are about the damage
