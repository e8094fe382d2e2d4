"""``ropefix sweep``: verify every (release x flagged model family) of the history; resumable."""

from __future__ import annotations

import argparse
from pathlib import Path

from ropefix.commands import _args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="verify every release x flagged model family (resumable); reports, tables and a picture",
        description="Each cell runs `ropefix verify --models F` in that release's own interpreter (built once, "
        "cached). Finished cells are kept in OUT/cells/ and reused when the sweep is run again.",
    )
    p.add_argument("--releases", default="4.45-latest", metavar="SPEC", help="releases (default 4.45-latest)")
    _args.add_models(p, "only these families (default: every family the scan flags in each release)")
    p.add_argument("--profile", choices=("ci", "dev", "deep"), default="ci", help="search depth (default ci)")
    p.add_argument("--max-examples", type=_args.positive_int, help="override the profile's examples per round")
    p.add_argument("--parallel", type=_args.positive_int, default=2, help="cells at a time (default 2)")
    p.add_argument("--out", type=Path, default=Path("out/sweep"), help="where results go (default out/sweep)")
    p.add_argument(
        "--publish", action="store_true", help="also write the reports into the kit's src/ropefix/data/verdicts/"
    )
    p.add_argument(
        "--table",
        action="store_true",
        help="print the README's 'what users hit' table from the kit's committed verdicts, and run nothing",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ropefix import ui
    from ropefix.prove import sweep, verdicts
    from ropefix.releases import sources

    if args.table:
        from ropefix.prove import render

        print(render.hazard_summary(verdicts.all_committed()), end="")
        return 0
    releases = sources.resolve(args.releases)
    ui.info(f"sweep: scanning {len(releases)} release(s) for flagged families")
    cells = sweep.plan(releases, _args.models(args.models))
    opts = sweep.Options(args.out.resolve(), args.profile, args.max_examples, args.parallel)
    ui.info(f"sweep: {len(cells)} cells, {args.parallel} at a time, results in {opts.out}")
    result = sweep.sweep(cells, opts)
    for path in sweep.write(result, opts):
        print(path)
    if args.publish:
        for path in sweep.publish(result, verdicts.committed_dir()):
            print(path)
    nj = result.not_judged()
    ui.info(
        f"sweep: {result.cells} cells ({result.reused} kept from earlier runs) in {result.seconds / 60:.1f} min; "
        f"{result.cell_seconds / 60:.0f} min of verify time summed; {len(nj)} not judged"
    )
    return 0 if all(r.passed() for r in result.reports.values()) else 1
