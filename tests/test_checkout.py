from __future__ import annotations

import multiprocessing
import os
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from upstream import FakeIndex, make_sdist, sdist_bytes, upstream_repo

from ropefix import git
from ropefix.errors import RopefixError
from ropefix.main import main
from ropefix.releases import index, sources
from ropefix.store import Store

MODEL = "src/transformers/models/qwen2_vl/modeling_qwen2_vl.py"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeIndex]:
    server = FakeIndex({"1.0.0": sdist_bytes("1.0.0"), "1.1.0": sdist_bytes("1.1.0")})
    monkeypatch.setenv(index.ENV_VAR, server.url)
    yield server
    server.stop()


@pytest.fixture
def local_upstream(tmp_path: Path) -> Path:
    """A small bare upstream repo with tags v1.0.0 and v1.1.0 (synthetic releases)."""
    repo = git.init(tmp_path / "upstream.git", bare=True)
    for version in ("1.0.0", "1.1.0"):
        folder = tmp_path / f"release-{version}"
        with tarfile.open(make_sdist(tmp_path, version)) as tar:
            tar.extractall(folder, filter="data")
        repo.tag(f"v{version}", repo.commit_directory(folder / f"transformers-{version}", version, branch="main"))
    return tmp_path / "upstream.git"


# -- pypi source ------------------------------------------------------------------------------------


def test_pypi_checkout_on_a_fresh_branch(fake: FakeIndex) -> None:
    done = sources.checkout("1.0.0", source="pypi")
    assert (done.source_used, done.tag, done.branch) == ("pypi", "v1.0.0", "ropefix/v1.0.0")
    tree = git.Repo(done.path)
    assert tree.current_branch() == "ropefix/v1.0.0" and not tree.is_dirty()
    assert (done.path / "src/transformers/__init__.py").read_text() == '__version__ = "1.0.0"\n'


def test_releases_share_one_tagged_history(fake: FakeIndex, tmp_path: Path) -> None:
    a = sources.checkout("1.0.0", source="pypi", into=tmp_path / "a")
    b = sources.checkout("1.1.0", source="pypi", into=tmp_path / "b")
    history = git.Repo(Store().path("repos", sources.HISTORY_REPO))
    assert {"v1.0.0", "v1.1.0"} <= set(history.tags())
    assert '-__version__ = "1.0.0"' in history.diff(a.tag, b.tag)


def test_second_checkout_reuses_the_release_without_the_index(fake: FakeIndex) -> None:
    first = sources.checkout("1.0.0", source="pypi")
    fake.stop()
    second = sources.checkout("1.0.0", source="pypi")
    assert second.path == first.path and second.branch == "ropefix/v1.0.0-2"
    assert "its branch ropefix/v1.0.0 is kept" in second.note


def test_dirty_target_is_refused_and_untouched(fake: FakeIndex, tmp_path: Path) -> None:
    done = sources.checkout("1.0.0", source="pypi", into=tmp_path / "wt")
    (done.path / MODEL).write_text("my edit\n")
    (done.path / "notes.txt").write_text("untracked work\n")
    with pytest.raises(RopefixError) as e:
        sources.checkout("1.1.0", source="pypi", into=tmp_path / "wt")
    assert "uncommitted changes" in str(e.value) and "--force" in str(e.value)
    assert (done.path / MODEL).read_text() == "my edit\n"
    assert (done.path / "notes.txt").read_text() == "untracked work\n"
    assert git.Repo(done.path).current_branch() == "ropefix/v1.0.0"


def test_force_replaces_a_dirty_target_and_loses_nothing(fake: FakeIndex, tmp_path: Path) -> None:
    old = sources.checkout("1.0.0", source="pypi", into=tmp_path / "wt")
    (old.path / MODEL).write_text("my edit\n")
    (old.path / "notes.txt").write_text("untracked work\n")
    (old.path / "drafts").mkdir()  # an untracked folder of several files is work to commit, not ignored files
    for name in ("a.md", "b.md", "c.md"):
        (old.path / "drafts" / name).write_text(f"{name}\n")
    new = sources.checkout("1.1.0", source="pypi", into=tmp_path / "wt", force=True)
    assert (new.path / "src/transformers/__init__.py").read_text() == '__version__ = "1.1.0"\n'
    assert "saved as commit" in new.note and old.branch in new.note
    history = git.Repo(Store().path("repos", sources.HISTORY_REPO))
    assert history.show(old.branch, MODEL) == b"my edit\n"
    assert history.show(old.branch, "notes.txt") == b"untracked work\n"
    assert history.show(old.branch, "drafts/c.md") == b"c.md\n"
    assert not [p for p in tmp_path.iterdir() if ".ropefix-moved-" in p.name]  # committed, not moved aside


def test_folder_that_is_no_work_tree_refused_then_moved_aside(fake: FakeIndex, tmp_path: Path) -> None:
    target = tmp_path / "stuff"
    target.mkdir()
    (target / "mine.txt").write_text("keep me\n")
    with pytest.raises(RopefixError, match="is not a git work tree"):
        sources.checkout("1.0.0", source="pypi", into=target)
    done = sources.checkout("1.0.0", source="pypi", into=target, force=True)
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("stuff.ropefix-moved-")]
    assert len(aside) == 1 and (aside[0] / "mine.txt").read_text() == "keep me\n"
    assert (done.path / MODEL).is_file()


def test_release_tree_is_made_once_and_refused_when_modified(fake: FakeIndex) -> None:
    root = sources.release_tree("1.1.0")
    assert (root / MODEL).is_file()
    fake.stop()  # reuse needs no index
    assert sources.release_tree("1.1.0") == root
    # importing the tree writes bytecode next to it: that is no change to the release
    cache = (root / MODEL).parent / "__pycache__"
    cache.mkdir()
    (cache / "modeling_qwen2_vl.cpython-311.pyc").write_bytes(b"\0")
    assert sources.release_tree("1.1.0") == root
    (root / MODEL).write_text("changed\n")
    with pytest.raises(RopefixError, match="read-only"):
        sources.release_tree("1.1.0")


# -- git source -------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["path", "file-url"])
def test_git_checkout_of_both_tags(local_upstream: Path, tmp_path: Path, how: str) -> None:
    repo = str(local_upstream) if how == "path" else local_upstream.as_uri()
    for version in ("1.0.0", "1.1.0"):
        done = sources.checkout(version, source="git", repo=repo, into=tmp_path / version)
        assert (done.source_used, done.branch) == ("git", f"ropefix/v{version}")
        assert (done.path / "src/transformers/__init__.py").read_text() == f'__version__ = "{version}"\n'
    assert sources.resolve("1.0-latest", "git", repo=repo) == ["1.0.0", "1.1.0"]


def test_git_unknown_tag_names_nearest(local_upstream: Path, tmp_path: Path) -> None:
    with pytest.raises(RopefixError, match=r"no tag v1\.0\.7.*1\.0\.0, 1\.1\.0"):
        sources.checkout("1.0.7", source="git", repo=str(local_upstream), into=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_auto_uses_git_when_the_remote_answers(local_upstream: Path) -> None:
    done = sources.checkout("1.1.0", source="auto", repo=local_upstream.as_uri())
    assert done.source_used == "git" and "answered" in done.note


def test_auto_falls_back_to_pypi_and_says_so(fake: FakeIndex, tmp_path: Path) -> None:
    done = sources.checkout("1.0.0", source="auto", repo=str(tmp_path / "no-such-remote"))
    assert done.source_used == "pypi" and "did not answer" in done.note


def test_unreachable_remote_uses_the_cached_clone(local_upstream: Path, tmp_path: Path) -> None:
    url = local_upstream.as_uri()
    sources.checkout("1.0.0", source="git", repo=url, into=tmp_path / "a")
    shutil.rmtree(local_upstream)
    done = sources.checkout("1.1.0", source="auto", repo=url, into=tmp_path / "b")
    assert done.source_used == "git" and "cached clone" in done.note
    done = sources.checkout("1.1.0", source="git", repo=url, into=tmp_path / "c")
    assert (done.path / MODEL).is_file()


def test_unreachable_remote_without_cache_says_what_failed(tmp_path: Path) -> None:
    with pytest.raises(RopefixError, match="Could not clone .*--source pypi"):
        sources.checkout("1.0.0", source="git", repo=str(tmp_path / "nowhere"))


# -- the commands -----------------------------------------------------------------------------------


def test_cli_checkout_range_into_folder(fake: FakeIndex, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["checkout", "1.0-1.1", "--source", "pypi", "--into", str(tmp_path / "trees")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[:3] for line in lines] == [["1.0.0", "pypi", "v1.0.0"], ["1.1.0", "pypi", "v1.1.0"]]
    assert (tmp_path / "trees" / "transformers-1.1.0" / MODEL).is_file()


def test_cli_unknown_version_exits_1(fake: FakeIndex, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["checkout", "1.0.9", "--source", "pypi"]) == 1
    assert "1.0.9 is not a known release. Nearest existing: 1.0.0, 1.1.0" in capsys.readouterr().err


def test_describe_counts_files_and_rope_deltas_models(fake: FakeIndex) -> None:
    summary = sources.describe(sources.release_tree("1.1.0"))
    assert summary.rope_deltas == {"qwen2_vl": ["modeling_qwen2_vl.py"]}  # bert does not keep them
    assert (summary.python_files, summary.models) == (4, 2)


def test_describe_refuses_a_tree_without_transformers(tmp_path: Path) -> None:
    with pytest.raises(RopefixError, match="holds no src/transformers"):
        sources.describe(tmp_path)


# -- real releases (network once; cached in the shared store) ----------------------------------------

REAL = ("4.49.0", "4.53.3")


def _sdist_member(sdist: Path, version: str, rel: str) -> bytes:
    with tarfile.open(sdist) as tar:
        fh = tar.extractfile(f"transformers-{version}/{rel}")
        assert fh is not None
        return fh.read()


@pytest.fixture(scope="session")
def real_upstream(shared_store: Store) -> Path:
    """A bare upstream repo whose history is two real releases (built once, kept in the shared store)."""
    return upstream_repo(shared_store, REAL)


@pytest.mark.network
@pytest.mark.slow
def test_real_releases_from_a_local_upstream_over_file_url(
    real_upstream: Path, shared_store: Store, tmp_path: Path
) -> None:
    upstream = real_upstream
    for version in REAL:
        done = sources.checkout(version, source="git", repo=upstream.as_uri(), into=tmp_path / version)
        assert done.tag == f"v{version}" and done.source_used == "git"
        sdist = index.download(version, shared_store)
        assert (done.path / MODEL).read_bytes() == _sdist_member(sdist, version, MODEL)


@pytest.mark.network
@pytest.mark.slow
def test_real_release_through_pypi_is_byte_identical(shared_store: Store) -> None:
    version = REAL[0]
    sdist = index.download(version, shared_store)
    private = Store()
    shutil.copy(sdist, private.path("downloads", sdist.name))  # as if this cache had downloaded it
    done = sources.checkout(version, source="pypi", store=private)
    rel = "src/transformers/models/qwen2_5_vl"
    with tarfile.open(sdist) as tar:
        members = {m.name.split("/", 1)[1]: m for m in tar.getmembers() if m.isfile() and f"/{rel}/" in m.name}
        assert len(members) >= 3
        for name, member in members.items():
            fh = tar.extractfile(member)
            assert fh is not None
            assert (done.path / name).read_bytes() == fh.read(), name
    on_disk = {str(p.relative_to(done.path)) for p in (done.path / rel).rglob("*") if p.is_file()}
    assert on_disk == set(members)


def _release_tree_in_child(url: str, cache: str, out: multiprocessing.Queue) -> None:
    os.environ[index.ENV_VAR] = url
    os.environ["ROPEFIX_CACHE"] = cache
    out.put(str(sources.release_tree("1.0.0")))


def test_concurrent_runs_share_one_import(fake: FakeIndex) -> None:
    # Two processes ask for the same release at once: the locks make one download, one import.
    ctx = multiprocessing.get_context("fork")
    results: multiprocessing.Queue = ctx.Queue()
    cache = os.environ["ROPEFIX_CACHE"]
    procs = [ctx.Process(target=_release_tree_in_child, args=(fake.url, cache, results)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    paths = {results.get(timeout=5), results.get(timeout=5)}
    assert len(paths) == 1
    assert [r for r in fake.requests if r.startswith("/packages/")] == ["/packages/transformers-1.0.0.tar.gz"]
    assert git.Repo(Store().path("repos", sources.HISTORY_REPO)).run("rev-list", "--count", "releases") == "1"


def test_auto_resolves_against_the_remote_tags_when_it_answers(local_upstream: Path, fake: FakeIndex) -> None:
    fake.stop()  # the index is not needed when the remote answers
    assert sources.resolve("latest", "auto", repo=local_upstream.as_uri()) == ["1.1.0"]


def test_git_resolve_of_a_silent_remote_without_clone(tmp_path: Path) -> None:
    with pytest.raises(RopefixError, match="did not answer and no clone of it is cached"):
        sources.resolve("latest", "git", repo=str(tmp_path / "nowhere"))


# -- nothing the user has is lost ------------------------------------------------------------------


@pytest.fixture
def ignoring(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeIndex]:
    """An index whose releases carry a .gitignore, as upstream's tree does (data/, .venv/, *.log)."""
    files = {
        ".gitignore": "data/\n.venv/\n*.log\n",
        "src/transformers/__init__.py": "",
        "src/transformers/models/__init__.py": "",
        "src/transformers/models/qwen2_vl/modeling_qwen2_vl.py": "x = 1\n",
    }
    server = FakeIndex({v: sdist_bytes(v, files) for v in ("1.0.0", "1.1.0")})
    monkeypatch.setenv(index.ENV_VAR, server.url)
    yield server
    server.stop()


def test_ignored_files_keep_a_clean_tree_from_being_replaced(ignoring: FakeIndex, tmp_path: Path) -> None:
    wt = tmp_path / "wt"
    sources.checkout("1.0.0", source="pypi", into=wt)
    (wt / "data").mkdir()
    (wt / "data" / "e.csv").write_text("x\n")
    (wt / "run.log").write_text("log\n")
    pycache = wt / "src" / "transformers" / "__pycache__"  # bytecode is the kit's to regenerate, not work
    pycache.mkdir()
    (pycache / "__init__.cpython-311.pyc").write_bytes(b"\0")
    assert not git.Repo(wt).is_dirty()  # git alone calls this tree clean
    with pytest.raises(RopefixError) as e:
        sources.checkout("1.1.0", source="pypi", into=wt)
    assert "data/" in str(e.value) and "run.log" in str(e.value) and "--force" in str(e.value)
    assert (wt / "data" / "e.csv").read_text() == "x\n" and (wt / "run.log").exists()
    done = sources.checkout("1.1.0", source="pypi", into=wt, force=True)
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("wt.ropefix-moved-")]
    assert len(aside) == 1 and str(aside[0]) in done.note
    assert (aside[0] / "data" / "e.csv").read_text() == "x\n" and (aside[0] / "run.log").read_text() == "log\n"
    assert git.Repo(aside[0]).current_branch() == "ropefix/v1.0.0"  # still a work tree, on its branch
    assert (done.path / "src/transformers/__init__.py").exists() and not (done.path / "data").exists()


def test_a_tree_with_only_bytecode_is_still_replaced(ignoring: FakeIndex, tmp_path: Path) -> None:
    wt = tmp_path / "wt"
    sources.checkout("1.0.0", source="pypi", into=wt)
    (wt / "src" / "transformers" / "__pycache__").mkdir()
    (wt / "src" / "transformers" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    assert sources.checkout("1.1.0", source="pypi", into=wt).path == wt


@pytest.mark.parametrize("where", ["root", "repos", "history", "inside-history", "downloads"])
def test_force_cannot_target_the_caches_own_folders(fake: FakeIndex, where: str) -> None:
    store = Store()
    sources.checkout("1.0.0", source="pypi")  # the history repo and a work tree of it now exist
    target = {
        "root": store.root,
        "repos": store.path("repos"),
        "history": store.path("repos", sources.HISTORY_REPO),
        "inside-history": store.path("repos", sources.HISTORY_REPO, "objects"),
        "downloads": store.path("downloads"),
    }[where]
    before = sorted(str(p) for p in store.root.rglob("*"))
    with pytest.raises(RopefixError, match="cache") as e:
        sources.checkout("1.1.0", source="pypi", into=target, force=True)
    assert "--into" in str(e.value)
    assert sorted(str(p) for p in store.root.rglob("*")) == before
    assert git.Repo(sources.default_target("1.0.0")).current_branch() == "ropefix/v1.0.0"
