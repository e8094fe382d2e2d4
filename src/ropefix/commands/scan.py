"""``ropefix scan [PATH | --versions SPEC] [--json]``: every rule's sites, per model and file."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from ropefix import ui
from ropefix.errors import RopefixError
from ropefix.fix import engine
from ropefix.fix.rules import AFFECTED, FIXED, UNKNOWN


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "scan",
        help="find every rope_deltas device hazard in a transformers tree or across releases",
        description="PATH: a transformers checkout (with src/transformers) or an installed transformers "
        "package folder. --versions runs over releases from the cache (e.g. 4.45-latest: the latest "
        "patch of each minor) and prints a release x model table.",
    )
    p.add_argument("path", nargs="?", type=Path, metavar="PATH")
    p.add_argument("--versions", metavar="SPEC", help="releases to scan instead of PATH (e.g. 4.45-latest)")
    p.add_argument("--models", metavar="A,B", help="only these model folders (e.g. qwen2_vl,qwen2_5_vl)")
    p.add_argument("--rules", metavar="R,S", help="only these rules (default: all)")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    p.set_defaults(func=run)


def split(value: str | None) -> list[str] | None:
    """``a,b`` -> ["a", "b"]; None (the option was not given) means all. A value naming nothing is refused:
    it must not silently mean "all"."""
    if value is None:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise RopefixError(
            f"{value!r} names nothing. Give comma-separated names (e.g. --models qwen2_vl,qwen2_5_vl), or leave "
            "the option out for all."
        )
    return names


def run(args: argparse.Namespace) -> int:
    if (args.path is None) == (args.versions is None):
        raise RopefixError(
            "Give either a PATH to scan or --versions SPEC (e.g. `ropefix scan --versions 4.45-latest`)."
        )
    models, rules = split(args.models), split(args.rules)
    if args.path is not None:
        report = engine.scan_tree(args.path, models=models, rules=rules)
        print(json.dumps(report.to_json(), indent=1) if args.json else render(report))
        return 1 if report.with_status(engine.UNREADABLE) else 0
    from ropefix.releases import sources  # the network and the cache only when releases are asked for

    reports: dict[str, engine.ScanReport] = {}
    for version in ui.progress(sources.resolve(args.versions), "scan"):
        reports[version] = engine.scan_tree(sources.release_tree(version), models=models, rules=rules)
    if args.json:
        print(json.dumps({v: r.to_json() for v, r in reports.items()}, indent=1))
    else:
        print(table(reports))
    return 1 if any(r.with_status(engine.UNREADABLE) for r in reports.values()) else 0


def render(report: engine.ScanReport) -> str:
    out: list[str] = []
    current = None
    for s in report.sites:
        if (s.model, s.file) != current:
            current = (s.model, s.file)
            out.append(f"{s.model}  {s.file}")
        out.append(f"  {s.line:>6}  {s.status:<13} {s.rule:<12} {s.shape:<30} {s.code[:70]}")
    counts = {st: len(report.with_status(st)) for st in (AFFECTED, FIXED, UNKNOWN, engine.UNREADABLE)}
    unreadable = f", {counts[engine.UNREADABLE]} unreadable file(s)" if counts[engine.UNREADABLE] else ""
    out.append(
        f"{counts[AFFECTED]} affected, {counts[FIXED]} fixed, {counts[UNKNOWN]} unknown-shape site(s){unreadable} "
        f"in {len({s.file for s in report.sites})} of {report.files_scanned} model file(s)"
    )
    if counts[AFFECTED]:
        out.append(f"fix them with: ropefix apply {shlex.quote(report.root)}")
    return "\n".join(out)


def cell(counts: dict[str, int] | None) -> str:
    """``A2`` affected, ``ok`` all fixed, ``?1`` unknown shapes, ``!1`` unreadable files, ``-`` no site."""
    if not counts:
        return "-"
    parts = []
    if counts[AFFECTED]:
        parts.append(f"A{counts[AFFECTED]}")
    if counts[UNKNOWN]:
        parts.append(f"?{counts[UNKNOWN]}")
    if counts.get(engine.UNREADABLE):
        parts.append(f"!{counts[engine.UNREADABLE]}")
    return " ".join(parts) or "ok"


def table(reports: dict[str, engine.ScanReport]) -> str:
    per = {v: r.models() for v, r in reports.items()}
    models = sorted({m for counts in per.values() for m in counts})
    width = max([6, *(min(len(m), 12) for m in models)])
    head = f"{'release':<9}" + "".join(f" {m[:width]:>{width}}" for m in models)
    lines = [head]
    for v, counts in per.items():
        lines.append(f"{v:<9}" + "".join(f" {cell(counts.get(m)):>{width}}" for m in models))
    lines.append(
        "A<n>: affected sites, ?<n>: unknown shapes, !<n>: unreadable files, ok: every site fixed, -: no site"
    )
    return "\n".join(lines)
