"""Test helpers that stand in for the outside world: a package index and an upstream git repo.

- ``make_sdist``: a tiny synthetic transformers sdist (``transformers-X/src/transformers/...``).
- ``FakeIndex``: a PyPI-style JSON API on 127.0.0.1 serving such sdists (file URLs relative,
  as PyPI's are); ``stop()`` makes it unreachable, ``mode = "corrupt" | "truncate"`` misbehave,
  ``publish()`` adds a release later, ``tamper`` rewrites the JSON document (a hostile index).
- ``upstream_repo``: a local bare "upstream" repository whose history is real releases
  (tags ``vX.Y.Z``), built once from sdists downloaded through a store and kept there.

Test files import these with ``from upstream import ...`` (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import json
import tarfile
import threading
from collections.abc import Callable
from pathlib import Path

from ropefix import git
from ropefix.releases import archive, index
from ropefix.store import Store

# Synthetic model code written for these tests (not upstream's): enough for scans to find.
QWEN_MODEL = """class TinyQwenModel:
    def forward(self, input_ids, cache_position=None):
        if self.rope_deltas is None:
            self.rope_deltas = input_ids.new_zeros(1)
        return cache_position[0] + self.rope_deltas
"""


def sdist_bytes(version: str, files: dict[str, str] | None = None) -> bytes:
    """A gzip tarball laid out like a transformers sdist, with ``files`` under its top folder."""
    files = files or {
        "src/transformers/__init__.py": f'__version__ = "{version}"\n',
        "src/transformers/models/__init__.py": "",
        "src/transformers/models/qwen2_vl/modeling_qwen2_vl.py": QWEN_MODEL,
        "src/transformers/models/bert/modeling_bert.py": "class Bert:\n    pass\n",
        "setup.py": "# synthetic\n",
    }
    buf = io.BytesIO()
    # gzip's header carries a timestamp: fix it so the same input always gives the same bytes.
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for rel, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"transformers-{version}/{rel}")
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_sdist(folder: Path, version: str, files: dict[str, str] | None = None) -> Path:
    path = folder / f"transformers-{version}.tar.gz"
    path.write_bytes(sdist_bytes(version, files))
    return path


class FakeIndex:
    """A PyPI-style index on 127.0.0.1: ``/pypi/transformers/json`` and ``/packages/<file>``."""

    def __init__(self, releases: dict[str, bytes]) -> None:
        self.files: dict[str, bytes] = {}
        self.sha256: dict[str, str] = {}
        for version, data in releases.items():
            self.publish(version, data)
        self.requests: list[str] = []
        self.mode = "ok"  # "ok", "corrupt" (wrong bytes), "truncate" (connection drops mid-file)
        self.tamper: Callable[[dict], object] | None = None  # rewrites the JSON document before it is served
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/pypi"

    def publish(self, version: str, data: bytes) -> None:
        """Put a release on the index (as a new upload would, e.g. while a cached list is still fresh)."""
        name = f"transformers-{version}.tar.gz"
        self.files[name] = data
        self.sha256[name] = hashlib.sha256(data).hexdigest()

    def document(self) -> dict:
        releases = {}
        for name, data in self.files.items():
            version = name.removeprefix("transformers-").removesuffix(".tar.gz")
            releases[version] = [
                {
                    "filename": name,
                    "packagetype": "sdist",
                    "url": f"../../packages/{name}",  # relative, like PyPI's JSON API
                    "digests": {"sha256": self.sha256[name]},
                    "size": len(data),
                    "yanked": False,
                }
            ]
        return {"info": {"name": "transformers"}, "releases": releases}

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep pytest output clean
                pass

            def do_GET(self) -> None:
                fake.requests.append(self.path)
                if self.path == "/pypi/transformers/json":
                    doc = fake.document() if fake.tamper is None else fake.tamper(fake.document())
                    return self._send(doc if isinstance(doc, bytes) else json.dumps(doc).encode())
                name = self.path.removeprefix("/packages/")
                if name not in fake.files:
                    self.send_error(404)
                    return
                data = fake.files[name]
                if fake.mode == "corrupt":
                    data = data[:-1] + bytes([data[-1] ^ 0xFF])
                if fake.mode == "truncate":
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self._send(data)

            def _send(self, body: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler

    def stop(self) -> None:
        """Make the index unreachable (the port is closed; connections are refused)."""
        self._server.shutdown()
        self._server.server_close()


def upstream_repo(store: Store, versions: tuple[str, ...]) -> Path:
    """A bare repository with one commit per release (oldest first), each tagged ``vX.Y.Z``.

    Built once into ``store`` (sdists come from the index through ``store``'s download cache)
    and reused; the tree of each commit is exactly the release's sdist.
    """
    dest = store.path("repos", "test-upstream-" + "-".join(versions))
    with store.lock("test-upstream"):
        if git.is_repo(dest):
            return dest
        with store.atomic_dir(dest) as tmp:
            repo = git.init(tmp, bare=True)
            for version in versions:
                sdist = index.download(version, store)
                sha = repo.commit_files(archive.files(sdist), f"Release {version}", branch="main")
                repo.tag(f"v{version}", sha)
            repo.run("symbolic-ref", "HEAD", "refs/heads/main")
    return dest
