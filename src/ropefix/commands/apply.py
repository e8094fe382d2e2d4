"""``ropefix apply PATH [--check] [--dry-run] [--models a b] [--rules r]``: rewrite every affected site."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ropefix.commands import _args
from ropefix.fix import engine


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "apply",
        help="rewrite every rope_deltas device hazard in a transformers tree (idempotent)",
        description="PATH: a transformers checkout (with src/transformers) or an installed transformers package "
        "folder. Modular and modeling files are edited alike and formatted as upstream formats them.",
    )
    p.add_argument("path", type=Path, metavar="PATH")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 and show the diff if any site is affected"
    )
    mode.add_argument("--dry-run", action="store_true", help="change nothing; print the diff")
    _args.add_models(p, "only these model folders (e.g. qwen2_vl qwen2_5_vl)")
    p.add_argument("--rules", metavar="R,S", help="only these rules (default: all)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    dry = args.check or args.dry_run
    models = _args.models(args.models)
    report = engine.apply_tree(args.path, models=models, rules=_args.split(args.rules), dry_run=dry)
    if dry:
        sys.stdout.write(report.diff)
        sys.stdout.flush()
    print(report.summary(), file=sys.stderr if dry else sys.stdout)
    for ch in [] if dry else report.changes:
        print(f"  {ch.file}: {len(ch.sites_fixed)} site(s)")
    if report.modular_checked:
        print(f"modular converter agrees for: {', '.join(report.modular_checked)}")
    if args.check and report.changed:
        given = (
            ("models", " ".join(shlex.quote(m) for m in models or [])),
            ("rules", args.rules and shlex.quote(args.rules)),
        )
        scope = "".join(f" --{k} {v}" for k, v in given if v)
        print(
            f"affected sites remain; fix them with: ropefix apply {shlex.quote(str(args.path))}{scope}",
            file=sys.stderr,
        )
        return 1
    return 0
