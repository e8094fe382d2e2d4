"""The package index: the only module that touches the network for releases.

The release list and each sdist's URL and sha256 come from the index's JSON API
(``$ROPEFIX_INDEX_URL``, default https://pypi.org/pypi; any server laid out like it works,
including a ``file://`` folder). The list is cached for a short while so offline runs still
work; downloads land in the store's ``downloads/`` only after their hash checks out.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ropefix import __version__, ui
from ropefix.errors import RopefixError
from ropefix.releases import versions
from ropefix.store import Store

ENV_VAR = "ROPEFIX_INDEX_URL"
DEFAULT_URL = "https://pypi.org/pypi"
PACKAGE = "transformers"
# Long enough that one session's commands share one list, short enough to see new releases.
LIST_TTL_S = 3600
TIMEOUT_S = 30
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Sdist:
    version: str
    filename: str
    url: str
    sha256: str
    size: int


def base_url() -> str:
    return os.environ.get(ENV_VAR, DEFAULT_URL).rstrip("/")


def json_url(package: str = PACKAGE) -> str:
    return f"{base_url()}/{package}/json"


def releases(store: Store | None = None, *, refresh: bool = False) -> list[str]:
    """Every release that has an sdist on the index, oldest first (pre-releases included)."""
    return versions.sort(_sdists(_metadata(store or Store(), refresh=refresh)))


def sdist(version: str, store: Store | None = None) -> Sdist:
    """Where the sdist of ``version`` lives and what its sha256 must be."""
    store = store or Store()
    found = _sdists(_metadata(store))
    if version not in found:
        # The cached list may predate the release: look once more before giving up.
        found = _sdists(_metadata(store, refresh=True))
    if version not in found:
        near = ", ".join(versions.nearest(version, found))
        raise RopefixError(
            f"The index {base_url()} has no sdist for transformers {version}. Nearest with one: {near}."
        )
    return found[version]


def download(version: str, store: Store | None = None) -> Path:
    """The verified sdist of ``version`` in the store (downloaded once; no partial file ever kept)."""
    store = store or Store()
    with store.lock("downloads"):
        cached = _cached_download(store, version)
        if cached is not None:
            return cached
        meta = sdist(version, store)
        dest = store.path("downloads", meta.filename)
        ui.info(f"downloading {meta.filename} ({meta.size / 1e6:.1f} MB) from {_host(meta.url)}")
        digest = hashlib.sha256()
        try:
            with store.atomic_file(dest) as fh, _open(meta.url) as resp:
                announced, received = resp.headers.get("Content-Length"), 0
                while chunk := resp.read(_CHUNK):
                    digest.update(chunk)
                    fh.write(chunk)
                    received += len(chunk)
                if announced is not None and received != int(announced):
                    # http.client returns a short body without complaint when a connection drops.
                    raise RopefixError(
                        f"Downloading {meta.url} was cut off after {received} of {announced} bytes; nothing was "
                        "kept. Retry; the next run starts from scratch."
                    )
                if digest.hexdigest() != meta.sha256:
                    # Raising inside the block makes atomic_file delete the temporary file.
                    raise RopefixError(
                        f"{meta.filename} from {meta.url} does not match the index's sha256 "
                        f"(expected {meta.sha256}, got {digest.hexdigest()}). Nothing was kept. "
                        "Retry later; if it persists, the index or a proxy is serving a corrupt file."
                    )
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            raise RopefixError(
                f"Downloading {meta.url} failed ({_reason(e)}); nothing was kept. "
                "Check the network or $ROPEFIX_INDEX_URL and retry."
            ) from e
        return dest


def _cached_download(store: Store, version: str) -> Path | None:
    # Only verified files are ever renamed into downloads/, so presence means good.
    for ext in (".tar.gz", ".zip"):
        path = store.path("downloads", f"{PACKAGE}-{version}{ext}")
        if path.is_file():
            return path
    return None


def _metadata(store: Store, *, refresh: bool = False) -> dict:
    cache = store.path("results", "index", f"{PACKAGE}.json")
    url = json_url()
    if not refresh and cache.is_file():
        cached = json.loads(cache.read_text())
        if cached.get("url") == url and time.time() - cached.get("fetched", 0) < LIST_TTL_S:
            return cached["data"]
    try:
        with _open(url) as resp:
            data = json.load(resp)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        if cache.is_file():
            cached = json.loads(cache.read_text())
            if cached.get("url") == url:
                age = (time.time() - cached.get("fetched", 0)) / 3600
                ui.info(f"index {url} unreachable ({_reason(e)}); using the release list cached {age:.1f} h ago")
                return cached["data"]
        raise RopefixError(
            f"The package index {url} could not be read ({_reason(e)}) and no copy of its release list is "
            f"cached. Check the network, or set {ENV_VAR} to a reachable index (a PyPI-style JSON API), and retry."
        ) from e
    # File URLs may be relative to the JSON document (some mirrors do this): make them absolute.
    for files in data.get("releases", {}).values():
        for f in files:
            f["url"] = urllib.parse.urljoin(url, f.get("url", ""))
    with store.lock("index"), store.atomic_file(cache, "w") as fh:
        json.dump({"url": url, "fetched": time.time(), "data": data}, fh)
    return data


def _sdists(data: dict) -> dict[str, Sdist]:
    found = {}
    for version, files in data.get("releases", {}).items():
        for f in files:
            if f.get("packagetype") == "sdist" and not f.get("yanked") and f.get("digests", {}).get("sha256"):
                found[version] = Sdist(version, f["filename"], f["url"], f["digests"]["sha256"], int(f.get("size", 0)))
    return found


def _open(url: str):  # -> a readable response
    req = urllib.request.Request(url, headers={"User-Agent": f"ropefix/{__version__}"})
    return urllib.request.urlopen(req, timeout=TIMEOUT_S)


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc or url


def _reason(e: BaseException) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code}"
    if isinstance(e, urllib.error.URLError):
        return str(e.reason)
    return f"{type(e).__name__}: {e}"
