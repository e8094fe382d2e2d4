"""``ropefix checkout VERSION``: a git work tree of a transformers release on a fresh topic branch."""

from __future__ import annotations

import argparse
from pathlib import Path

from ropefix import ui
from ropefix.releases import sources


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "checkout",
        help="a git work tree of a transformers release (from a git remote or the package index)",
        description="VERSION: 4.49.0, latest, a range such as 4.49-4.57 (latest patch of each minor) "
        "or a PEP 440 specifier such as '>=4.50,<4.52'. Several releases go to DIR/transformers-X.Y.Z.",
    )
    p.add_argument("version", metavar="VERSION")
    p.add_argument("--source", choices=sources.SOURCES, default="auto", help="where the release comes from")
    p.add_argument(
        "--repo", metavar="URL_OR_PATH", help=f"git remote for --source git/auto (default {sources.UPSTREAM_URL})"
    )
    p.add_argument("--into", metavar="DIR", type=Path, help="target folder (default: in the cache's worktrees/)")
    p.add_argument(
        "--force", action="store_true", help="replace a target with uncommitted changes (they are committed first)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    found = sources.resolve(args.version, args.source, repo=args.repo)
    for version in found:
        into = args.into
        if into is not None and len(found) > 1:
            into = into / f"transformers-{version}"
        done = sources.checkout(version, source=args.source, repo=args.repo, into=into, force=args.force)
        if done.note:
            ui.info(done.note)
        print(f"{done.version}\t{done.source_used}\t{done.tag}\t{done.branch}\t{done.path}")
    return 0
