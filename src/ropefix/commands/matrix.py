"""``ropefix matrix``: run the transformers × torch tox matrix and write its reports.

Also: ``--emit-gha [PATH]`` (a GitHub Actions workflow of the same envs), ``--merge DIR`` (reports
from results CI jobs wrote), ``--sync-tox`` (regenerate tox.ini's factor lists from a scan).
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from ropefix import extras, proc, ui
from ropefix.commands._args import positive_float, positive_int
from ropefix.errors import RopefixError
from ropefix.files import atomic_write
from ropefix.matrix import gha, report, runner, toxenv


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("matrix", help="run the transformers × torch tox matrix; write json/md/svg/png/junit")
    p.add_argument("--label", action="append", help="tox label to run: quick (CI-sized, default) or full; repeatable")
    p.add_argument("--envs", nargs="+", default=[], help="tox envs to run (names or comma lists), e.g. tf457-torch213")
    p.add_argument(
        "--parallel", type=positive_int, default=1, metavar="N", help="envs run at the same time (default 1)"
    )
    p.add_argument("--tox-ini", type=Path, default=Path("tox.ini"), help="the tox.ini holding the matrix")
    p.add_argument("--out", type=Path, default=Path("out"), help="where matrix.* and matrix/<env>.json go")
    p.add_argument(
        "--timeout", type=positive_float, default=None, metavar="S", help="give up on one env after S seconds"
    )
    p.add_argument(
        "--emit-gha",
        nargs="?",
        const=Path(gha.DEFAULT_PATH),
        type=Path,
        metavar="PATH",
        help=f"write a GitHub Actions workflow of the label's envs instead of running (default {gha.DEFAULT_PATH})",
    )
    p.add_argument("--merge", type=Path, metavar="DIR", help="write reports from env results under DIR (CI jobs)")
    p.add_argument("--sync-tox", action="store_true", help="rewrite tox.ini's factor lists from a scan")
    p.add_argument("--scan", type=Path, metavar="FILE", help="with --sync-tox: a `ropefix scan --json` output")
    p.add_argument("--torch", default=",".join(toxenv.TORCHES), help="with --sync-tox: torch releases, comma list")
    p.add_argument(
        "verify_args",
        nargs=argparse.REMAINDER,
        metavar="-- VERIFY_ARGS",
        help="after --: passed to verify in every env, e.g. -- --models qwen2_vl --profile deep",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    extras.require("tox")  # every mode asks tox for the env list; run as `python -m tox`, so no import fails first
    tox_ini = args.tox_ini.resolve()
    if not tox_ini.is_file():
        raise RopefixError(f"No tox.ini at {tox_ini}. Run from the kit's checkout or pass --tox-ini PATH.")
    if args.sync_tox:
        return _sync_tox(tox_ini, args.scan, [t for t in args.torch.split(",") if t])
    if args.emit_gha is not None:
        return _emit_gha(tox_ini, args.emit_gha, (args.label or ["quick"])[0])
    if args.merge is not None:
        m = runner.merge(args.merge, toxenv.all_specs(tox_ini))
    else:
        envs = [e for item in args.envs for e in item.split(",") if e]
        labels = args.label if args.label is not None else ([] if envs else ["quick"])
        p = runner.plan(tox_ini, labels, envs)
        for label in p.unknown_labels:
            ui.info(f"matrix: tox.ini has no env labelled {label!r}; it is reported as unknown, the run goes on")
        if not p.specs and not p.unknown_envs:
            raise RopefixError(
                f"Nothing to run: tox.ini has no env under {', '.join(labels)}. Use --label quick or --label full, "
                f"or name envs with --envs (list them with `tox -c {shlex.quote(str(tox_ini))} list`)."
            )
        wheel = None
        if p.specs and (tox_ini.parent / "pyproject.toml").is_file():
            ui.info("matrix: building the kit's wheel once for every env")
            wheel = runner.build_kit_wheel(tox_ini.parent, args.out.resolve() / "matrix" / "_kit")
        opts = runner.RunOptions(
            tox_ini,
            args.out.resolve() / "matrix",
            args.parallel,
            wheel,
            args.timeout,
            verify_args=tuple(a for a in args.verify_args if a != "--"),
        )
        m = runner.run(p, opts)
    for path in report.write_all(m, args.out):
        print(path)
    ui.info(f"matrix: {'PASS' if m.passed else 'FAIL'}; table in {args.out / 'matrix.md'}")
    return 0 if m.passed else 1


def _emit_gha(tox_ini: Path, dest: Path, label: str) -> int:
    envs = toxenv.list_envs(tox_ini, label)
    if not envs:
        raise RopefixError(
            f"tox.ini has no env labelled {label!r}, so the workflow would be empty. Use quick or full."
        )
    atomic_write(dest, gha.render_workflow(envs, label))
    print(dest)
    return 0


def _sync_tox(tox_ini: Path, scan_file: Path | None, torches: list[str]) -> int:
    if scan_file is not None:
        try:
            data = json.loads(scan_file.read_text())
        except (OSError, ValueError) as e:
            raise RopefixError(
                f"Could not read the scan result {scan_file}: {e}. Pass a `ropefix scan --json` output."
            )
    else:
        ui.info("matrix: scanning 4.45-latest (ropefix scan) to choose the releases")
        done = proc.run([proc.python(), "-m", "ropefix", "scan", "--versions", "4.45-latest", "--json"], check=True)
        data = json.loads(done.out)
    from ropefix.fix.rules import REGISTRY
    from ropefix.prove.verify import DEFAULT_MODELS  # quick must hold a release where verify's models are affected

    # The release axis follows the mission's rule (rope-deltas); every cell verifies all rules.
    rule = next(iter(REGISTRY))
    scan = toxenv.parse_scan(data, rule=rule)
    try:
        focus = toxenv.parse_scan(data, DEFAULT_MODELS, rule)
        each = [toxenv.parse_scan(data, (m,), rule) for m in DEFAULT_MODELS]
        complete = {v: all(e.get(v, False) for e in each) for v in scan}
    except RopefixError:
        focus = complete = None
    sel = toxenv.select_releases(scan, focus, complete)
    quick_torch = toxenv.QUICK_TORCH if toxenv.QUICK_TORCH in torches else torches[-1]
    text = tox_ini.read_text()
    new = toxenv.replace_block(text, toxenv.render_block(sel, torches, quick_torch))
    if new != text:
        atomic_write(tox_ini, new)
    print(f"{tox_ini}: full = {', '.join(sel.full)}; quick = {', '.join(sel.quick)}; torch = {', '.join(torches)}")
    return 0
