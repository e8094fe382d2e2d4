"""``ropefix pr``: the upstream PR for a ref of transformers, written to out/pr/, proven rules only."""

from __future__ import annotations

import argparse
from pathlib import Path

from ropefix import ui
from ropefix.ship import pr


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pr",
        help="make the upstream PR (topic branch, patch series, PR_BODY.md, checks) for a ref, proven rules only",
        description="Only rules a failing layout proved (and whose patch turned it green) go into the series, each "
        "to the families it was proven for. The verdict comes from --verdict, the cache or the kit's committed "
        "verdicts; otherwise `ropefix verify` runs on the ref first.",
    )
    p.add_argument("--base", required=True, help="branch, tag or commit of upstream to fix (e.g. main, v4.49.0)")
    p.add_argument(
        "--repo",
        metavar="URL_OR_PATH",
        help=f"upstream: a URL, a bare repo or a clean checkout (default {pr.UPSTREAM})",
    )
    p.add_argument("--issue", metavar="URL", help="the issue this PR fixes (linked in PR_BODY.md)")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("out/pr"),
        help="where the series and PR body go (default out/pr); a folder holding other files is refused",
    )
    p.add_argument(
        "--force", action="store_true", help="use an --out holding other files: the old folder is moved aside first"
    )
    p.add_argument("--python", help="interpreter that can import the tree at --base (verify and the tests' configs)")
    p.add_argument("--verdict", type=Path, metavar="FILE", help="a `ropefix verify --json` report for --base to use")
    p.add_argument(
        "--unproven", action="store_true", help="also commit static matches no failing layout proves (marked so)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ropefix.prove.verdict import Report

    report = Report.load(args.verdict) if args.verdict else None
    result = pr.make_pr(
        args.base,
        repo=args.repo,
        issue=args.issue,
        out=args.out,
        python=args.python,
        report=report,
        unproven=args.unproven,
        force=args.force,
    )
    if result.note:
        ui.info(result.note)
    if result.safe:
        print(f"{args.base}: {result.why_nothing.rstrip('.')}. Nothing was produced.")
        return 0
    print(f"branch {result.branch} in {result.tree}: {len(result.commits)} commit(s) for {', '.join(result.models)}")
    for p in result.patches:
        print(f"  {p}")
    print(f"  {args.out / 'PR_BODY.md'}\n  {args.out / 'CHECKS.md'}")
    for note in result.untested:
        print(f"  no test generated for {note}")
    for u in result.unproven:
        print(f"  UNPROVEN (marked in the body): {u}")
    print(f"the series applies with `git am` on a clean {args.base}")
    return 0
