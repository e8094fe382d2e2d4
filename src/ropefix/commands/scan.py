"""``ropefix scan [PATH | --versions SPEC] [--json]``: every rule's sites, per model and file."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from ropefix import ui
from ropefix.commands import _args
from ropefix.errors import RopefixError
from ropefix.fix import engine
from ropefix.fix.rules import AFFECTED, FIXED, REGISTRY, STATUSES, UNKNOWN, UNREADABLE, select


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "scan",
        help="find every rope_deltas device hazard in a transformers tree or across releases",
        description="PATH: a transformers checkout (with src/transformers) or an installed transformers "
        "package folder. --versions runs over releases from the cache (e.g. 4.45-latest: the latest "
        "patch of each minor) and prints one row per release and model, one column per rule.",
    )
    p.add_argument("path", nargs="?", type=Path, metavar="PATH")
    p.add_argument("--versions", metavar="SPEC", help="releases to scan instead of PATH (e.g. 4.45-latest)")
    _args.add_models(p, "only these model folders (e.g. qwen2_vl qwen2_5_vl)")
    p.add_argument("--rules", metavar="R,S", help=f"only these rules (default: all: {', '.join(REGISTRY)})")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if (args.path is None) == (args.versions is None):
        raise RopefixError(
            "Give either a PATH to scan or --versions SPEC (e.g. `ropefix scan --versions 4.45-latest`)."
        )
    models, rules = _args.models(args.models), _args.split(args.rules)
    if args.path is not None:
        report = engine.scan_tree(args.path, models=models, rules=rules)
        print(json.dumps(report.to_json(), indent=1) if args.json else render(report))
        return 1 if report.with_status(UNREADABLE) else 0
    from ropefix.releases import sources  # the network and the cache only when releases are asked for

    reports: dict[str, engine.ScanReport] = {}
    for version in ui.progress(sources.resolve(args.versions), "scan"):
        reports[version] = engine.scan_tree(sources.release_tree(version), models=models, rules=rules)
    if args.json:
        print(json.dumps({v: r.to_json() for v, r in reports.items()}, indent=1))
    else:
        print(table(reports, [r.name for r in select(rules)]))
    return 1 if any(r.with_status(UNREADABLE) for r in reports.values()) else 0


def render(report: engine.ScanReport) -> str:
    out: list[str] = []
    current = None
    width = max(len(r) for r in REGISTRY)
    for s in report.sites:
        if (s.model, s.file) != current:
            current = (s.model, s.file)
            out.append(f"{s.model}  {s.file}")
        out.append(f"  {s.line:>6}  {s.status:<13} {s.rule:<{width}} {s.shape:<30} {s.code[:70]}")
        if s.reason:
            out.append(f"{'':>8}  {'':<13} because {s.reason}")
    counts = ", ".join(f"{len(report.with_status(st))} {st}" for st in STATUSES)
    out.append(f"{counts} site(s) in {len({s.file for s in report.sites})} of {report.files_scanned} model file(s)")
    if report.affected:
        out.append(f"fix them with: ropefix apply {shlex.quote(report.root)}")
    return "\n".join(out)


# --- the release table ----------------------------------------------------------------------------

LEGEND = (
    "A<n>: n sites the rule rewrites (affected)   ?<n>: shapes the rule does not judge (unknown-shape)\n"
    "!<n>: unreadable files (every rule)   fixed: every site already on the right device\n"
    "safe: the values never meet another device   -: no site"
)


def cell(sites: list[engine.Site]) -> str:
    """One model's sites of one rule in one release, as the legend spells them."""
    if not sites:
        return "-"
    n = {st: sum(s.status == st for s in sites) for st in STATUSES}
    parts = [f"{mark}{n[st]}" for mark, st in (("A", AFFECTED), ("?", UNKNOWN), ("!", UNREADABLE)) if n[st]]
    return " ".join(parts) or ("fixed" if n[FIXED] else "safe")


def table(reports: dict[str, engine.ScanReport], rules: list[str]) -> str:
    """One row per release and model with sites, one column per rule; a legend; the latest release's verdict."""
    rows: list[list[str]] = []
    for v, report in reports.items():
        by_model: dict[str, list[engine.Site]] = {}
        for s in report.sites:
            by_model.setdefault(s.model, []).append(s)
        first = True
        for model, sites in sorted(by_model.items()):
            # an unreadable file is no rule's: it stands in every rule's column
            rows.append(
                [v if first else "", model, *(cell([s for s in sites if s.rule in (r, "all")]) for r in rules)]
            )
            first = False
        if first:
            rows.append([v, "(no site)", *("-" for _ in rules)])
    head = ["release", "model", *rules]
    widths = [max(len(r[k]) for r in [head, *rows]) for k in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows]]
    lines += [LEGEND, verdict(reports, rules)]
    return "\n".join(lines)


def verdict(reports: dict[str, engine.ScanReport], rules: list[str]) -> str:
    """Whether the latest release scanned is safe, in one line: per rule, what is left to fix or judge, and where."""
    if not reports:
        return "no release scanned"
    latest, report = list(reports.items())[-1]
    open_sites = [s for s in report.sites if s.status in (AFFECTED, UNKNOWN, UNREADABLE)]
    clean = [r for r in rules if not any(s.rule in (r, "all") for s in open_sites)]
    if not open_sites:
        return f"latest release scanned, {latest}: safe (no affected, unknown-shape or unreadable site)"
    where: dict[tuple[str, str], set[str]] = {}
    for s in open_sites:  # an unreadable file is listed once, under "all"
        where.setdefault((s.rule, s.status), set()).add(s.model)
    parts = [f"{rule} {status} in {', '.join(sorted(ms))}" for (rule, status), ms in sorted(where.items())]
    tail = f" ({', '.join(clean)}: safe)" if clean else ""
    return f"latest release scanned, {latest}: NOT safe: {'; '.join(parts)}{tail}"
