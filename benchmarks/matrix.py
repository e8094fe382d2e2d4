"""How long the matrix takes, and what reusing downloads and envs saves. Prints figures.

    .venv/bin/python benchmarks/matrix.py [--label quick] [--parallel N] [--envs E ...] [--no-cold]

Three runs of the same envs, each in a fresh tox work dir unless said otherwise:
  cold        empty pip cache, new envs (every wheel downloaded or unpacked from scratch)
  warm-cache  pip cache from the cold run, new envs (what a CI cache or a second machine sees)
  warm-envs   the warm-cache run's envs again (tox reuses them; only the kit is reinstalled)
Per env: create (virtualenv), install (deps + kit), test (verify itself), as tox measured them.
The ratio is total wall time over the sum of bare test times (target: 2x or less warm).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from ropefix.matrix import report, runner
from ropefix.matrix.model import Matrix

ROOT = Path(__file__).resolve().parents[1]


def run_once(
    p: runner.Plan, wheel: Path, out: Path, workdir: Path, pip_cache: Path, parallel: int, verify_args: list[str]
) -> Matrix:
    opts = runner.RunOptions(
        tox_ini=ROOT / "tox.ini",
        results_dir=out,
        parallel=parallel,
        kit_wheel=wheel,
        workdir=workdir,
        env=(("PIP_CACHE_DIR", str(pip_cache)),),
        verify_args=tuple(verify_args),
    )
    return runner.run(p, opts)


def show(name: str, m: Matrix) -> None:
    tests = sum(c.timings.test_s for c in m.cells)
    ratio = m.duration_s / tests if tests else float("nan")
    print(f"\n== {name}: wall {m.duration_s:.1f}s, sum of bare test times {tests:.1f}s, ratio {ratio:.2f}x")
    print(f"   {'env':<18} {'status':<26} {'create s':>9} {'install s':>10} {'test s':>8} {'total s':>8}")
    for c in m.cells:
        t = c.timings
        print(
            f"   {c.env:<18} {c.status.value:<26} {t.create_s:>9.1f} {t.install_s:>10.1f} {t.test_s:>8.1f} "
            f"{t.total_s:>8.1f}"
        )
    for c in m.cells:
        if c.reason and not c.result:
            print(f"   {c.env}: {c.reason}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--label", default="quick")
    ap.add_argument("--envs", nargs="+", default=[])
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("--no-cold", action="store_true", help="skip the cold run (reuse a warm pip cache)")
    ap.add_argument("--report", type=Path, help="write the last run's matrix.{json,md,svg,png,junit.xml} here")
    ap.add_argument("verify_args", nargs=argparse.REMAINDER, help="after --: passed to verify in every env")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    vargs = [a for a in args.verify_args if a != "--"]
    with tempfile.TemporaryDirectory(prefix="ropefix-bench-matrix-") as tmp_s:
        tmp = Path(tmp_s)
        p = runner.plan(ROOT / "tox.ini", [] if args.envs else [args.label], args.envs)
        if not p.specs:
            print(f"no envs under {args.label!r} / {args.envs}", file=sys.stderr)
            return 1
        t0 = time.monotonic()
        wheel = runner.build_kit_wheel(ROOT, tmp / "kit")
        print(f"envs: {', '.join(s.name for s in p.specs)}; parallel {args.parallel}")
        print(f"kit wheel built once in {time.monotonic() - t0:.1f}s (shared by every env)")
        cache = tmp / "pip-cache"
        if args.no_cold:
            cache = Path(os.environ.get("PIP_CACHE_DIR", Path.home() / ".cache" / "pip"))
        else:
            show("cold", run_once(p, wheel, tmp / "cold", tmp / "tox-cold", cache, args.parallel, vargs))
        show("warm-cache", run_once(p, wheel, tmp / "warm", tmp / "tox-warm", cache, args.parallel, vargs))
        last = run_once(p, wheel, tmp / "warm2", tmp / "tox-warm", cache, args.parallel, vargs)
        show("warm-envs", last)
        if args.report:
            for path in report.write_all(last, args.report):
                print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
