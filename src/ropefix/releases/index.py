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
        return _fetch(meta, store.path("downloads", meta.filename), store)


def _fetch(meta: Sdist | Wheel, dest: Path, store: Store) -> Path:
    """Stream ``meta.url`` into ``dest`` through a temporary file; it lands only when its sha256 matches."""
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


# ---------------------------------------------------------------- the release's own wheel

# Pure-Python wheel tags a ropefix wheel may start from: any Python 3, no ABI, any platform.
PURE_TAGS = ("py3-none-any", "py2.py3-none-any")


@dataclass(frozen=True)
class Wheel:
    version: str
    filename: str  # checked: exactly transformers-<version>-<pure tag>.whl, no folder in it
    url: str
    sha256: str
    size: int


def pure_wheel(version: str, store: Store | None = None) -> Wheel:
    """Where the pure-Python wheel of ``version`` lives and what its sha256 must be.

    Every name the index gives is checked before it is used: the file name must be exactly the
    release's own (so it cannot point anywhere but ``downloads/``) and the sha256 64 hex digits.
    """
    if str(versions.parse(version)) != version:  # a plain, canonical release name goes into the file name
        raise RopefixError(f"{version!r} is not a release name as the index spells them (e.g. 4.49.0).")
    store = store or Store()
    files = _release_files(_metadata(store), version)
    if files is None:
        files = _release_files(_metadata(store, refresh=True), version)  # the cached list may predate it
    if files is None:
        raise RopefixError(
            f"The index {base_url()} has no transformers {version}. Check the version (`ropefix checkout latest` "
            "lists what exists) and retry."
        )
    wanted = {f"{PACKAGE}-{version}-{tag}.whl" for tag in PURE_TAGS}
    for f in files:
        if f.get("packagetype") == "bdist_wheel" and f.get("filename") in wanted and not f.get("yanked"):
            digest = str(f.get("digests", {}).get("sha256", ""))
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise RopefixError(
                    f"The index {base_url()} gives {f['filename']} no usable sha256 ({digest!r}), so it cannot be "
                    "checked; nothing was downloaded. Use another index ($ROPEFIX_INDEX_URL) and retry."
                )
            return Wheel(version, f["filename"], f["url"], digest, int(f.get("size", 0)))
    listed = ", ".join(sorted(str(f.get("filename")) for f in files)) or "no files"
    raise RopefixError(
        f"The index {base_url()} has no pure-Python wheel for transformers {version} (looked for "
        f"{' or '.join(sorted(wanted))}; it lists {listed}). A ropefix wheel is built from the release's own "
        f"py3-none-any wheel. Use `ropefix backport --to {version}` (the patch) or `--install` instead."
    )


def download_wheel(version: str, store: Store | None = None) -> Path:
    """The verified pure-Python wheel of ``version`` in ``downloads/``: fetched once, hashed again on every use."""
    store = store or Store()
    with store.lock("downloads"):
        meta = pure_wheel(version, store)
        folder = store.path("downloads")
        dest = folder / meta.filename
        if dest.parent != folder:  # pure_wheel admits only the release's own name; keep it that way
            raise RopefixError(f"Refusing the index's file name {meta.filename!r}: it leaves the cache.")
        if dest.is_file():
            if _sha256_of(dest) == meta.sha256:
                return dest
            ui.info(f"the cached {dest.name} does not match the index's sha256 (damaged?); downloading it again")
            dest.unlink()
        return _fetch(meta, dest, store)


def _release_files(data: dict, version: str) -> list[dict] | None:
    files = data.get("releases", {}).get(version)
    return files if isinstance(files, list) else None


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
