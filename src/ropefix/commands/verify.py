"""``ropefix verify [PATH]``: reproduce on the unpatched tree, prove the proven rules' fix on a patched copy."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ropefix.commands import _args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify",
        help="reproduce the bug on simulated devices, fix a copy with the proven rules, prove the copy",
        description="Exit status 0 only when every family's verdict passes: reproduced-fixed, latent or "
        "not-affected, each with the number of call path x prompt pairs it judged. not-judged (too little "
        "compared) fails unless --allow-not-judged.",
    )
    p.add_argument(
        "path", nargs="?", type=Path, help="a transformers checkout or package folder (default: the importable one)"
    )
    _args.add_models(p, "families to verify (default: every family the scan flags in that release)")
    p.add_argument("--profile", choices=("ci", "dev", "deep"), default="ci", help="search depth (default: ci)")
    p.add_argument("--max-examples", type=_args.positive_int, help="override the profile's examples per search round")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.add_argument("--allow-not-judged", action="store_true", help="exit 0 even when a family is not judged")
    p.add_argument("--no-save", action="store_true", help="do not keep the report in the cache")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ropefix import ui
    from ropefix.prove import render, verdicts
    from ropefix.prove.verify import verify

    report = verify(args.path, _args.models(args.models), args.profile, args.max_examples)
    if not args.no_save and report.families:
        ui.info(f"verify: report kept in {verdicts.save(report)}")
    print(json.dumps(report.to_json(), indent=1) if args.json else render.text(report))
    return 0 if report.passed(args.allow_not_judged) else 1
