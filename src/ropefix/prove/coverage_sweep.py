"""Coverage across transformers releases: ``python -m ropefix.prove.coverage`` once per release, each in
that release's interpreter (``ropefix.releases.relenv``), then one Markdown report (docs/coverage.md).

    python -m ropefix.prove.coverage_sweep [--versions 4.45-latest] [--parallel 2] [--out out/coverage]
                                           [--write docs/coverage.md] [--force]

Each release's JSON is kept in ``--out`` (written whole or not at all) and reused by later runs
unless ``--force``: an interrupted sweep resumes where it stopped. ``render`` is pure.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ropefix import files, proc, ui
from ropefix.errors import RopefixError
from ropefix.prove.coverage import (
    CPU,
    CPU_KERNEL,
    DEVICE,
    MISMATCH,
    NOT_A_MODALITY,
    OK,
    SIM_ERROR,
    SIMULATOR,
    UNSUPPORTED,
    Coverage,
)

DEFAULT_VERSIONS = "4.45-latest"
FAILURES = (CPU, CPU_KERNEL, DEVICE, SIMULATOR, SIM_ERROR, MISMATCH)
_MEANING = {
    CPU: "fails on the plain CPU: a transformers bug a user with this processor output meets (or a builder bug)",
    CPU_KERNEL: "fails on the plain CPU in a kernel that lacks a dtype",
    DEVICE: "fails only on one simulated accelerator, with PyTorch's device-mismatch error: a finding for the lead",
    SIMULATOR: "fails only on the simulated accelerator, in a CPU kernel CUDA has: a simulator gap (src/ropefix/devices)",
    SIM_ERROR: "fails only on the simulated accelerator, otherwise",
    MISMATCH: "runs on both, outputs differ",
}


def run_release(version: str, out_dir: Path, force: bool = False) -> Coverage:
    """That release's coverage: from ``out_dir/<version>.json`` when kept, else computed in its interpreter."""
    from ropefix.releases import relenv

    dest = out_dir / f"{version}.json"
    if dest.exists() and not force:
        return Coverage.from_json(json.loads(dest.read_text()))
    py = relenv.python_for(version)
    kit_src = Path(__file__).resolve().parents[2]
    env = {
        "PYTHONPATH": str(kit_src),
        "OMP_NUM_THREADS": "1",
        "TRANSFORMERS_VERBOSITY": "error",
        "PYTHONWARNINGS": "ignore",
    }
    ui.info(f"coverage: transformers {version} ...")
    cmd = [str(py), "-m", "ropefix.prove.coverage", "--all", "--json"]  # flagged or not: the scan changes
    done = proc.run(cmd, env=env, timeout=3 * 3600)
    if not done.ok:  # recorded (not kept: a later run retries it) and shown in the report; the sweep goes on
        last = (done.err.strip().splitlines() or ["no output"])[-1]
        ui.info(f"coverage: transformers {version} FAILED: {last}")
        return Coverage(version, "", [], error=f"the coverage process failed (exit {done.rc}): {last}"[:400])
    data = json.loads(done.out.strip().splitlines()[-1])
    files.atomic_write(dest, json.dumps(data, indent=1) + "\n")
    ui.info(f"coverage: transformers {version} done ({data.get('duration_s', 0):.0f}s)")
    return Coverage.from_json(data)


def sweep(versions: list[str], out_dir: Path, parallel: int = 2, force: bool = False) -> list[Coverage]:
    """Every release's coverage, ``parallel`` processes at a time, in release order."""
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        return list(pool.map(lambda v: run_release(v, out_dir, force), versions))


# ---------------------------------------------------------------- the report (pure)


def _ranges(items: list[str], order: list[str]) -> str:
    """``items`` as runs of consecutive releases of ``order``: "4.49.0–4.51.3, 5.0.0"."""
    from ropefix.prove.render import release_spans

    return release_spans(items, order, dash="–")


def _norm(text: str) -> str:
    """An error text with its numbers blanked, so one bug groups across sizes and releases."""
    return re.sub(r"\d+", "N", text)[:160]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def summary(results: list[Coverage]) -> dict[str, Any]:
    """The figures: (release x family) pairs built (flagged ones and all), cells judged, failures by class."""
    every = [(c.transformers, f) for c in results for f in c.families]
    fams = [(v, f) for v, f in every if f.flagged]
    built = [(v, f) for v, f in every if f.built]
    cells = [p for _, f in built for p in f.pairs if p.outcome != NOT_A_MODALITY]  # every family run
    by = defaultdict(int)
    for p in cells:
        by[p.outcome] += 1
    ran = [p for p in cells if p.outcome != UNSUPPORTED]
    return {
        "releases": len(results),
        "pairs": len(fams),
        "built": len([1 for _, f in fams if f.built]),
        "all_pairs": len(every),
        "all_built": len(built),
        "not_built": [(v, f.name, f.reason) for v, f in every if not f.built],
        "cells": len(cells),
        "cells_run": len(ran),
        "judged_cpu": len([p for p in ran if p.outcome not in (CPU, CPU_KERNEL)]),
        "ok": by[OK],
        "by_class": {k: by[k] for k in (*FAILURES, UNSUPPORTED)},
    }


def render(results: list[Coverage], command: str, commit: str, date: str) -> str:
    order = [c.transformers for c in results]
    s = summary(results)
    pct = 100 * s["built"] / max(1, s["pairs"])
    torch_versions = ", ".join(sorted({c.torch for c in results if c.torch}))
    out = [
        "# Tiny-model coverage across transformers releases",
        "",
        (
            f"Generated {date} by kit commit `{commit}` with `{command}` (torch {torch_versions}; "
            f"{s['releases']} releases: {order[0]} to {order[-1]}, the latest patch of each minor). Each release "
            "ran `python -m ropefix.prove.coverage --all --json` in its own interpreter: every family the builder "
            "discovers built tiny (flagged: the scan finds a site of any rule, affected or unknown-shape), then every "
            "call path x prompt kind run on the plain CPU and on one simulated accelerator (model and processor "
            "output on `cuda:0`)."
        ),
        "",
        "## Summary",
        "",
        (
            f"- (release x flagged family) pairs: **{s['pairs']}**; built: **{s['built']}** ({pct:.1f}%). "
            f"Every family the builder discovers (a modeling file mentioning `rope_deltas`, flagged or not): "
            f"**{s['all_pairs']}** pairs, built **{s['all_built']}**; not built: **{len(s['not_built'])}** "
            "(listed below, each with its reason). The tables below cover every family run."
        ),
        (
            f"- (release x family x call path x prompt kind) cells of the built families: **{s['cells']}** "
            f"(kinds a family's forward does not take are not counted); {s['by_class'][UNSUPPORTED]} are kinds the "
            f"forward takes but no processor-shaped prompt runs on the CPU (listed below); **{s['cells_run']}** ran."
        ),
        (
            f"- Judged on the CPU (the CPU run succeeds, so a placed run has a reference): **{s['judged_cpu']}** "
            f"of {s['cells_run']}; ok on both: **{s['ok']}**."
        ),
        "- Failures by class: " + "; ".join(f"`{k}` {s['by_class'][k]}" for k in FAILURES) + ".",
        "",
        "| class | meaning |",
        "| --- | --- |",
        *(f"| `{k}` | {v} |" for k, v in _MEANING.items()),
        f"| `{UNSUPPORTED}` | the forward takes this input, but the probe's processor-shaped prompt fails on the CPU |",
        "",
    ]
    out += _failed_runs(results)
    out += _not_built(s["not_built"], order)
    out += _per_release(results)
    out += _per_family(results, order)
    out += _failures(results, order)
    out += _unsupported(results, order)
    return "\n".join(out) + "\n"


def _failed_runs(results: list[Coverage]) -> list[str]:
    failed = [c for c in results if c.error]
    if not failed:
        return []
    out = ["## Releases whose coverage run failed", "", "| release | error |", "| --- | --- |"]
    return out + [f"| {c.transformers} | {_cell(c.error)} |" for c in failed] + [""]


def _not_built(rows: list[tuple[str, str, str]], order: list[str]) -> list[str]:
    out = ["## Families not built", ""]
    if not rows:
        return out + ["None.", ""]
    grouped: dict[tuple[str, str], list[str]] = defaultdict(list)
    for v, name, reason in rows:
        grouped[(name, _norm(reason))].append(v)
    out += ["| family | releases | reason |", "| --- | --- | --- |"]
    for (name, _), vs in sorted(grouped.items()):
        reason = next(r for v, n, r in rows if n == name and v in vs)
        out.append(f"| {name} | {_ranges(vs, order)} | {_cell(reason)} |")
    return out + [""]


def _per_release(results: list[Coverage]) -> list[str]:
    head = ["release", "families", "flagged", "built", "cells run", "ok", *FAILURES, UNSUPPORTED]
    out = ["## Per release", "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for c in results:
        fams = c.families
        cells = [p for f in fams for p in f.pairs if p.outcome != NOT_A_MODALITY]
        n = defaultdict(int)
        for p in cells:
            n[p.outcome] += 1
        ran = len([p for p in cells if p.outcome != UNSUPPORTED])
        row = [c.transformers, len(fams), len([f for f in fams if f.flagged]), len([f for f in fams if f.built])]
        row += [ran, n[OK]]
        row += [n[k] for k in (*FAILURES, UNSUPPORTED)]
        out.append("| " + " | ".join(str(x) for x in row) + " |")
    return out + [""]


def _per_family(results: list[Coverage], order: list[str]) -> list[str]:
    """Per family, runs of releases with the same prompt kinds."""
    kinds: dict[str, dict[str, str]] = defaultdict(dict)
    for c in results:
        for f in c.families:
            kinds[f.name][c.transformers] = ", ".join(f.kinds) if f.built else "not built"
    out = ["## Prompt kinds per family", "", "| family | releases | kinds built |", "| --- | --- | --- |"]
    for name, per in sorted(kinds.items()):
        by_kinds: dict[str, list[str]] = defaultdict(list)
        for v, k in per.items():
            by_kinds[k].append(v)
        for k, vs in sorted(by_kinds.items(), key=lambda kv: order.index(kv[1][0])):
            out.append(f"| {name} | {_ranges(vs, order)} | {k} |")
    return out + [""]


def _failures(results: list[Coverage], order: list[str]) -> list[str]:
    """Every failing cell, grouped by class, family, site and error (numbers blanked) across releases."""
    groups: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for c in results:
        for f in c.families:
            for p in f.pairs:
                if p.outcome not in FAILURES:
                    continue
                run = p.cpu if p.cpu and not p.cpu.ok else p.sim
                error, site = (run.error, run.site) if run else ("outputs differ", "")
                if run and run.hazard:
                    error = f"[{run.hazard}] {error}"
                g = groups.setdefault(
                    (p.outcome, f.name, site.split(":")[0], _norm(error)),
                    {"releases": [], "pairs": set(), "error": error, "site": site},
                )
                g["releases"].append(c.transformers)
                g["pairs"].add(f"{p.path}/{p.kind}")
    out = ["## Failures", "", "Grouped by class, family, file and error text (numbers blanked) across releases.", ""]
    if not groups:
        return out + ["None.", ""]
    out += ["| class | family | releases | cells (call path/kind) | error | innermost transformers frame |"]
    out += ["| --- | --- | --- | --- | --- | --- |"]
    rank = {k: i for i, k in enumerate(FAILURES)}
    for (cls, name, _, _), g in sorted(groups.items(), key=lambda kv: (rank[kv[0][0]], kv[0][1], kv[0][2])):
        pairs = ", ".join(sorted(g["pairs"]))
        out.append(
            f"| `{cls}` | {name} | {_ranges(g['releases'], order)} | {pairs} | {_cell(g['error'])} | {g['site']} |"
        )
    return out + [""]


def _unsupported(results: list[Coverage], order: list[str]) -> list[str]:
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}
    for c in results:
        for f in c.families:
            seen = set()
            for p in f.pairs:
                if p.outcome != UNSUPPORTED or p.kind in seen:
                    continue
                seen.add(p.kind)
                g = groups.setdefault((f.name, p.kind, _norm(p.reason)), {"releases": [], "reason": p.reason})
                g["releases"].append(c.transformers)
    out = [
        "## Unsupported prompt kinds",
        "",
        (
            "The forward takes the input, but the probe's processor-shaped prompt fails on the plain CPU (the last "
            "layout tried and its error)."
        ),
        "",
    ]
    if not groups:
        return out + ["None.", ""]
    out += ["| family | kind | releases | reason |", "| --- | --- | --- | --- |"]
    for (name, kind, _), g in sorted(groups.items()):
        out.append(f"| {name} | {kind} | {_ranges(g['releases'], order)} | {_cell(g['reason'])} |")
    return out + [""]


def _commit() -> str:
    from ropefix import git

    root = Path(__file__).resolve().parents[3]
    try:
        repo = git.open_repo(root)
        sha = repo.rev_parse("HEAD")[:12]
        # the kit's code decides the report (a rewritten docs/coverage.md does not make the run dirty)
        code = [p for p in repo.dirty_paths(untracked=False) if p.startswith(("src/", "scripts/"))]
        return sha + ("+dirty" if code else "")
    except RopefixError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ropefix.prove.coverage_sweep", description=__doc__.splitlines()[0])
    ap.add_argument("--versions", default=DEFAULT_VERSIONS, help="release spec (default: %(default)s)")
    ap.add_argument("--parallel", type=int, default=2, help="releases at a time (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=Path("out/coverage"), help="per-release JSON (kept, reused)")
    ap.add_argument("--write", type=Path, help="write the Markdown report here (e.g. docs/coverage.md)")
    ap.add_argument("--force", action="store_true", help="recompute releases whose JSON is kept")
    args = ap.parse_args(argv)
    from ropefix.releases import sources

    versions = sources.resolve(args.versions)
    results = sweep(versions, args.out, args.parallel, args.force)
    command = "python -m ropefix.prove.coverage_sweep " + " ".join(argv if argv is not None else sys.argv[1:])
    text = render(results, command.strip(), _commit(), datetime.date.today().isoformat())
    if args.write:
        files.atomic_write(args.write, text)
        ui.info(f"wrote {args.write}")
    else:
        sys.stdout.write(text)
    s = summary(results)
    ui.info(
        f"coverage: {s['built']}/{s['pairs']} (release x family) pairs built; {s['judged_cpu']}/{s['cells_run']} cells judged on the CPU"
    )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
