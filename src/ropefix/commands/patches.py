"""``ropefix patches --refresh | --check``: one engine-made patch per affected release, in patches/."""

from __future__ import annotations

import argparse
from pathlib import Path

from ropefix import ui
from ropefix.commands.scan import split
from ropefix.errors import RopefixError
from ropefix.ship import patches


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("patches", help="regenerate or check the per-release patches in patches/")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--refresh", action="store_true", help="regenerate every patch and patches/index.json")
    mode.add_argument("--check", action="store_true", help="every patch applies to its release and equals a fresh one")
    p.add_argument("--versions", metavar="SPEC", default=patches.DEFAULT_SPEC, help="releases (refresh only)")
    p.add_argument("--dir", type=Path, default=Path("patches"), help="where the patches live (default: patches)")
    p.add_argument("--rules", metavar="R,S", help="only these rules (default: all)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rules = split(args.rules)
    if args.refresh:
        index = patches.refresh(args.dir, args.versions, rules)
        for e in index["patches"]:
            print(f"{e['release']:<10} {e['sites']:>3} site(s) in {len(e['files'])} file(s)  {args.dir / e['patch']}")
        print(f"not affected: {', '.join(index['not_affected']) or 'none'}")
        return 0
    index = patches.load_index(args.dir)
    problems: list[str] = []
    for e in ui.progress(index["patches"], "check", total=len(index["patches"])):
        problems += patches.check_one(args.dir, e, patches.tree(e["release"]), regenerate=True, rules=rules)
    if problems:
        raise RopefixError(
            "Committed patches drifted from the engine:\n" + "\n".join(problems) + "\nRegenerate them with "
            "`ropefix patches --refresh` and commit patches/."
        )
    print(f"{len(index['patches'])} patch(es) apply cleanly and equal a fresh generation")
    return 0
