"""First vs second checkout of the same release through the pypi source (prints figures).

    .venv/bin/python benchmarks/checkout.py [VERSION]

The first checkout imports the sdist (download excluded: it is read from a download cache so
the figure does not measure the network); the second should cost little more than the bare
``git worktree add`` it wraps, which is timed alone for comparison.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from ropefix import git
from ropefix.releases import index, sources
from ropefix.store import Store


def timed(label: str, fn):  # -> the function's result
    start = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - start
    print(f"{label:<44} {elapsed:8.2f} s")
    return result, elapsed


def main() -> int:
    version = sys.argv[1] if len(sys.argv) > 1 else "4.49.0"
    sdist = index.download(version, Store())  # the user's cache: downloaded at most once
    with tempfile.TemporaryDirectory(prefix="ropefix-bench-") as tmp:
        store = Store(Path(tmp) / "cache")
        shutil.copy(sdist, store.path("downloads", sdist.name))
        print(f"transformers {version}, pypi source, fresh cache in {tmp}")
        first, t1 = timed(
            "first checkout (sdist streamed into git + tree)",
            lambda: sources.checkout(version, "pypi", store=store, into=Path(tmp) / "a"),
        )
        _, t2 = timed(
            "second checkout (work tree only)",
            lambda: sources.checkout(version, "pypi", store=store, into=Path(tmp) / "b"),
        )
        history = git.Repo(store.path("repos", sources.HISTORY_REPO))
        _, t3 = timed(
            "bare git worktree add, for comparison", lambda: history.worktree_add(Path(tmp) / "c", first.tag)
        )
        _, t4 = timed("release_tree, first call", lambda: sources.release_tree(version, store))
        _, t5 = timed("release_tree, reused", lambda: sources.release_tree(version, store))
    print(f"first / second checkout: {t1 / t2:.1f}x")
    print(f"second checkout / bare worktree add: {t2 / t3:.2f}x")
    print(f"release_tree first / reused: {t4 / max(t5, 1e-9):.0f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
