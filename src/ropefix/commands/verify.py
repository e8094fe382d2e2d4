"""``ropefix verify [PATH]``: reproduce on the unpatched tree, prove the fix on a patched copy."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ropefix.prove.suite import PROFILES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify",
        help="reproduce the bug on simulated devices, fix a copy, and prove the copy (per model and rule)",
    )
    p.add_argument(
        "path", nargs="?", type=Path, help="a transformers checkout or package folder (default: the importable one)"
    )
    p.add_argument(
        "--models", nargs="+", metavar="MODEL", help="model folders to verify (default: qwen2_vl qwen2_5_vl)"
    )
    p.add_argument("--profile", choices=sorted(PROFILES), default="ci", help="search depth (default: ci)")
    p.add_argument("--max-examples", type=int, help="override the profile's examples per search round")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ropefix.prove.verify import render, verify

    result = verify(args.path, args.models, args.profile, args.max_examples)
    print(json.dumps(result.to_json(), indent=2) if args.json else render(result))
    from ropefix.prove.status import Status

    return 0 if Status(result.status).passed else 1
