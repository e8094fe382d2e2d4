"""``ropefix backport``: the fix for a pinned release: printed (or written to --out), the installed files, or a
patched wheel.

It writes nowhere else: not the current folder (which may be read-only, or someone's checkout), only
``--out`` when given (``--wheel``: ``out/wheels`` by default) and, for ``--install``, the install's state
folder in site-packages.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ropefix import ui
from ropefix.errors import RopefixError

if TYPE_CHECKING:  # the stage modules (libcst, GitPython) load when the command runs, not when the CLI starts
    from ropefix.ship import install, wheel

WHEELS = Path("out/wheels")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "backport",
        help="patch a pinned transformers release (print the patch, patch the installed package, or a wheel)",
    )
    p.add_argument(
        "--to",
        metavar="VERSION",
        help="the exact release to patch, e.g. 4.49.0 or v4.49.0 (default with an action: the installed one)",
    )
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
        "--out",
        type=Path,
        metavar="DIR",
        help="write the patch as DIR/transformers-VERSION.patch (default: print it); with --wheel, the wheel's folder "
        f"(default {WHEELS})",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ropefix.ship import backport, install, wheel

    if args.wheel:
        return _wheel(args)
    if not (args.install or args.status or args.revert):
        if not args.to:
            raise RopefixError("Say which release to patch: `ropefix backport --to 4.49.0` (or add --install).")
        release = _exact(args.to)  # before the verdict, which may take minutes to make
        plan = backport.proven_plan(backport.verdict_for(release), args.force)
        patch = backport.make_patch(release, plan=plan)
        unproven = " (UNPROVEN: --force)" if plan is None else ""
        if args.out is None:
            sys.stdout.write(patch.diff)
            if unproven:
                ui.info(f"the patch above is{unproven}")
        else:
            print(f"wrote {backport.write_patch(patch, args.out)}{unproven}")
        return 0
    inst = install.find_installed(args.site)
    built = wheel.installed(inst)
    if built is not None:
        return _installed_wheel(args, inst, built)
    if args.to and _tag(args.to) != inst.version:
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
    report = install.install(patch, inst, diff=patch.diff)
    if args.out is not None:
        ui.info(f"wrote {backport.write_patch(patch, args.out)}")
    return _show(report, "patched")


def _tag(text: str) -> str:
    """``v4.49.0`` (the tag spelling) -> ``4.49.0``."""
    return text.strip().removeprefix("v")


def _exact(text: str) -> str:
    """The exact release ``--to`` names (``v`` stripped). One the verdicts know (they are kept per exact release)
    needs no index; anything else must be an exact release the index lists: ``4.51`` is refused with the 4.51.x
    releases, never read as 4.51.0."""
    from ropefix.prove import verdicts
    from ropefix.releases import sources, versions

    name = _tag(text)
    with contextlib.suppress(RopefixError):
        if str(versions.parse(name)) == name and name.count(".") >= 2 and verdicts.lookup(name) is not None:
            return name
    return sources.exact_release(text)


def _wheel(args: argparse.Namespace) -> int:
    from ropefix.releases import index
    from ropefix.ship import backport, wheel

    if not args.to:
        raise RopefixError("Say which release to build: `ropefix backport --to 4.49.0 --wheel [--out DIR]`.")
    release = _exact(args.to)
    report = backport.verdict_for(release)
    # the same gate as --install, without its override: a wheel is installed by people who never see the verdict
    plan = backport.proven_plan(
        report, force=False, override="patch this one environment with `--install --force` (a wheel is never unproven)"
    )
    index.pure_wheel(release)  # no pure-Python wheel on the index: say so before the release tree is fetched
    ui.info(f"making the patch for transformers {release} on its own release tree")
    patch = backport.make_patch(release, plan=plan)
    built = wheel.build_release(release, patch, report)
    dest, state = wheel.write(built, args.out or WHEELS, force=args.force)
    prov = built.provenance
    print(f"{state} {dest} ({len(built.data) / 1e6:.1f} MB, sha256 {built.sha256})")
    print(
        f"transformers {prov.version}: {prov.rules_line()} ({len(prov.files)} file(s) patched, proven: {prov.verdict})"
    )
    print(wheel.usage(dest, built))
    return 0


def _installed_wheel(args: argparse.Namespace, inst: install.Installed, built: wheel.Provenance) -> int:
    """A transformers installed from a ropefix wheel: its files are patched by the wheel, not by --install."""
    from ropefix.ship import wheel

    if args.to and _tag(args.to) not in (built.release, built.version):
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
    from ropefix.ship import install

    for path, state in sorted(report.files.items()):
        print(f"{state.value:<10} {path}")
    if verb == "reverted" and not report.files:
        print(
            f"nothing to revert: transformers {report.version} in {report.site} is not patched by ropefix "
            "(its model files match the wheel's RECORD)"
        )
    elif verb:
        print(f"{verb} {len(report.changed)} file(s) of transformers {report.version} in {report.site}")
    else:
        print(f"transformers {report.version} in {report.site}: {report.overall.value}")
    if verb == "patched":
        print(f"undo with: ropefix backport --revert --site {shlex.quote(str(report.site))}")
    return 1 if report.overall is install.FileState.MODIFIED and verb is None else 0
