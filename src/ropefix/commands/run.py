"""``ropefix run``: the main job end to end on a default release (README's main command).

Today: fetch the release as a work tree, report what it holds, and scan it with the fix
engine (which models carry the rope_deltas hazard, site by site). Later steps (fix, verify,
patch) grow here as their modules land.
"""

from __future__ import annotations

import argparse

from ropefix import engine, sources, ui

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
    found = sources.resolve(args.version, args.source, repo=args.repo)
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
        report = engine.scan_tree(root)
        print(f"  scan: {len(report.affected)} affected sites in {report.files_scanned} model files")
        for model, counts in report.models().items():
            print(f"    {model}: " + ", ".join(f"{n} {status}" for status, n in counts.items() if n))
        for site in report.affected:
            print(f"      {site.file}:{site.line} [{site.rule}/{site.shape}]")
    return 0
