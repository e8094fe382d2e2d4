"""``ropefix run``: the main job end to end on a default release (README's main command).

Checkout, scan, apply, verify red/green, PR: see ``ropefix.job``. Progress goes to stderr, the
summary to stdout and ``out/run/SUMMARY.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ropefix import job

# The newest 4.x release: it carries qwen2_vl, qwen2_5_vl and their copies in the shapes most
# users still run, and its sdist is on PyPI (so the job works on a machine without GitHub).
DEFAULT_RELEASE = "4.57.6"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="the main job: checkout, scan, apply, verify red/green, patch and PR body")
    p.add_argument("--version", default=DEFAULT_RELEASE, help=f"release to work on (default {DEFAULT_RELEASE})")
    p.add_argument("--out", type=Path, default=Path("out/run"), help="where results go (default out/run)")
    p.add_argument("--models", nargs="+", metavar="MODEL", help="models to verify (default: qwen2_vl qwen2_5_vl)")
    p.add_argument("--max-examples", type=int, default=4, help="suite examples per search round (default 4: quick)")
    p.add_argument("--python", help="interpreter that imports the release (default: one built for it, cached)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    result = job.run_job(args.version, args.out, args.models, args.max_examples, args.python)
    print(result.render())
    return 0 if result.ok else 1
