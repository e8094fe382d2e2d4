"""Coverage of the tiny models: every flagged family built, every (call path x prompt kind) pair run.

In the current interpreter (one transformers release), for each model family the scan flags (a
site of any rule, affected or unknown-shape) and the tiny-model builder: build it, then run every
call path of ``ropefix.prove.callpaths`` with every prompt kind the path takes, twice:

- on the plain CPU (no simulator): a failure here is a builder or input bug, a CPU-kernel gap, or a
  genuine transformers bug a user with that processor output meets;
- on one simulated accelerator (``ropefix.devices.simulate(1)``; model ``.to("cuda:0")``, the
  processor output moved with ``BatchFeature.to`` semantics): a failure only here is a
  single-accelerator device finding for the lead, or a simulator gap (a CUDA kernel the CPU lacks,
  such as integer ``torch.histc``) for the simulator's owners. Nothing is worked around.

``python -m ropefix.prove.coverage [--model M ...] [--all] [--json]``; ``coverage_sweep`` runs it for
every release (one process each, through that release's interpreter) and writes docs/coverage.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from ropefix.errors import RopefixError

# outcome of one (family, call path, prompt kind)
OK = "ok"
NOT_A_MODALITY = "n/a"  # the family's forward takes no such input: not a pair of this family
UNSUPPORTED = "unsupported"  # the forward takes it, but no processor-shaped prompt runs on the CPU (probe's reason)
CPU = "cpu"  # fails on the plain CPU
CPU_KERNEL = "cpu-kernel"  # ... because a CPU kernel lacks a dtype
DEVICE = "device"  # fails only on the simulated accelerator, with PyTorch's device-mismatch error: a finding
SIMULATOR = "simulator"  # fails only there, in a CPU kernel CUDA has (the simulator runs CUDA code paths on the CPU)
SIM_ERROR = "sim-error"  # fails only there, otherwise
MISMATCH = "mismatch"  # both run, outputs differ
OUTCOMES = (OK, CPU, CPU_KERNEL, DEVICE, SIMULATOR, SIM_ERROR, MISMATCH, UNSUPPORTED, NOT_A_MODALITY)
_KERNEL_GAP = "not implemented for"  # PyTorch's "X" not implemented for 'Long' (a dtype a kernel lacks)


@dataclass
class Run:
    ok: bool
    error: str = ""
    site: str = ""  # innermost transformers frame, relative to the package: "models/x/modeling_x.py:123"
    hazard: str = ""  # for a device error: the hazard catalogue's name for that frame (ropefix.fix.hazards)


@dataclass
class Pair:
    path: str
    kind: str
    outcome: str
    cpu: Run | None = None
    sim: Run | None = None
    reason: str = ""  # for unsupported / n/a: why


@dataclass
class FamilyCoverage:
    name: str
    flagged: bool
    built: bool
    reason: str = ""  # why it is not built
    model_class: str = ""
    kinds: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    pairs: list[Pair] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class Coverage:
    transformers: str
    torch: str
    families: list[FamilyCoverage]
    duration_s: float = 0.0
    error: str = ""  # the coverage run itself failed (the sweep records it and goes on)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(d: dict[str, Any]) -> Coverage:
        fams = []
        for f in d["families"]:
            pairs = [
                Pair(**{**p, "cpu": p["cpu"] and Run(**p["cpu"]), "sim": p["sim"] and Run(**p["sim"])})
                for p in f["pairs"]
            ]
            fams.append(FamilyCoverage(**{**f, "pairs": pairs}))
        return Coverage(d["transformers"], d["torch"], fams, d.get("duration_s", 0.0), d.get("error", ""))


# ---------------------------------------------------------------- what to cover


def flagged_families(pkg: str | None = None) -> list[str]:
    """Model folders of the importable transformers (or ``pkg``) where the scan finds a site of any rule,
    affected or unknown-shape."""
    from pathlib import Path

    from ropefix.fix.engine import scan_tree
    from ropefix.fix.rules import AFFECTED, UNKNOWN

    if pkg is None:
        import transformers

        pkg = os.path.dirname(os.path.abspath(transformers.__file__))
    report = scan_tree(Path(pkg))
    return sorted({s.model for s in report.sites if s.status in (AFFECTED, UNKNOWN)})


def prompt_for(tiny: Any, kind: str) -> Any:
    """The prompt a kind is covered with: two rows padded on the left (as generation pads), a two-patch
    video at 2 fps, clips of different lengths."""
    from ropefix.prove.prompts import Prompt

    m = tiny.merge
    rows = min(2, tiny.max_batch or 2)
    video = "video" in kind
    return Prompt(kind, batch=rows, length=5, pad=2 if rows > 1 else 0, grid=(2 if video else 1, m, 2 * m))


# ---------------------------------------------------------------- running


def _run(fn: Any, root: str) -> tuple[Run, Any]:
    from ropefix.fix import hazards
    from ropefix.prove.suite import is_device_error, site_of

    try:
        return Run(True), fn()
    except Exception as e:  # noqa: BLE001 - every failure is recorded with its site, none dropped
        where, site = site_of(e.__traceback__, root)
        hazard = hazards.classify(site) if is_device_error(e) else ""
        return Run(False, f"{type(e).__name__}: {' '.join(str(e).split())}"[:300], where, hazard), None


def _classify(cpu: Run, sim: Run | None, same: bool | None) -> str:
    from ropefix.prove.suite import DEVICE_ERRORS

    if not cpu.ok:
        return CPU_KERNEL if _KERNEL_GAP in cpu.error else CPU
    assert sim is not None
    if not sim.ok:
        if any(t in sim.error for t in DEVICE_ERRORS):
            return DEVICE
        return SIMULATOR if _KERNEL_GAP in sim.error else SIM_ERROR
    return OK if same else MISMATCH


def cover_pair(tiny: Any, path: str, kind: str, root: str) -> Pair:
    """One (call path, prompt kind) on the plain CPU, then on one simulated accelerator."""
    import copy

    from ropefix import devices
    from ropefix.prove import callpaths, prompts

    shape = callpaths.Shape(max_new_tokens=2, num_beams=2, num_return_sequences=2)
    inputs = prompts.inputs(tiny, prompt_for(tiny, kind))
    cpu, base = _run(lambda: callpaths.call(path, tiny.model, inputs, shape), root)
    if not cpu.ok:
        return Pair(path, kind, _classify(cpu, None, None), cpu)

    def placed() -> Any:
        with devices.simulate(n=1, kind="cuda"):
            model = copy.deepcopy(tiny.model).to("cuda:0")
            return callpaths.call(path, model, callpaths.to_device(inputs, "cuda:0"), shape).cpu()

    sim, out = _run(placed, root)
    same = sim.ok and _same(out, base, inputs["attention_mask"])
    return Pair(path, kind, _classify(cpu, sim, same), cpu, sim)


def _same(out: Any, base: Any, mask: Any) -> bool:
    """Bit-identical results; per-position outputs (logits) compared at real tokens only: transformers
    takes device-type branches for padding (sdpa unmasks fully padded rows on cuda), so the values at
    padded positions differ between the CPU and an accelerator by design."""
    import torch

    if out.shape != base.shape:
        return False
    if out.dim() >= 2 and tuple(out.shape[:2]) == tuple(mask.shape):
        keep = mask.bool()
        return bool(torch.equal(out[keep], base[keep]))
    return bool(torch.equal(out, base))


def cover_family(name: str, flagged: bool, root: str) -> FamilyCoverage:
    from ropefix.prove import callpaths, tinymodels

    start = time.monotonic()
    try:
        tiny = tinymodels.build(name)
    except RopefixError as e:
        return FamilyCoverage(name, flagged, False, str(e), seconds=round(time.monotonic() - start, 1))
    out = FamilyCoverage(name, flagged, True, "", tiny.family.model_class, list(tiny.kinds), list(tiny.notes))
    from ropefix.prove.prompts import KINDS

    for path in callpaths.PATHS.values():
        for kind in (k for k in KINDS if k in path.kinds):
            if kind in tiny.kinds:
                out.pairs.append(cover_pair(tiny, path.name, kind, root))
                continue
            why = _why_not(tiny, kind)
            outcome = NOT_A_MODALITY if "takes no" in why else UNSUPPORTED
            out.pairs.append(Pair(path.name, kind, outcome, reason=why))
    out.seconds = round(time.monotonic() - start, 1)
    return out


def _why_not(tiny: Any, kind: str) -> str:
    """The probe's notes on a kind the build lacks (a mixed kind lacks what either part lacks)."""
    parts = [kind] + ([] if "+" not in kind else [p for p in kind.split("+") if p not in tiny.kinds])
    for part in reversed(parts):
        notes = [n for n in tiny.notes if n.split(" ")[0].split(":")[0] == part]
        if notes:
            return notes[-1]
    return "not probed"


def cover(models: list[str] | None = None, all_discovered: bool = False, scan: bool = True) -> Coverage:
    """Coverage of ``models`` (default: the scan's flagged families) in the importable transformers."""
    import torch
    import transformers

    from ropefix.prove import tinymodels

    start = time.monotonic()
    root = os.path.dirname(os.path.abspath(transformers.__file__))
    found, skipped = tinymodels.discover()
    flagged = set(flagged_families(root)) if scan else set()
    candidates = {f.name for f in found} | {s.name for s in skipped}  # skipped: listed with the reason
    names = models or sorted(flagged | (candidates if all_discovered or not scan else set()))
    fams = []
    for name in names:
        if name not in {f.name for f in found}:
            why = next((s.reason for s in skipped if s.name == name), "its modeling file does not mention rope_deltas")
            fams.append(FamilyCoverage(name, name in flagged, False, f"not discovered: {why}"))
            continue
        _progress(f"coverage {transformers.__version__}: {name}")
        fams.append(cover_family(name, name in flagged or not scan, root))
    return Coverage(transformers.__version__, torch.__version__, fams, round(time.monotonic() - start, 1))


def _progress(msg: str) -> None:
    from ropefix import ui

    ui.info(msg)


# ---------------------------------------------------------------- text


def render(cov: Coverage) -> str:
    lines = [f"transformers {cov.transformers}, torch {cov.torch} ({cov.duration_s:.0f}s)"]
    for f in cov.families:
        if not f.built:
            lines.append(f"{f.name}: NOT BUILT: {f.reason}")
            continue
        lines.append(f"{f.name}: built ({f.model_class}); kinds {', '.join(f.kinds)}")
        for p in f.pairs:
            if p.outcome in (UNSUPPORTED, NOT_A_MODALITY):
                lines.append(f"  {p.path} / {p.kind}: {p.outcome}: {p.reason}")
                continue
            lines.append(f"  {p.path} / {p.kind}: {p.outcome}" + _detail(p))
    return "\n".join(lines)


def _detail(p: Pair) -> str:
    run = p.cpu if p.cpu and not p.cpu.ok else p.sim if p.sim and not p.sim.ok else None
    return f": {run.error} at {run.site}" if run else ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ropefix.prove.coverage", description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", help="a model folder (repeatable); default: the flagged ones")
    ap.add_argument("--all", action="store_true", help="every discovered family, flagged or not")
    ap.add_argument("--no-scan", action="store_true", help="skip the scan: cover every discovered family")
    ap.add_argument("--json", action="store_true", help="JSON on stdout")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    cov = cover(args.model, all_discovered=args.all, scan=not args.no_scan)
    if args.json:
        json.dump(cov.to_json(), sys.stdout)
        print()
    else:
        print(render(cov))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
