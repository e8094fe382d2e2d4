from __future__ import annotations

import io
import os
import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from upstream import make_sdist

from ropefix.errors import RopefixError
from ropefix.releases.archive import extract, files


def _tar(path: Path, members: list[tarfile.TarInfo]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for m in members:
            data = b"payload" if m.isfile() else b""
            m.size = len(data)
            tar.addfile(m, io.BytesIO(data) if data else None)
    return path


def _file(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def test_good_sdist_unpacks_into_its_top_folder(tmp_path: Path) -> None:
    sdist = make_sdist(tmp_path, "1.2.3")
    top = extract(sdist, tmp_path / "out")
    assert top == tmp_path / "out" / "transformers-1.2.3"
    assert (top / "src" / "transformers" / "models" / "qwen2_vl" / "modeling_qwen2_vl.py").is_file()


@pytest.mark.parametrize(
    "member, why",
    [
        (_file("pkg/../../escape.txt"), "outside the target"),
        (_file("/etc/ropefix-absolute"), "absolute path"),
        (_link("pkg/passwd", "../../etc/passwd"), "symlink out of the target"),
        (_link("pkg/abs", "/etc/passwd"), "symlink out of the target"),
        (_link("pkg/hard", "../outside", tarfile.LNKTYPE), "hard link out of the target"),
    ],
    ids=["dotdot", "absolute", "symlink-relative", "symlink-absolute", "hardlink"],
)
def test_escaping_member_is_refused_and_nothing_written(tmp_path: Path, member: tarfile.TarInfo, why: str) -> None:
    bad = _tar(tmp_path / "bad.tar.gz", [_file("pkg/ok.txt"), member])
    dest = tmp_path / "deep" / "out"
    with pytest.raises(RopefixError) as e:
        extract(bad, dest)
    assert why in str(e.value) and member.name in str(e.value)
    # Refused before anything was written: not even the harmless member.
    assert not dest.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tar.gz"]


def test_symlink_inside_the_tree_is_allowed(tmp_path: Path) -> None:
    good = _tar(tmp_path / "good.tar.gz", [_file("pkg/a.txt"), _link("pkg/sub/b.txt", "../a.txt")])
    top = extract(good, tmp_path / "out")
    assert (top / "sub" / "b.txt").read_bytes() == b"payload"


def test_device_file_refused(tmp_path: Path) -> None:
    fifo = tarfile.TarInfo("pkg/fifo")
    fifo.type = tarfile.FIFOTYPE
    bad = _tar(tmp_path / "bad.tar.gz", [fifo])
    with pytest.raises(RopefixError, match="special file"):
        extract(bad, tmp_path / "out")


def test_not_an_archive(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tarball")
    with pytest.raises(RopefixError, match="could not be unpacked"):
        extract(junk, tmp_path / "out")


def test_files_streams_members_below_the_top_folder(tmp_path: Path) -> None:
    sdist = make_sdist(tmp_path, "1.2.3")
    got = {path: (mode, data) for path, mode, data in files(sdist)}
    assert got["src/transformers/__init__.py"] == (0o100644, b'__version__ = "1.2.3"\n')
    assert "transformers-1.2.3" not in "".join(got)


def test_files_refuses_escaping_archive_before_yielding(tmp_path: Path) -> None:
    bad = _tar(tmp_path / "bad.tar.gz", [_file("pkg/ok.txt"), _link("pkg/passwd", "../../etc/passwd")])
    stream = files(bad)
    with pytest.raises(RopefixError, match="symlink out of the target"):
        next(stream)


segment = st.sampled_from(["a", "b", "..", "."])
relpath = st.lists(segment, min_size=1, max_size=4).map("/".join)
member = st.one_of(
    st.builds(lambda p, absolute: ("file", ("/" if absolute else "") + "top/" + p, ""), relpath, st.booleans()),
    st.builds(lambda p, t: ("sym", "top/" + p, t), relpath, st.one_of(relpath, relpath.map(lambda t: "/" + t))),
    st.builds(lambda p, t: ("hard", "top/" + p, "top/" + t), relpath, relpath),
)


@given(st.lists(member, min_size=1, max_size=5))
def test_extraction_never_writes_outside_the_target(members: list[tuple[str, str, str]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        infos = [
            _file(name)
            if kind == "file"
            else _link(name, target, tarfile.SYMTYPE if kind == "sym" else tarfile.LNKTYPE)
            for kind, name, target in members
        ]
        archive_path = _tar(root / "x.tar.gz", infos)
        dest = root / "box" / "out"
        try:
            extract(archive_path, dest)
        except RopefixError:
            # Refused by our checks before anything was written: tarfile's data filter (which
            # refuses only once it meets the bad member) never had to step in.
            assert not dest.exists()
        for path in root.rglob("*"):
            assert path == archive_path or path.is_relative_to(root / "box"), path
            if path.is_symlink():
                assert Path(os.path.realpath(path)).is_relative_to(dest.resolve()), (path, os.readlink(path))


def test_git_metadata_in_an_archive_is_refused(tmp_path: Path) -> None:
    bad = _tar(tmp_path / "bad.tar.gz", [_file("pkg/ok.txt"), _file("pkg/.git/hooks/post-checkout")])
    with pytest.raises(RopefixError, match=r"'pkg/\.git/hooks/post-checkout' is inside a '\.git' folder"):
        next(files(bad))
