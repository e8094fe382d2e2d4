"""``ropefix run``: the main job end to end on a default release (README's main command).

First version: fetch the release as a work tree and report what it holds. Later steps
(scan, fix, verify, patch) grow here as their modules land.
"""

from __future__ import annotations

import argparse

from ropefix import sources, ui

# The newest 4.x release: it carries qwen2_vl, qwen2_5_vl and their copies in the shapes most
# users still run, and its sdist is on PyPI (so the pypi source works on a machine without GitHub).
DEFAULT_RELEASE = "4.57.6"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="the main job on a default release (for now: fetch it and report what it holds)")
    p.add_argument("--version", default=DEFAULT_RELEASE, help=f"release to work on (default {DEFAULT_RELEASE})")
    p.add_argument("--source", choices=sources.SOURCES, default="pypi", help="where the release comes from")
    p.add_argument("--repo", metavar="URL_OR_PATH", help="git remote for --source git/auto")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    found = sources.resolve(args.version, "git" if args.source == "git" else "pypi", repo=args.repo)
    for version in ui.progress(found, "releases"):
        if args.source == "pypi":
            root = sources.release_tree(version)
            how = "pypi (cached release tree)"
        else:
            done = sources.checkout(version, source=args.source, repo=args.repo)
            root, how = done.path, done.source_used
        summary = sources.describe(root)
        print(f"transformers {version} via {how}: {root}")
        print(f"  {summary.python_files} Python files, {summary.models} model folders")
        print(f"  {len(summary.rope_deltas)} models keep rope_deltas:")
        for model, files in summary.rope_deltas.items():
            print(f"    {model}: {', '.join(files)}")
    return 0
