"""Scan time per release, cold and warm, next to ``grep -rn rope_deltas`` over the same tree.

    python benchmarks/scan.py [SPEC] [--repeat N]   # default: the releases already in the cache's trees

cold: a scan with nothing remembered (``memo=False``: no scan memo, no cut or sliced function
kept from an earlier release), in this one process; warm: a later scan answered from the cache's
scan memo. Every figure is the best of N runs (default 3) measured in the same run as its grep
(page cache warm for both), as wall-clock seconds and as CPU seconds (the scan's process time,
grep's user+sys): on a shared machine the CPU ratio is the steadier one. Targets: cold/grep <= 3
per release (the largest counts), warm well under it.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ropefix.fix import engine
from ropefix.releases import sources, versions
from ropefix.store import Store


def best(fn: Callable[[], object], n: int) -> tuple[float, float]:
    """(wall, cpu) seconds, each the smallest of ``n`` runs."""
    walls, cpus = [], []
    for _ in range(n):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return min(walls), min(cpus)


def grep(root: Path, n: int) -> tuple[float, float]:
    walls, cpus = [], []
    for _ in range(n):
        before = os.times()
        w = time.perf_counter()
        subprocess.run(["grep", "-rn", "rope_deltas", str(root)], capture_output=True, check=False)
        walls.append(time.perf_counter() - w)
        after = os.times()
        cpus.append((after.children_user - before.children_user) + (after.children_system - before.children_system))
    return min(walls), min(cpus)


def cached_releases(store: Store) -> list[str]:
    base = store.path("worktrees", "releases")
    found = [p.name.removeprefix("transformers-") for p in base.glob("transformers-*")] if base.exists() else []
    return versions.sort(found)


def main(argv: list[str]) -> int:
    n = 3
    if "--repeat" in argv:
        at = argv.index("--repeat")
        n = int(argv[at + 1])
        argv = argv[:at] + argv[at + 2 :]
    store = Store()
    releases = sources.resolve(argv[0], store=store) if argv else cached_releases(store)
    if not releases:
        print("no release trees in the cache; pass a SPEC such as 4.49-4.57, or run `ropefix scan --versions ...`")
        return 1
    print(f"{'release':<10} {'sites':>5} {'grep s':>7} {'cold s':>7} {'warm s':>7} {'cold/grep':>9} {'cpu c/g':>8}")
    cold_r, cpu_r, warm_r = [], [], []
    for v in releases:
        root = Path(sources.release_tree(v, store))
        g_wall, g_cpu = grep(root, n)  # also warms the page cache
        c_wall, c_cpu = best(lambda r=root: engine.scan_tree(r, memo=False), n)
        sites = len(engine.scan_tree(root).sites)  # fills the memo
        w_wall, _ = best(lambda r=root: engine.scan_tree(r), n)
        cold_r.append(c_wall / g_wall)
        cpu_r.append(c_cpu / g_cpu if g_cpu else float("nan"))
        warm_r.append(w_wall / g_wall)
        print(f"{v:<10} {sites:>5} {g_wall:>7.3f} {c_wall:>7.3f} {w_wall:>7.3f} {cold_r[-1]:>9.1f} {cpu_r[-1]:>8.1f}")
    worst = releases[cold_r.index(max(cold_r))]
    print(
        f"cold/grep over {len(releases)} releases: median {statistics.median(cold_r):.1f}, max {max(cold_r):.1f} "
        f"({worst}); CPU median {statistics.median(cpu_r):.1f}, max {max(cpu_r):.1f}; "
        f"warm/grep median {statistics.median(warm_r):.1f}, max {max(warm_r):.1f} (target: cold <= 3)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
