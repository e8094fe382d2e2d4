"""``ropefix backport``: the fix for a pinned release: patches/, the installed files, or a patched wheel."""

from __future__ import annotations

import argparse
from pathlib import Path

from ropefix import ui
from ropefix.errors import RopefixError
from ropefix.releases import index
from ropefix.ship import backport, install, wheel


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backport", help="patch a pinned transformers release (patches/ or the installed package)")
    p.add_argument("--to", metavar="VERSION", help="the release to patch (default with an action: the installed one)")
    action = p.add_mutually_exclusive_group()
    action.add_argument("--install", action="store_true", help="apply it to the installed transformers")
    action.add_argument("--status", action="store_true", help="say whether the installed files are patched")
    action.add_argument("--revert", action="store_true", help="restore the installed originals byte for byte")
    action.add_argument(
        "--wheel", action="store_true", help="build transformers-V+ropefix.N-py3-none-any.whl from the release's wheel"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="apply the unproven static patch where the verdict proves nothing; with --wheel only: replace a "
        "different wheel of the same name in --out (a wheel never carries an unproven fix)",
    )
    p.add_argument("--site", type=Path, help="site-packages holding transformers (default: this environment's)")
    p.add_argument(
        "--patches", type=Path, default=Path("patches"), help="folder for the patch file (default patches/)"
    )
    p.add_argument("--out", type=Path, default=Path("out/wheels"), help="folder for --wheel (default out/wheels)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.wheel:
        return _wheel(args)
    if not (args.install or args.status or args.revert):
        if not args.to:
            raise RopefixError("Say which release to patch: `ropefix backport --to 4.49.0` (or add --install).")
        plan = backport.proven_plan(backport.verdict_for(args.to), args.force)
        dest = backport.write_patch(backport.make_patch(args.to, plan=plan), args.patches)
        print(f"wrote {dest}" + (" (UNPROVEN: --force)" if plan is None else ""))
        return 0
    inst = install.find_installed(args.site)
    built = wheel.installed(inst)
    if built is not None:
        return _installed_wheel(args, inst, built)
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
        recorded = install.recorded_plan(inst)
        made = backport.make_patch(inst.version, install.recorded_rules(inst), plan=recorded)
        code = _show(install.status(made, inst), None)
        if install.recorded_rules(inst) is not None:
            what = "; ".join(f"{f}: {', '.join(r)}" for f, r in sorted(recorded.items())) if recorded else "UNPROVEN"
            print(f"patched in place by `ropefix backport --install`: {what}")
        return code
    plan = backport.proven_plan(backport.verdict_for(inst.version), args.force)
    patch = backport.make_patch(inst.version, plan=plan)
    backport.write_patch(patch, args.patches)
    return _show(install.install(patch, inst), "patched")


def _wheel(args: argparse.Namespace) -> int:
    if not args.to:
        raise RopefixError("Say which release to build: `ropefix backport --to 4.49.0 --wheel [--out DIR]`.")
    report = backport.verdict_for(args.to)
    # the same gate as --install, without its override: a wheel is installed by people who never see the verdict
    plan = backport.proven_plan(
        report, force=False, override="patch this one environment with `--install --force` (a wheel is never unproven)"
    )
    index.pure_wheel(args.to)  # no pure-Python wheel on the index: say so before the release tree is fetched
    ui.info(f"making the patch for transformers {args.to} on its own release tree")
    patch = backport.make_patch(args.to, plan=plan)
    built = wheel.build_release(args.to, patch, report)
    dest, state = wheel.write(built, args.out, force=args.force)
    prov = built.provenance
    print(f"{state} {dest} ({len(built.data) / 1e6:.1f} MB, sha256 {built.sha256})")
    print(
        f"transformers {prov.version}: {prov.rules_line()} ({len(prov.files)} file(s) patched, proven: {prov.verdict})"
    )
    print(wheel.usage(dest, built))
    return 0


def _installed_wheel(args: argparse.Namespace, inst: install.Installed, built: wheel.Provenance) -> int:
    """A transformers installed from a ropefix wheel: its files are patched by the wheel, not by --install."""
    if args.to and args.to not in (built.release, built.version):
        raise RopefixError(
            f"--to {args.to} does not match the installed transformers {built.version} (a ropefix wheel of "
            f"{built.release}) in {inst.site}. Use `--to {built.release}`, or install {args.to} first."
        )
    if args.revert:
        raise RopefixError(
            f"transformers {built.version} in {inst.site} is a ropefix wheel: its patched files are its own, with no "
            f"backup to restore. Nothing was changed. To go back to the plain release, `pip install --force-reinstall "
            f"--no-deps transformers=={built.release}`."
        )
    code = _show(wheel.status(built, inst), None)
    print(f"a ropefix wheel of transformers {built.release}: {built.rules_line()}; built by ropefix {built.kit}")
    print(f"proof: {built.verdict}")
    if args.install and code == 0:
        print("nothing to install: the wheel already carries the fix")
    return code


def _show(report: install.InstallReport, verb: str | None) -> int:
    for path, state in sorted(report.files.items()):
        print(f"{state.value:<10} {path}")
    if verb:
        print(f"{verb} {len(report.changed)} file(s) of transformers {report.version} in {report.site}")
    else:
        print(f"transformers {report.version} in {report.site}: {report.overall.value}")
    return 1 if report.overall is install.FileState.MODIFIED and verb is None else 0
