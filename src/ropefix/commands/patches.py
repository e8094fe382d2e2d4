"""``ropefix patches --refresh | --check | --table``: one patch per release whose verdict proves it, in patches/."""

from __future__ import annotations

import argparse
from pathlib import Path

from ropefix import ui
from ropefix.errors import RopefixError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "patches",
        help="regenerate or check the per-release patches in patches/ (proven releases only)",
        description="A release gets a patch only when its committed verdict (ropefix/data/verdicts) proves rules "
        "for some family; the patch applies exactly those rules to exactly those families.",
    )
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--refresh", action="store_true", help="regenerate every proven patch and patches/index.json")
    mode.add_argument("--check", action="store_true", help="every patch applies to its release and equals a fresh one")
    mode.add_argument("--table", action="store_true", help="print the release table (README's) from the index")
    p.add_argument("--releases", "--versions", dest="releases", metavar="SPEC", help="only these releases")
    p.add_argument("--dir", type=Path, default=Path("patches"), help="where the patches live (default: patches)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ropefix.ship import patches

    if args.refresh:
        index = patches.refresh(args.dir, args.releases or patches.DEFAULT_SPEC)
        print(patches.release_table(index), end="")
        return 0
    index = patches.load_index(args.dir)
    if args.releases:
        from ropefix.releases import sources

        wanted = set(sources.resolve(args.releases))
        index = {**index, "releases": [e for e in index["releases"] if e["release"] in wanted]}
        if not index["releases"]:
            raise RopefixError(
                f"The index lists none of the releases {args.releases!r} names. `ropefix patches --table` lists them."
            )
    if args.table:
        print(patches.release_table(index), end="")
        return 0
    entries = patches.patched_entries(index)
    rows, problems = [], []
    for e in ui.progress(entries, "check", name=lambda e: e["release"]):
        found = patches.check_one(args.dir, e, patches.tree(e["release"]), regenerate=True)
        problems += found
        rows.append(f"{e['release']:<10} {e['patch']:<32} {'ok' if not found else 'DRIFTED'}")
    print("\n".join(["release    patch                            result", *rows]))
    if problems:
        raise RopefixError(
            "Committed patches drifted from the engine:\n" + "\n".join(problems) + "\nRegenerate them with "
            "`ropefix patches --refresh` and commit patches/."
        )
    print(f"{len(entries)} patch(es) apply cleanly and equal a fresh generation")
    return 0
