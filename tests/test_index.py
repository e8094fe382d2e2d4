from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from upstream import FakeIndex, sdist_bytes

from ropefix.errors import RopefixError
from ropefix.main import main
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


# -- names and documents from the index are untrusted --------------------------------------------------


def _files_outside(sandbox: Path, cache: Path) -> list[str]:
    return sorted(str(p.relative_to(sandbox)) for p in sandbox.rglob("*") if not p.is_relative_to(cache))


@pytest.mark.parametrize(
    "name",
    [
        "../../outside/victim.txt",  # climbs out of downloads/ and the cache
        "{sandbox}/outside/victim.tar.gz",  # absolute
        "sub/transformers-1.0.0.tar.gz",  # a folder of its own choosing
        "..",
        "transformers-1.0.0.exe",  # not an archive
        "..\\..\\victim.tar.gz",  # Windows separators
    ],
)
def test_the_index_cannot_choose_where_a_download_is_written(
    fake: FakeIndex, tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox = tmp_path / "sandbox"
    cache = sandbox / "cache"
    (sandbox / "outside").mkdir(parents=True)
    name = name.format(sandbox=sandbox)

    def hostile(doc: dict) -> dict:
        doc["releases"]["1.0.0"][0]["filename"] = name
        return doc

    fake.tamper = hostile
    with pytest.raises(RopefixError, match="file name") as e:
        index.download("1.0.0", Store(cache))
    assert repr(name) in str(e.value) and "Nothing was downloaded" in str(e.value)
    assert _files_outside(sandbox, cache) == ["outside"]
    assert not [r for r in fake.requests if r.startswith("/packages/")]
    # the same through the command a user runs: exit 1, one paragraph, nothing outside the cache
    monkeypatch.setenv("ROPEFIX_CACHE", str(cache))
    assert main(["checkout", "1.0.0", "--source", "pypi"]) == 1
    assert "ropefix: error:" in capsys.readouterr().err
    assert _files_outside(sandbox, cache) == ["outside"]


def test_hostile_release_names_are_not_releases(fake: FakeIndex) -> None:
    def hostile(doc: dict) -> dict:
        doc["releases"]["../../x"] = doc["releases"]["1.0.0"]
        doc["releases"]["9.0.0/../../y"] = doc["releases"]["1.0.0"]
        return doc

    fake.tamper = hostile
    assert index.releases(Store()) == ["1.0.0", "1.1.0", "1.2.0rc1"]


@pytest.mark.parametrize(
    "doc",
    [
        b"{not json",
        [],
        {"info": {}},
        {"releases": []},
        {"releases": {"1.0.0": "x"}},
        {
            "releases": {
                "1.0.0": [{"packagetype": "sdist", "filename": 5, "url": "u", "digests": {"sha256": "0" * 64}}]
            }
        },
        {"releases": {"1.0.0": [{"packagetype": "sdist", "filename": "transformers-1.0.0.tar.gz", "digests": "x"}]}},
        {
            "releases": {
                "1.0.0": [
                    {
                        "packagetype": "sdist",
                        "filename": "transformers-1.0.0.tar.gz",
                        "url": "../x",
                        "digests": {"sha256": "0" * 64},
                        "size": "big",
                    }
                ]
            }
        },
    ],
)
def test_a_malformed_index_document_is_a_clear_error(fake: FakeIndex, doc: object) -> None:
    fake.tamper = lambda _: doc
    with pytest.raises(RopefixError, match=r"index") as e:
        index.download("1.0.0", Store())
    assert fake.url in str(e.value)
    assert _leftovers(Store()) == []


def test_a_release_published_after_the_list_was_cached_is_found(fake: FakeIndex) -> None:
    from ropefix.releases import sources

    store = Store()
    assert index.releases(store)[-1] == "1.2.0rc1"  # the list is now cached for an hour
    fake.publish("1.3.0", sdist_bytes("1.3.0"))
    assert sources.resolve("1.3.0", "pypi", store=store) == ["1.3.0"]
    asked = fake.requests.count("/pypi/transformers/json")
    with pytest.raises(RopefixError, match="not a known release"):
        sources.resolve("1.4.0", "pypi", store=store)
    assert fake.requests.count("/pypi/transformers/json") == asked + 1  # asked once more, then the error


def test_a_corrupt_cached_release_list_is_fetched_again_or_named(fake: FakeIndex) -> None:
    store = Store()
    index.releases(store)
    cached = store.path("results", "index", "transformers.json")
    cached.write_text('{"url": "tru')
    assert index.releases(store) == ["1.0.0", "1.1.0", "1.2.0rc1"]  # fetched afresh
    cached.write_text("[1, 2]")
    fake.stop()
    with pytest.raises(RopefixError) as e:
        index.releases(store)
    assert str(cached) in str(e.value) and "could not be read" in str(e.value)


def test_a_cached_download_is_hashed_again_when_used(fake: FakeIndex) -> None:
    store = Store()
    path = index.download("1.0.0", store)
    good = path.read_bytes()
    path.write_bytes(good[:-10])  # bit rot, a killed copy, an edit
    assert index.download("1.0.0", store).read_bytes() == good  # removed and fetched again
    assert fake.requests.count("/packages/transformers-1.0.0.tar.gz") == 2
    path.write_bytes(b"garbage")
    fake.stop()
    with pytest.raises(RopefixError, match="did not match the index's sha256") as e:
        index.download("1.0.0", store)
    assert "was removed" in str(e.value)
    assert _leftovers(store) == []
