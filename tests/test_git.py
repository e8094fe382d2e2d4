from __future__ import annotations

from pathlib import Path

import pytest

from ropefix import git
from ropefix.errors import RopefixError


def _repo(path: Path) -> git.Repo:
    repo = git.init(path)
    (path / "a.py").write_text("x = 1\n")
    repo.commit_paths(["a.py"], "first")
    return repo


def test_commit_paths_commits_only_those_paths(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "r")
    (tmp_path / "r" / "a.py").write_text("x = 2\n")
    (tmp_path / "r" / "b.py").write_text("y = 1\n")
    repo.commit_paths(["a.py"], "change a")
    assert repo.dirty_paths() == ["b.py"]
    assert repo.show("HEAD", "a.py") == b"x = 2\n"


def test_kit_identity_when_user_has_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.gitconfig
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    repo = _repo(tmp_path / "r")
    assert repo.run("log", "-1", "--format=%an <%ae>") == "ropefix <ropefix@localhost>"


def test_leaked_git_dir_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A hook exports GIT_DIR/GIT_INDEX_FILE; our commands must still act on the repo we name.
    other = _repo(tmp_path / "other")
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "other" / ".git"))
    monkeypatch.setenv("GIT_INDEX_FILE", str(tmp_path / "other" / ".git" / "index"))
    repo = _repo(tmp_path / "mine")
    assert repo.run("log", "--format=%s") == "first"
    assert other.run("rev-list", "--count", "HEAD") == "1"
    assert len(repo.run("rev-list", "--all").split()) == 1


def test_branch_tag_and_fresh_branch_name(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "r")
    repo.tag("v1.0.0", message="release")
    repo.create_branch("topic")
    assert repo.current_branch() == "topic"
    assert repo.fresh_branch_name("topic") == "topic-2"
    assert repo.fresh_branch_name("new") == "new"
    assert repo.has_tag("v1.0.0") and not repo.has_tag("v2")


def test_worktree_add_and_remove(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "r")
    repo.tag("v1")
    tree = repo.worktree_add(tmp_path / "wt", "v1", branch="ropefix/v1")
    assert tree.current_branch() == "ropefix/v1"
    assert (tmp_path / "wt" / "a.py").read_text() == "x = 1\n"
    assert (tmp_path / "wt").resolve() in [p.resolve() for p in repo.worktrees()]
    repo.worktree_remove(tmp_path / "wt")
    assert not (tmp_path / "wt").exists()


def test_commit_directory_into_bare_repo_keeps_bytes(tmp_path: Path) -> None:
    bare = git.init(tmp_path / "bare.git", bare=True)
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "crlf.py").write_bytes(b"a = 1\r\nb = 2\r\n")
    (src / ".gitignore").write_text("*.py\n")  # ignore rules must not drop release files
    first = bare.commit_directory(src, "one", branch="releases")
    (src / "pkg" / "crlf.py").unlink()
    (src / "new.txt").write_text("n\n")
    second = bare.commit_directory(src, "two", branch="releases")
    assert bare.show(first, "pkg/crlf.py") == b"a = 1\r\nb = 2\r\n"
    assert bare.run("rev-parse", f"{second}^") == first
    assert bare.run("ls-tree", "-r", "--name-only", second).split() == [".gitignore", "new.txt"]


def test_format_patch_then_am_round_trip(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "r")
    repo.tag("base")
    (tmp_path / "r" / "a.py").write_text("x = 3\n")
    repo.commit_paths(["a.py"], "Make x three")
    patches = repo.format_patch("base..HEAD", tmp_path / "patches")
    assert len(patches) == 1 and patches[0].read_text().count("Subject: [PATCH] Make x three") == 1
    other = repo.worktree_add(tmp_path / "wt", "base", branch="apply")
    other.am(patches)
    assert other.show("HEAD", "a.py") == b"x = 3\n"
    assert other.run("log", "-1", "--format=%s") == "Make x three"


def test_am_conflict_puts_the_repo_back(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "r")
    repo.tag("base")
    (tmp_path / "r" / "a.py").write_text("x = 3\n")
    repo.commit_paths(["a.py"], "three")
    patches = repo.format_patch("base..HEAD", tmp_path / "patches")
    other = repo.worktree_add(tmp_path / "wt", "base", branch="apply")
    (tmp_path / "wt" / "a.py").write_text("x = 4\n")
    other.commit_paths(["a.py"], "four")
    before = other.head()
    with pytest.raises(RopefixError, match="git failed"):
        other.am(patches, three_way=False)
    assert other.head() == before and not other.is_dirty()


def test_not_a_repo(tmp_path: Path) -> None:
    assert not git.is_repo(tmp_path)
    with pytest.raises(RopefixError, match="not the top of a git repository"):
        git.open_repo(tmp_path)


def test_remote_tags_of_missing_remote_is_none(tmp_path: Path) -> None:
    assert git.remote_tags(str(tmp_path / "nowhere")) is None
    repo = _repo(tmp_path / "r")
    repo.tag("v9")
    assert git.remote_tags((tmp_path / "r").as_uri()) == ["v9"]


def test_commit_files_streams_exact_tree(tmp_path: Path) -> None:
    bare = git.init(tmp_path / "bare.git", bare=True)
    odd = 'dir with space/quote"and\nnewline.py'
    files = [("run.sh", 0o100755, b"#!/bin/sh\n"), ("link", 0o120000, b"run.sh"), (odd, 0o100644, b"\x00\xffbin")]
    first = bare.commit_files(files, "one", branch="releases")
    modes = {e.split("\t", 1)[1]: e.split()[0] for e in bare.run("ls-tree", "-r", "-z", first).split("\0") if e}
    assert modes == {"run.sh": "100755", "link": "120000", odd: "100644"}
    assert bare.show(first, "link") == b"run.sh"
    assert bare.show(first, odd) == b"\x00\xffbin"
    second = bare.commit_files([("only.txt", 0o100644, b"x")], "two", branch="releases")
    assert bare.run("ls-tree", "-r", "--name-only", second) == "only.txt"  # exactly the files given
    assert bare.run("rev-parse", f"{second}^") == first


def test_commit_files_interrupted_leaves_branch_alone(tmp_path: Path) -> None:
    bare = git.init(tmp_path / "bare.git", bare=True)
    first = bare.commit_files([("a", 0o100644, b"a")], "one", branch="releases")

    def broken():  # a source that fails half way, like a refused or truncated archive
        yield ("b", 0o100644, b"b")
        raise RopefixError("archive refused")

    with pytest.raises(RopefixError, match="archive refused"):
        bare.commit_files(broken(), "two", branch="releases")
    assert bare.rev_parse("refs/heads/releases") == first


def test_unsaved_paths_skip_bytecode_whether_ignored_or_untracked(tmp_path: Path) -> None:
    # a tree imported from an sdist has no .gitignore: importing it leaves __pycache__/ untracked, not ignored
    repo = _repo(tmp_path / "r")
    (tmp_path / "r" / "pkg" / "__pycache__").mkdir(parents=True)
    (tmp_path / "r" / "pkg" / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"\0")
    assert repo.unsaved_paths() == []
    (tmp_path / "r" / "notes.txt").write_text("mine\n")
    assert repo.unsaved_paths() == ["notes.txt"]
