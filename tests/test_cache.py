"""``ropefix cache``: what it shows, what it refuses to destroy, what prune may remove."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fsutil import read_only
from upstream import FakeIndex, sdist_bytes

from ropefix import git
from ropefix.errors import RopefixError
from ropefix.main import main
from ropefix.releases import index, sources
from ropefix.store import Store

MODEL = "src/transformers/models/qwen2_vl/modeling_qwen2_vl.py"
HOUR_AGO = time.time() - 2 * 3600


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeIndex]:
    server = FakeIndex({"1.0.0": sdist_bytes("1.0.0"), "1.1.0": sdist_bytes("1.1.0")})
    monkeypatch.setenv(index.ENV_VAR, server.url)
    yield server
    server.stop()


def _orphans(store: Store, *, age: float) -> list[Path]:
    part = store.path("downloads", ".transformers-1.0.0.tar.gz.k3j2.part")
    part.write_bytes(b"x" * 3000)
    listed = store.root / "results" / "index"
    listed.mkdir(parents=True, exist_ok=True)
    part2 = listed / ".transformers.json.a1.part"
    part2.write_text("{")
    clone = store.root / "tmp" / "git-transformers.zz9"
    (clone / "objects").mkdir(parents=True)
    (clone / "objects" / "pack").write_bytes(b"y" * 2000)
    for p in (part, part2, clone / "objects" / "pack", clone / "objects", clone):
        os.utime(p, (age, age))
    return [part, part2, clone]


def test_cache_dir_and_list_do_not_create_the_cache(tmp_path: Path, monkeypatch, capsys) -> None:
    root = tmp_path / "not-yet"
    monkeypatch.setenv("ROPEFIX_CACHE", str(root))
    assert main(["cache", "dir"]) == 0
    assert capsys.readouterr().out.strip() == str(root)
    assert not root.exists()
    assert main(["cache", "list"]) == 0
    assert "no cache" in capsys.readouterr().out
    assert not root.exists()


def test_list_shows_sizes_and_orphans(capsys: pytest.CaptureFixture[str]) -> None:
    store = Store()
    store.path("downloads", "transformers-1.0.0.tar.gz").write_bytes(b"z" * 1_500_000)
    _orphans(store, age=HOUR_AGO)
    assert main(["cache", "list"]) == 0
    out = capsys.readouterr().out
    assert "transformers-1.0.0.tar.gz" in out and "1.5 MB" in out
    assert "orphan" in out and ".transformers-1.0.0.tar.gz.k3j2.part" in out
    assert "tmp/git-transformers.zz9" in out and ".transformers.json.a1.part" in out


def test_prune_removes_old_orphans_and_nothing_else(fake: FakeIndex, capsys: pytest.CaptureFixture[str]) -> None:
    store = Store()
    kept = sources.checkout("1.0.0", source="pypi")  # a live tree: kept
    (kept.path / MODEL).write_text("my edit\n")
    sources.release_tree("1.1.0")
    download = store.path("downloads", "transformers-1.0.0.tar.gz")
    old = _orphans(store, age=HOUR_AGO)
    young = store.path("downloads", ".transformers-1.1.0.tar.gz.q.part")  # a download in progress
    young.write_bytes(b"x")
    assert main(["cache", "prune"]) == 0
    out = capsys.readouterr().out
    assert not any(p.exists() for p in old)
    assert young.exists() and download.exists() and (kept.path / MODEL).read_text() == "my edit\n"
    assert sources.release_tree("1.1.0").is_dir() and "removed 3" in out


def test_prune_removes_release_trees_whose_repository_is_gone(fake: FakeIndex, capsys) -> None:
    store = Store()
    tree = sources.release_tree("1.0.0")
    mine = sources.checkout("1.1.0", source="pypi")
    (mine.path / MODEL).write_text("my edit\n")
    shutil.rmtree(store.path("repos", sources.HISTORY_REPO))
    assert main(["cache", "prune"]) == 0
    out = capsys.readouterr().out
    assert not tree.exists()  # read-only release tree of a repository that is gone
    assert (mine.path / MODEL).read_text() == "my edit\n"  # may hold work: kept, and said so
    assert str(mine.path) in out and "kept" in out


def test_clear_lists_what_would_be_lost_and_refuses_without_force(
    fake: FakeIndex, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = Store()
    own = sources.checkout("1.0.0", source="pypi")  # the cache's own work tree, with an edit
    (own.path / MODEL).write_text("my edit\n")
    mine = tmp_path / "mine"
    sources.checkout("1.1.0", source="pypi", into=mine)
    (mine / MODEL).write_text("saved by --force\n")
    saved = sources.checkout("1.1.0", source="pypi", into=mine, force=True)  # the edit now lives in the cache
    assert "saved as commit" in saved.note
    _orphans(store, age=HOUR_AGO)
    before = sorted(str(p) for p in store.root.rglob("*"))

    assert main(["cache", "clear"]) == 1
    err = capsys.readouterr().err
    assert str(own.path) in err and "uncommitted" in err
    assert "ropefix/v1.1.0" in err  # the branch holding the saved edit
    assert str(mine) in err  # a --into tree that depends on the cache
    assert "--force" in err
    assert sorted(str(p) for p in store.root.rglob("*")) == before
    assert (own.path / MODEL).read_text() == "my edit\n"

    assert main(["cache", "clear", "--section", "downloads"]) == 0  # nothing there is work
    assert list(store.path("downloads").iterdir()) == [] and (own.path / MODEL).exists()
    assert main(["cache", "clear", "--force"]) == 0
    assert store.entries() == [] and list((store.root / "tmp").iterdir()) == []


def test_clear_without_anything_at_risk_needs_no_force(fake: FakeIndex) -> None:
    sources.release_tree("1.0.0")  # a pristine release tree and the history it came from
    assert main(["cache", "clear"]) == 0
    assert Store().entries() == []


def test_an_unwritable_cache_is_a_clear_error(tmp_path: Path, monkeypatch, capsys) -> None:
    root = tmp_path / "cache"
    Store(root)
    monkeypatch.setenv("ROPEFIX_CACHE", str(root))
    with read_only(root / "tmp"):
        with pytest.raises(RopefixError, match="cannot be written"):
            Store(root)
        assert main(["checkout", "1.0.0", "--source", "pypi"]) == 1
    err = capsys.readouterr().err
    assert "ROPEFIX_CACHE" in err and "Traceback" not in err


def test_a_crash_log_that_cannot_go_to_the_cache_goes_elsewhere(tmp_path: Path, monkeypatch, capsys) -> None:
    from ropefix.commands import cache

    def bug(args: object) -> int:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(cache, "run", bug)
    monkeypatch.setenv("ROPEFIX_CACHE", str(tmp_path / "a-file" / "cache"))
    (tmp_path / "a-file").write_text("not a folder\n")
    assert main(["cache", "list"]) == 3
    err = capsys.readouterr().err
    assert "Traceback" not in err and "a bug in ropefix" in err
    log = Path(err.rsplit("details in ", 1)[1].split()[0])
    assert "ZeroDivisionError: a bug" in log.read_text()
    log.unlink()


def test_cache_history_repo_keeps_saved_work_apart_from_releases(fake: FakeIndex) -> None:
    """What clear counts as saved work: a branch with commits no release tag holds."""
    store = Store()
    sources.checkout("1.0.0", source="pypi")
    history = git.Repo(store.path("repos", sources.HISTORY_REPO))
    assert "ropefix/v1.0.0" in history.branches()
    assert main(["cache", "clear"]) == 0  # a clean tree and a branch at its tag: nothing is lost


def test_the_work_branch_prefixes_are_the_ones_the_commands_create() -> None:
    from ropefix import housekeeping
    from ropefix.ship import pr

    assert housekeeping.WORK_BRANCH_PREFIXES == (sources.BRANCH_PREFIX, f"{pr.TOPIC}-")


def test_a_crash_without_platformdirs_still_writes_its_log(tmp_path: Path, monkeypatch, capsys) -> None:
    """The core install has no platformdirs: the crash report goes to the temp folder, no traceback."""
    import builtins

    from ropefix.commands import cache

    real_import = builtins.__import__

    def no_platformdirs(name: str, *args: object, **kwargs: object) -> object:
        if name == "platformdirs":
            raise ModuleNotFoundError("No module named 'platformdirs'", name="platformdirs")
        return real_import(name, *args, **kwargs)

    def bug(args: object) -> int:
        monkeypatch.setattr(builtins, "__import__", no_platformdirs)
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(cache, "run", bug)
    monkeypatch.delenv("ROPEFIX_CACHE")
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    assert main(["cache", "list"]) == 3
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"details in {tmp_path / 'ropefix.log'}" in err
