"""``ropefix backport``: the fix for a pinned release, written to patches/ or applied to the installed one."""

from __future__ import annotations

import argparse
from pathlib import Path

from ropefix import ui
from ropefix.errors import RopefixError
from ropefix.ship import backport, install


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backport", help="patch a pinned transformers release (patches/ or the installed package)")
    p.add_argument("--to", metavar="VERSION", help="the release to patch (default with an action: the installed one)")
    action = p.add_mutually_exclusive_group()
    action.add_argument("--install", action="store_true", help="apply it to the installed transformers")
    action.add_argument("--status", action="store_true", help="say whether the installed files are patched")
    action.add_argument("--revert", action="store_true", help="restore the installed originals byte for byte")
    p.add_argument(
        "--force", action="store_true", help="apply the unproven static patch where the verdict proves nothing"
    )
    p.add_argument("--site", type=Path, help="site-packages holding transformers (default: this environment's)")
    p.add_argument(
        "--patches", type=Path, default=Path("patches"), help="folder for the patch file (default patches/)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not (args.install or args.status or args.revert):
        if not args.to:
            raise RopefixError("Say which release to patch: `ropefix backport --to 4.49.0` (or add --install).")
        plan = backport.proven_plan(backport.verdict_for(args.to), args.force)
        dest = backport.write_patch(backport.make_patch(args.to, plan=plan), args.patches)
        print(f"wrote {dest}" + (" (UNPROVEN: --force)" if plan is None else ""))
        return 0
    inst = install.find_installed(args.site)
    if args.to and args.to != inst.version:
        raise RopefixError(
            f"--to {args.to} does not match the installed transformers {inst.version} in {inst.site}. Use "
            f"`--to {inst.version}`, or install {args.to} first."
        )
    if args.revert:
        return _show(install.revert(inst), "reverted")
    ui.info(f"making the patch for transformers {inst.version} on its own release tree")
    if args.status:
        # compare with what was installed: the same proven plan (or rules) the install was made with
        made = backport.make_patch(inst.version, install.recorded_rules(inst), plan=install.recorded_plan(inst))
        return _show(install.status(made, inst), None)
    plan = backport.proven_plan(backport.verdict_for(inst.version), args.force)
    patch = backport.make_patch(inst.version, plan=plan)
    backport.write_patch(patch, args.patches)
    return _show(install.install(patch, inst), "patched")


def _show(report: install.InstallReport, verb: str | None) -> int:
    for path, state in sorted(report.files.items()):
        print(f"{state.value:<10} {path}")
    if verb:
        print(f"{verb} {len(report.changed)} file(s) of transformers {report.version} in {report.site}")
    else:
        print(f"transformers {report.version} in {report.site}: {report.overall.value}")
    return 1 if report.overall is install.FileState.MODIFIED and verb is None else 0
