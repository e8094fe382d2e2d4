from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from ropefix.errors import RopefixError
from ropefix.main import main
from ropefix.store import Memo, Store


def test_atomic_file_leaves_nothing_when_interrupted(tmp_path: Path) -> None:
    store = Store(tmp_path)
    dest = store.path("downloads", "x.tar.gz")
    with pytest.raises(RuntimeError), store.atomic_file(dest) as fh:
        fh.write(b"half")
        raise RuntimeError("connection dropped")
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []


def test_atomic_file_replaces_whole(tmp_path: Path) -> None:
    store = Store(tmp_path)
    dest = store.path("downloads", "x")
    with store.atomic_file(dest) as fh:
        fh.write(b"abc")
    assert dest.read_bytes() == b"abc"


def test_atomic_dir_is_removed_on_failure(tmp_path: Path) -> None:
    store = Store(tmp_path)
    dest = store.path("repos", "r")
    with pytest.raises(ValueError), store.atomic_dir(dest) as tmp:
        (tmp / "f").write_text("x")
        raise ValueError
    assert not dest.exists()
    assert list((tmp_path / "tmp").iterdir()) == []


def _append_under_lock(root: str, n: int) -> None:
    store = Store(Path(root))
    for _ in range(n):
        with store.lock():
            f = store.path("results", "counter")
            value = int(f.read_text()) if f.exists() else 0
            with store.atomic_file(f, "w") as fh:
                fh.write(str(value + 1))


def test_lock_serialises_processes(tmp_path: Path) -> None:
    procs = [multiprocessing.Process(target=_append_under_lock, args=(str(tmp_path), 30)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert Store(tmp_path).path("results", "counter").read_text() == "90"


def test_cache_cli_list_and_clear(_private_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = Store()
    store.path("downloads", "a.tar.gz").write_bytes(b"12345")
    assert main(["cache", "list"]) == 0
    assert "a.tar.gz" in capsys.readouterr().out
    assert main(["cache", "clear"]) == 0
    assert store.entries() == []


def test_a_memo_is_the_stores_one_object_loaded_once_and_saved_whole(tmp_path: Path) -> None:
    store = Store(tmp_path / "c")
    memo = store.memo("answers")
    assert memo is Store(tmp_path / "c").memo("answers") and memo is not Store(tmp_path / "d").memo("answers")
    assert "k" not in memo and memo.get("k") is None
    memo["k"] = [1, "two"]
    assert not memo.path.exists()  # nothing written until save
    memo.save()
    assert json.loads(memo.path.read_text()) == {"k": [1, "two"]} and memo.new == 0
    # a damaged memo file reads as empty and is replaced whole by the next save
    other = Memo(store, "damaged")
    other.path.write_text("{not json")
    assert "k" not in other
    other["k"] = 1
    other.save()
    assert json.loads(other.path.read_text()) == {"k": 1}
    with pytest.raises(RopefixError):
        store.memo("../escape")
