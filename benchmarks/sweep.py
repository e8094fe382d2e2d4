"""Full-history sweep time: every release x flagged model family, torch 2.13, warm caches.

    OMP_NUM_THREADS=1 python benchmarks/sweep.py [--releases 4.45-latest] [--parallel 2] [--out DIR]

Warm caches means the release trees, their interpreters (relenv) and the scan memo exist already
(the first pass builds them; run it twice, or after `ropefix sweep` once). Every cell runs afresh
(a new, empty results folder), so nothing is reused from an earlier sweep. Prints the wall time
against the 60-minute target, the cells per minute, the median and slowest cells, and what the
cells ended as.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
TARGET_MIN = 60.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--releases", default="4.45-latest")
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--profile", default="ci")
    ap.add_argument("--out", type=Path, help="results folder (default: a fresh temporary one)")
    args = ap.parse_args()

    from ropefix.prove import sweep
    from ropefix.releases import relenv, sources

    releases = sources.resolve(args.releases)
    warm = time.monotonic()
    cells = sweep.plan(releases)
    for r in releases:  # the interpreters are part of the warm cache, not of the figure
        relenv.python_for(r)
    print(f"{len(releases)} releases, {len(cells)} cells; warm-up (scan, environments) {time.monotonic() - warm:.0f}s")
    out = args.out or Path(tempfile.mkdtemp(prefix="ropefix-sweep-bench-"))
    opts = sweep.Options(out, args.profile, None, args.parallel)
    start = time.monotonic()
    result = sweep.sweep(cells, opts)
    wall = time.monotonic() - start
    secs = sorted(o.seconds for o in result.outcomes)
    states = Counter(o.report.families[0].state.value for o in result.outcomes if o.report.families)
    slowest = max(result.outcomes, key=lambda o: o.seconds)
    print(f"sweep wall time: {wall / 60:.1f} min for {len(cells)} cells ({len(cells) / (wall / 60):.1f} cells/min)")
    print(
        f"target: under {TARGET_MIN:.0f} min on this {os.cpu_count()}-core machine: {'met' if wall / 60 < TARGET_MIN else 'NOT met'}"
    )
    print(f"cell seconds: median {statistics.median(secs):.0f}, max {secs[-1]:.0f} ({slowest.cell})")
    print("cells: " + ", ".join(f"{n} {s}" for s, n in states.most_common()))
    print(f"results in {out}")


if __name__ == "__main__":
    main()
