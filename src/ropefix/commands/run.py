"""``ropefix run``: the main job end to end on a default release (README's main command).

Checkout, scan, apply, verify red/green, PR: see ``ropefix.job``. Progress goes to stderr, the
summary to stdout and ``out/run/SUMMARY.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ropefix import job

# A release from the package index where the regression suite reproduces the bug (red) and proves
# the fix (green) within the ci profile, in about three minutes here; newer 4.x releases (4.57.6)
# carry the pattern too but the suite finds it latent there. Any other release: --version.
DEFAULT_RELEASE = "4.49.0"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="the main job: checkout, scan, apply, verify red/green, patch and PR body")
    p.add_argument("--version", default=DEFAULT_RELEASE, help=f"release to work on (default {DEFAULT_RELEASE})")
    p.add_argument("--out", type=Path, default=Path("out/run"), help="where results go (default out/run)")
    p.add_argument("--models", nargs="+", metavar="MODEL", help="models to verify (default: qwen2_vl qwen2_5_vl)")
    p.add_argument("--max-examples", type=int, help="suite examples per search round (default: the ci profile's)")
    p.add_argument("--python", help="interpreter that imports the release (default: one built for it, cached)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    result = job.run_job(args.version, args.out, args.models, args.max_examples, args.python)
    print(result.render())
    return 0 if result.ok else 1
