"""Scan time per release (warm cache) next to ``grep -rn rope_deltas`` over the same tree.

    python benchmarks/scan.py [SPEC]        # default: the releases already in the cache's trees

Each figure is the best of three runs in this process; the ratio is scan / grep (target <= 5).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ropefix import engine, proc, sources
from ropefix.store import Store


def best(fn, n: int = 3) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def cached_releases(store: Store) -> list[str]:
    base = store.path("worktrees", "releases")
    found = [p.name.removeprefix("transformers-") for p in base.glob("transformers-*")] if base.exists() else []
    from ropefix import versions

    return versions.sort(found)


def main(argv: list[str]) -> int:
    store = Store()
    releases = sources.resolve(argv[0], store=store) if argv else cached_releases(store)
    if not releases:
        print("no release trees in the cache; pass a SPEC such as 4.49-4.57, or run `ropefix scan --versions ...`")
        return 1
    print(f"{'release':<10} {'sites':>5} {'scan s':>8} {'grep s':>8} {'ratio':>6}")
    ratios = []
    for v in releases:
        root = Path(sources.release_tree(v, store))
        sites = len(engine.scan_tree(root).sites)  # also warms the file system cache for both
        scan = best(lambda r=root: engine.scan_tree(r))
        grep = best(lambda r=root: proc.run(["grep", "-rn", "rope_deltas", r]))
        ratios.append(scan / grep)
        print(f"{v:<10} {sites:>5} {scan:>8.3f} {grep:>8.3f} {scan / grep:>6.1f}")
    print(f"median ratio scan/grep: {sorted(ratios)[len(ratios) // 2]:.1f} (target <= 5)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
