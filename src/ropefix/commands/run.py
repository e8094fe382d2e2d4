"""``ropefix run``: the main job end to end on a default release (README's main command).

Checkout, scan, environment, verify red/green, the proven patch, PR: see ``ropefix.job``. Progress goes
to stderr, the summary to stdout and ``out/run/SUMMARY.md``; ``--resume`` continues an interrupted run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ropefix.commands import _args

# A release from the package index where the regression suite reproduces the bug (red) and proves
# the fix (green) within the ci profile, in a few minutes here. Any other release: --release.
DEFAULT_RELEASE = "4.49.0"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="the main job: checkout, scan, verify red/green, the proven patch and PR")
    p.add_argument(
        "release", nargs="?", default=None, metavar="RELEASE", help=f"release to work on (default {DEFAULT_RELEASE})"
    )
    p.add_argument("--release", dest="release_opt", metavar="RELEASE", help="the same, as an option")
    p.add_argument("--out", type=Path, default=Path("out/run"), help="where results go (default out/run)")
    _args.add_models(p, "families to verify (default: every family the scan finds affected)")
    p.add_argument(
        "--max-examples", type=_args.positive_int, help="suite examples per search round (default: the ci profile's)"
    )
    p.add_argument("--python", help="interpreter that imports the release (default: one built for it, cached)")
    p.add_argument("--resume", action="store_true", help="continue the run recorded in --out after its last good step")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ropefix import job
    from ropefix.errors import RopefixError

    if args.release and args.release_opt and args.release != args.release_opt:
        raise RopefixError(f"Two releases given ({args.release} and {args.release_opt}); name one.")
    release = args.release or args.release_opt or DEFAULT_RELEASE
    result = job.run_job(
        release, args.out, _args.models(args.models), args.max_examples, args.python, resume=args.resume
    )
    print(result.render())
    return 0 if result.ok else 1
