"""Regression-suite throughput: examples per second of the hypothesis search, per model.

    OMP_NUM_THREADS=1 python benchmarks/suite.py [--models qwen2_vl qwen2_5_vl] [--examples 25]

Runs against the importable transformers. Prints, per model: examples run, seconds, examples/s,
and how many failure sites the search recorded (every example runs the call path twice: on one
plain CPU model, cached per prompt/path, and on a copy dispatched over simulated devices).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["qwen2_vl", "qwen2_5_vl"])
    ap.add_argument("--examples", type=int, default=25)
    args = ap.parse_args()

    import transformers

    from ropefix.prove import suite, tinymodels

    print(f"transformers {transformers.__version__}, {args.examples} examples per search round")
    for m in args.models:
        t0 = time.perf_counter()
        tinymodels.build(m)
        built = time.perf_counter() - t0
        t0 = time.perf_counter()
        r = suite.search(m, "ci", max_examples=args.examples)
        dt = time.perf_counter() - t0
        print(
            f"{m:<12} build {built:5.1f}s  examples {r.examples_run:4d}  {dt:6.1f}s  "
            f"{r.examples_run / dt:5.2f} examples/s  failure sites {len(r.failures)}"
        )


if __name__ == "__main__":
    main()
