"""Scan time per release (warm cache) next to ``grep -rn rope_deltas`` over the same tree.

    python benchmarks/scan.py [SPEC]        # default: the releases already in the cache's trees

cold: the first scan, parsing every candidate function with libcst (``memo=False``);
warm: later scans, answered from the cache's scan memo. grep and warm are the best of three
runs in this process; ratios are scan / grep (target <= 5).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ropefix import proc
from ropefix.fix import engine
from ropefix.releases import sources
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
    from ropefix.releases import versions

    return versions.sort(found)


def main(argv: list[str]) -> int:
    store = Store()
    releases = sources.resolve(argv[0], store=store) if argv else cached_releases(store)
    if not releases:
        print("no release trees in the cache; pass a SPEC such as 4.49-4.57, or run `ropefix scan --versions ...`")
        return 1
    print(f"{'release':<10} {'sites':>5} {'grep s':>8} {'cold s':>8} {'warm s':>8} {'cold/grep':>9} {'warm/grep':>9}")
    cold_r, warm_r = [], []
    for v in releases:
        root = Path(sources.release_tree(v, store))
        grep = best(lambda r=root: proc.run(["grep", "-rn", "rope_deltas", r]))  # also warms the page cache
        cold = best(lambda r=root: engine.scan_tree(r, memo=False), n=1)
        sites = len(engine.scan_tree(root).sites)  # fills the memo
        warm = best(lambda r=root: engine.scan_tree(r))
        cold_r.append(cold / grep)
        warm_r.append(warm / grep)
        print(f"{v:<10} {sites:>5} {grep:>8.3f} {cold:>8.3f} {warm:>8.3f} {cold / grep:>9.1f} {warm / grep:>9.1f}")
    mid = len(releases) // 2
    print(f"median scan/grep: cold {sorted(cold_r)[mid]:.1f}, warm {sorted(warm_r)[mid]:.1f} (target <= 5)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
