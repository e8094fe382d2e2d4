"""The package index: the only module that touches the network for releases.

The release list and each sdist's URL and sha256 come from the index's JSON API
(``$ROPEFIX_INDEX_URL``, default https://pypi.org/pypi; any server laid out like it works,
including a ``file://`` folder). The list is cached for a short while so offline runs still
work; downloads land in the store's ``downloads/`` only after their hash checks out, and are
hashed again each time they are used. Everything the index says is untrusted: a release name
that is no plain version is ignored, and an sdist entry whose file name is not a plain archive
name, whose hash or size is malformed or whose URL uses another transport is refused by name
before anything touches the disk.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import ropefix
from ropefix import ui
from ropefix.errors import RopefixError
from ropefix.files import atomic_write
from ropefix.releases import versions
from ropefix.store import Store, plain_name

ENV_VAR = "ROPEFIX_INDEX_URL"
DEFAULT_URL = "https://pypi.org/pypi"
PACKAGE = "transformers"
# Long enough that one session's commands share one list, short enough to see new releases.
LIST_TTL_S = 3600
TIMEOUT_S = 30
_CHUNK = 1 << 20
ARCHIVE_SUFFIXES = (".tar.gz", ".zip")


class MalformedIndexError(ValueError):
    """A JSON document that parses but is not laid out like a PyPI JSON API response (or ropefix's copy of one)."""


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
    """Every release that has a usable sdist on the index, oldest first (pre-releases included)."""
    found, broken = _sdists(_metadata(store or Store(), refresh=refresh))
    if not found and broken:
        why = "; ".join(f"{v}: {reason}" for v, reason in list(broken.items())[:3])
        raise RopefixError(
            f"The index {base_url()} lists no sdist ropefix will use ({why}). Nothing was downloaded. The index is "
            f"broken or hostile; set {ENV_VAR} to another (e.g. https://pypi.org/pypi) and retry."
        )
    return versions.sort(found)


def sdist(version: str, store: Store | None = None) -> Sdist:
    """Where the sdist of ``version`` lives and what its sha256 must be (every field checked)."""
    store = store or Store()
    found, broken = _sdists(_metadata(store))
    if version not in found and version not in broken:
        # The cached list may predate the release: look once more before giving up.
        found, broken = _sdists(_metadata(store, refresh=True))
    if version in broken:
        raise RopefixError(
            f"The index {base_url()} lists an sdist for transformers {version} that ropefix will not use: "
            f"{broken[version]}. Nothing was downloaded. The index is broken or hostile; set {ENV_VAR} to "
            "another (e.g. https://pypi.org/pypi) and retry."
        )
    if version not in found:
        near = ", ".join(versions.nearest(version, found))
        raise RopefixError(
            f"The index {base_url()} has no sdist for transformers {version}. Nearest with one: {near}."
        )
    return found[version]


def download(version: str, store: Store | None = None) -> Path:
    """The verified sdist of ``version`` in the store: downloaded once, hashed again whenever it is used
    (a cached copy that no longer matches is removed and fetched again); no partial file is ever kept."""
    store = store or Store()
    with store.lock("downloads"):
        meta = sdist(version, store)
        dest = store.path("downloads", meta.filename)  # a plain name, checked in _sdists
        if not dest.is_file():
            return _fetch(meta, dest, store)
        if _sha256_of(dest) == meta.sha256:
            return dest
        dest.unlink()
        ui.info(f"the cached {dest.name} did not match the index's sha256 (damaged?); removed it, downloading again")
        try:
            return _fetch(meta, dest, store)
        except RopefixError as e:
            raise RopefixError(
                f"The cached {dest.name} did not match the index's sha256 and was removed; downloading it again "
                f"failed: {e}"
            ) from e


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
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        raise RopefixError(
            f"Downloading {meta.url} failed ({_reason(e)}); nothing was kept. "
            "Check the network or $ROPEFIX_INDEX_URL and retry."
        ) from e
    return dest


def _metadata(store: Store, *, refresh: bool = False) -> dict:
    cache = store.path("results", "index", f"{PACKAGE}.json")
    url = json_url()
    cached, damaged = _read_cached(cache, url)
    if not refresh and cached is not None and time.time() - cached["fetched"] < LIST_TTL_S:
        return cached["data"]
    try:
        with _open(url) as resp:
            data = json.load(resp)
        _check_document(data)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        if cached is not None:
            age = (time.time() - cached["fetched"]) / 3600
            ui.info(f"index {url} unusable ({_reason(e)}); using the release list cached {age:.1f} h ago")
            return cached["data"]
        also = f" The cached copy {cache} could not be read either ({damaged})." if damaged else ""
        raise RopefixError(
            f"The package index {url} could not be read ({_reason(e)}) and no copy of its release list is "
            f"cached.{also} Check the network, or set {ENV_VAR} to a reachable index (a PyPI-style JSON API), "
            "and retry."
        ) from e
    # File URLs may be relative to the JSON document (some mirrors do this): make them absolute.
    for files in data["releases"].values():
        for f in files:
            if isinstance(f.get("url"), str):
                f["url"] = urllib.parse.urljoin(url, f["url"])
    with store.lock("index"):
        atomic_write(cache, json.dumps({"url": url, "fetched": time.time(), "data": data}))
    return data


def _read_cached(cache: Path, url: str) -> tuple[dict | None, str]:
    """The cached list for ``url`` (None if absent, for another index, or damaged) and what was wrong with it."""
    if not cache.is_file():
        return None, ""
    try:
        cached = json.loads(cache.read_text())
        if not isinstance(cached, dict) or not isinstance(cached.get("fetched"), (int, float)):
            raise MalformedIndexError("not a ropefix release list")
        _check_document(cached.get("data"))
    except (OSError, ValueError) as e:
        ui.info(f"the cached release list {cache} is damaged ({_reason(e)}); asking the index again")
        return None, _reason(e)
    return (cached, "") if cached.get("url") == url else (None, "")


def _check_document(data: object) -> None:
    """The shape ropefix reads: ``{"releases": {version: [file, ...]}}`` with each file a JSON object."""
    if not isinstance(data, dict) or not isinstance(data.get("releases"), dict):
        raise MalformedIndexError("the document has no 'releases' object; it is not a PyPI-style JSON API response")
    for version, files in data["releases"].items():
        if not isinstance(files, list) or not all(isinstance(f, dict) for f in files):
            raise MalformedIndexError(f"release {version!r} is not a list of file objects")


def _sdists(data: dict) -> tuple[dict[str, Sdist], dict[str, str]]:
    """Usable sdists by release, and releases whose sdist entry is unusable (with the reason)."""
    found: dict[str, Sdist] = {}
    broken: dict[str, str] = {}
    scheme = urllib.parse.urlsplit(json_url()).scheme
    for version, files in data["releases"].items():
        if not _plain_version(version):
            continue  # not a name ropefix could ever be asked for, nor may put in a path
        for f in files:
            if f.get("packagetype") != "sdist" or f.get("yanked"):
                continue
            problem = _sdist_problem(f, version, scheme)
            if problem:
                broken.setdefault(version, problem)
                continue
            found[version] = Sdist(
                version, f["filename"], f["url"], f["digests"]["sha256"].lower(), int(f.get("size") or 0)
            )
            broken.pop(version, None)
    return found, broken


_VERSION = re.compile(r"[0-9][0-9A-Za-z.+!_-]{0,63}")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def _plain_version(version: object) -> bool:
    return isinstance(version, str) and bool(_VERSION.fullmatch(version)) and ".." not in version


def _sdist_problem(f: dict, version: str, scheme: str) -> str | None:
    """Why an sdist entry must not be used, or None. Its file name becomes a path in the cache, so it must be a
    plain name with an archive's suffix; its URL must use the index's own kind of transport."""
    name = f.get("filename")
    if (
        not isinstance(name, str)
        or not plain_name(name)
        or not name.endswith(ARCHIVE_SUFFIXES)
        or name in ARCHIVE_SUFFIXES
    ):
        return (
            f"its file name {name!r} is not a plain file name ending in {' or '.join(ARCHIVE_SUFFIXES)} "
            "(no folders, no '..', no absolute path)"
        )
    digest = (f.get("digests") or {}).get("sha256") if isinstance(f.get("digests"), dict) else None
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        return f"its sha256 {digest!r} is not 64 hexadecimal digits, so the download could not be verified"
    size = f.get("size", 0)
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        return f"its size {size!r} is not a byte count"
    url = f.get("url")
    allowed = ("http", "https", "file") if scheme == "file" else ("http", "https")
    if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in allowed:
        return f"its URL {url!r} is not an {'/'.join(allowed)} URL"
    return None


def _open(url: str):  # -> a readable response
    req = urllib.request.Request(url, headers={"User-Agent": f"ropefix/{ropefix.__version__}"})
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
