from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from upstream import FakeIndex, sdist_bytes

from ropefix.errors import RopefixError
from ropefix.releases import index
from ropefix.store import Store


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeIndex]:
    server = FakeIndex(
        {"1.0.0": sdist_bytes("1.0.0"), "1.1.0": sdist_bytes("1.1.0"), "1.2.0rc1": sdist_bytes("1.2.0rc1")}
    )
    monkeypatch.setenv(index.ENV_VAR, server.url)
    yield server
    server.stop()


def _leftovers(store: Store) -> list[str]:
    return sorted(p.name for p in store.path("downloads").iterdir())


def test_release_list_and_relative_urls(fake: FakeIndex) -> None:
    store = Store()
    assert index.releases(store) == ["1.0.0", "1.1.0", "1.2.0rc1"]
    meta = index.sdist("1.1.0", store)
    # PyPI gives '../../packages/...': resolved against the JSON document's URL.
    assert meta.url == fake.url.removesuffix("/pypi") + "/packages/transformers-1.1.0.tar.gz"
    assert meta.sha256 == fake.sha256["transformers-1.1.0.tar.gz"]


def test_download_verifies_and_is_kept_once(fake: FakeIndex) -> None:
    store = Store()
    path = index.download("1.0.0", store)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == fake.sha256["transformers-1.0.0.tar.gz"]
    fetched = [r for r in fake.requests if r.startswith("/packages/")]
    assert index.download("1.0.0", store) == path
    assert [r for r in fake.requests if r.startswith("/packages/")] == fetched  # no second download


def test_hash_mismatch_keeps_nothing(fake: FakeIndex) -> None:
    store = Store()
    fake.mode = "corrupt"
    with pytest.raises(RopefixError) as e:
        index.download("1.0.0", store)
    assert "does not match the index's sha256" in str(e.value)
    assert fake.sha256["transformers-1.0.0.tar.gz"] in str(e.value)
    assert _leftovers(store) == []


def test_interrupted_download_leaves_no_entry(fake: FakeIndex) -> None:
    store = Store()
    fake.mode = "truncate"
    with pytest.raises(RopefixError, match="nothing was kept"):
        index.download("1.1.0", store)
    assert _leftovers(store) == []
    fake.mode = "ok"  # the next run starts clean and succeeds
    assert index.download("1.1.0", store).is_file()


def test_unreachable_index_without_cache_says_what_failed(fake: FakeIndex) -> None:
    fake.stop()
    with pytest.raises(RopefixError) as e:
        index.releases(Store())
    assert fake.url in str(e.value) and "no copy of its release list is cached" in str(e.value)


def test_unreachable_index_uses_cached_list_and_downloads(fake: FakeIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store()
    index.download("1.0.0", store)
    fake.stop()
    monkeypatch.setattr(index, "LIST_TTL_S", 0)  # the cached list is stale: the index must be asked
    assert index.releases(store) == ["1.0.0", "1.1.0", "1.2.0rc1"]
    assert index.download("1.0.0", store).is_file()
    with pytest.raises(RopefixError, match=r"transformers-1\.1\.0\.tar\.gz failed \(.*refused.*nothing was kept"):
        index.download("1.1.0", store)  # listed, but never downloaded: the failure is named
    assert _leftovers(store) == ["transformers-1.0.0.tar.gz"]


def test_unknown_release_names_nearest(fake: FakeIndex) -> None:
    with pytest.raises(RopefixError, match=r"no sdist for transformers 1\.0\.5.*1\.0\.0"):
        index.sdist("1.0.5", Store())


def test_file_url_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A folder laid out like the JSON API works as an index too (an offline mirror).
    server = FakeIndex({"2.0.0": sdist_bytes("2.0.0")})
    try:
        (tmp_path / "pypi" / "transformers").mkdir(parents=True)
        (tmp_path / "packages").mkdir()
        (tmp_path / "pypi" / "transformers" / "json").write_text(json.dumps(server.document()))
        (tmp_path / "packages" / "transformers-2.0.0.tar.gz").write_bytes(server.files["transformers-2.0.0.tar.gz"])
    finally:
        server.stop()
    monkeypatch.setenv(index.ENV_VAR, (tmp_path / "pypi").as_uri())
    assert index.download("2.0.0", Store()).read_bytes() == sdist_bytes("2.0.0")
