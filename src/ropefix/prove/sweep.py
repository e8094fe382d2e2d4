"""The full-history sweep: ``verify`` on every (release x flagged model family), resumable, in parallel.

plan (each release's tree is scanned; a cell per family the scan flags) -> run each cell (``ropefix
verify <tree> --models F --json`` in that release's own interpreter, ``ropefix.releases.relenv``) ->
merge the cells into one ``Report`` per release -> write the reports, a release x family table, the
findings table and a picture. Every finished cell is kept at once (``cells/<release>/<family>.json``,
written whole), so an interrupted sweep resumes from the cells it has; a cell whose verify crashed is
``not-judged`` with the reason and is tried again on the next run.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ropefix import proc, ui
from ropefix.errors import RopefixError
from ropefix.prove import verdicts
from ropefix.prove.verdict import FamilyReport, Report, State
from ropefix.store import Store

CELL_TIMEOUT_S = 2400


@dataclass(frozen=True)
class Cell:
    release: str
    family: str

    def __str__(self) -> str:
        return f"{self.release} {self.family}"


@dataclass(frozen=True)
class Options:
    out: Path
    profile: str = "ci"
    max_examples: int | None = None
    parallel: int = 2
    timeout_s: float = CELL_TIMEOUT_S


@dataclass
class Outcome:
    cell: Cell
    report: Report
    seconds: float
    reused: bool = False


@dataclass
class SweepResult:
    reports: dict[str, Report] = field(default_factory=dict)  # release -> merged report
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def cells(self) -> int:
        return len(self.outcomes)

    @property
    def reused(self) -> int:
        return sum(1 for o in self.outcomes if o.reused)

    @property
    def cell_seconds(self) -> float:
        """Every cell's verify time, summed (kept cells count with the time their run measured)."""
        return round(sum(o.seconds for o in self.outcomes), 1)

    def not_judged(self) -> list[tuple[Cell, str]]:
        return [
            (o.cell, o.report.families[0].reason or "not judged")
            for o in self.outcomes
            if o.report.families and o.report.families[0].state is State.NOT_JUDGED
        ]


def plan(releases: list[str], families: list[str] | None = None, store: Store | None = None) -> list[Cell]:
    """A cell per (release, family the scan flags there), oldest release first."""
    from ropefix.fix.engine import scan_tree
    from ropefix.releases import sources

    cells = []
    for release in releases:
        scan = scan_tree(sources.release_tree(release, store), store=store)
        flagged = sorted({s.model for s in scan.sites})
        cells += [Cell(release, f) for f in flagged if families is None or f in families]
    return cells


def cell_path(out: Path, cell: Cell) -> Path:
    return out / "cells" / cell.release / f"{cell.family}.json"


def run_cell(cell: Cell, opts: Options, store: Store | None = None) -> Report:
    """verify on one family of one release, in that release's interpreter; a crash is not-judged, with why."""
    from ropefix.releases import relenv, sources

    store = store or Store()
    py = relenv.python_for(cell.release, store)
    tree = sources.release_tree(cell.release, store)
    cmd = [py, "-m", "ropefix", "verify", tree, "--models", cell.family, "--json", "--no-save"]
    cmd += ["--profile", opts.profile] + (["--max-examples", str(opts.max_examples)] if opts.max_examples else [])
    kit_src = Path(__file__).resolve().parents[2]
    env = {"PYTHONPATH": str(kit_src), "OMP_NUM_THREADS": "1", "TRANSFORMERS_VERBOSITY": "error"}
    try:
        done = proc.run(cmd, env=env, timeout=opts.timeout_s)
        report = Report.from_json(json.loads(done.out), f"verify's report on {cell}")
        # report.kit: verify's kit_version, the checkout the cell imported, not what its interpreter has installed
        return Report(report.release, report.torch, report.kit, report.profile, report.families, report.duration_s)
    except (ValueError, RopefixError, OSError) as e:
        why = f"verify crashed: {_last_line(getattr(locals().get('done'), 'err', '') or str(e))}"
    except Exception as e:  # noqa: BLE001 - a timeout or anything else: the cell says so, the sweep goes on
        why = f"verify did not finish: {type(e).__name__}: {str(e)[:200]}"
    fam = FamilyReport(cell.family, State.NOT_JUDGED, reason=why)
    return Report(cell.release, "unknown", verdicts.kit_version(), opts.profile, (fam,))


def _crashed(report: Report) -> bool:
    fam = report.families[0]
    return fam.state is State.NOT_JUDGED and fam.reason.startswith(("verify crashed", "verify did not finish"))


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower()]
    return ((errors or lines or ["no output"])[-1])[:300]


def _load_cell(path: Path) -> Report | None:
    """A finished cell from an earlier run (None when absent; a foreign or damaged one is an error)."""
    if not path.exists():
        return None
    return Report.load(path)


def sweep(cells: list[Cell], opts: Options, store: Store | None = None) -> SweepResult:
    """Run every cell not finished before; merge per release. Progress on stderr, one line per cell."""
    from ropefix.files import atomic_write

    store = store or Store()
    start = time.monotonic()
    result = SweepResult()
    todo = []
    for cell in cells:
        kept = _load_cell(cell_path(opts.out, cell))  # only finished cells are ever kept
        if kept is not None:  # its seconds: the verify time the earlier run measured
            result.outcomes.append(Outcome(cell, kept, kept.duration_s, reused=True))
        else:
            todo.append(cell)
    if result.outcomes:
        ui.info(f"sweep: {len(result.outcomes)} of {len(cells)} cells kept from an earlier run; {len(todo)} to run")
    lock = threading.Lock()
    envs_ready: dict[str, threading.Lock] = {}

    def one(cell: Cell) -> Outcome:
        with lock:
            env_lock = envs_ready.setdefault(cell.release, threading.Lock())
        with env_lock:  # one relenv build per release, even with parallel cells
            from ropefix.releases import relenv

            relenv.python_for(cell.release, store)
        began = time.monotonic()
        report = run_cell(cell, opts, store)
        outcome = Outcome(cell, report, round(time.monotonic() - began, 1))
        if not _crashed(report):
            atomic_write(cell_path(opts.out, cell), report.dumps())  # a finished cell survives an interruption
        return outcome

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, opts.parallel)) as pool:
        futures = {pool.submit(one, c): c for c in todo}
        for i, fut in enumerate(concurrent.futures.as_completed(futures), 1):
            o = fut.result()
            result.outcomes.append(o)
            elapsed = time.monotonic() - start
            eta = elapsed / i * (len(todo) - i)
            fam = o.report.families[0]
            ui.info(
                f"[{i}/{len(todo)}] {o.cell}: {fam.state.value}, {fam.judged} pairs judged ({o.seconds:.0f}s; "
                f"{elapsed / 60:.1f} min elapsed, ~{eta / 60:.0f} min left)"
            )
    result.outcomes.sort(key=lambda o: cells.index(o.cell))
    result.reports = merge(result.outcomes)
    result.seconds = round(time.monotonic() - start, 1)
    return result


def merge(outcomes: list[Outcome]) -> dict[str, Report]:
    by_release: dict[str, list[Outcome]] = {}
    for o in outcomes:
        by_release.setdefault(o.cell.release, []).append(o)
    merged = {}
    for release, outs in by_release.items():
        torch = next((o.report.torch for o in outs if o.report.torch != "unknown"), "unknown")
        first = outs[0].report
        families = tuple(sorted((f for o in outs for f in o.report.families), key=lambda f: f.family))
        duration = round(sum(o.report.duration_s for o in outs), 1)
        merged[release] = Report(release, torch, first.kit, first.profile, families, duration)
    return merged


def write(result: SweepResult, opts: Options) -> list[Path]:
    """Per-release reports, the release x family table, the findings table, timings and a picture."""
    from ropefix.files import atomic_write
    from ropefix.prove import render

    written = []
    for release, report in result.reports.items():
        dest = opts.out / "verdicts" / f"transformers-{release}.json"
        atomic_write(dest, report.dumps())
        written.append(dest)
    reports = list(result.reports.values())
    table = render.sweep_markdown(reports, result.cell_seconds, result.not_judged(), result.seconds, result.reused)
    for name, text in (("sweep.md", table), ("findings.md", render.findings_table(reports))):
        atomic_write(opts.out / name, text)
        written.append(opts.out / name)
    timings = {
        "seconds": result.seconds,
        "cell_seconds": result.cell_seconds,
        "reused": result.reused,
        "cells": [{"cell": str(o.cell), "seconds": o.seconds, "reused": o.reused} for o in result.outcomes],
    }
    atomic_write(opts.out / "sweep.json", json.dumps(timings, indent=1))
    written.append(opts.out / "sweep.json")
    try:
        from ropefix.matrix.report import draw_grid

        rows = list(result.reports)
        cols = sorted({f.family for r in reports for f in r.families})
        states = {(r.release, f.family): f.state for r in reports for f in r.families}
        draw_grid(
            rows, cols, states, "ropefix sweep: release x model family", opts.out / "sweep.svg", opts.out / "sweep.png"
        )
        written += [opts.out / "sweep.svg", opts.out / "sweep.png"]
    except ModuleNotFoundError as e:  # the picture needs matplotlib (the matrix extra); the tables do not
        ui.info(f"sweep: no picture ({e.name} is not installed)")
    return written


def publish(result: SweepResult, dest: Path) -> list[Path]:
    """Copy the merged reports into the kit's committed verdicts (a source checkout's src/ropefix/data/verdicts)."""
    from ropefix.files import atomic_write

    if not os.access(dest, os.W_OK):
        raise RopefixError(f"{dest} is not writable; publish from a source checkout of ropefix.")
    out = []
    for release, report in result.reports.items():
        path = dest / f"transformers-{release}.json"
        atomic_write(path, report.dumps())
        out.append(path)
    return out
