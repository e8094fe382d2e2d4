"""``verify``: the reproducer on the unpatched tree, the suite on a patched copy, one result per model and rule.

The two trees never share a process: each suite run is ``python -m ropefix.prove.suite`` with the tree
first on ``PYTHONPATH``. The patched tree is a copy of the package (``apply_tree`` on the copy);
the tree given is never modified. The result keeps "latent" (the bad pattern is present, no layout
reproduces it) apart from "reproduced".
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ropefix import proc, ui
from ropefix.errors import RopefixError
from ropefix.prove.status import Status
from ropefix.prove.suite import PROFILES, Failure, SuiteResult

DEFAULT_MODELS = ("qwen2_vl", "qwen2_5_vl")
# worst first: the run's status is the worst of its models'
ORDER = [
    Status.FIX_FAILED,
    Status.REPRODUCED_OTHER_HAZARDS,
    Status.REPRODUCED_FIXED,
    Status.LATENT,
    Status.NOT_AFFECTED,
    Status.SKIPPED,
]


@dataclass
class RuleResult:
    rule: str
    pattern_present: bool
    reproduced: bool
    failing_layout: dict[str, Any] | None
    failure_site: str | None
    fixed: bool | None
    example: str | None = None  # the shrunk failing example, in words


@dataclass
class ModelResult:
    model: str
    rules: list[RuleResult]
    other_findings: list[dict[str, Any]]
    examples_run: int
    status: str = Status.NOT_AFFECTED.value
    broken_paths: list[str] = field(default_factory=list)  # worked unpatched, fail patched on one device
    notes: list[str] = field(default_factory=list)


@dataclass
class VerifyResult:
    transformers: str
    torch: str
    status: str
    models: list[ModelResult]
    duration_s: float
    tree: str = ""
    profile: str = "ci"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- locating the tree


def package_of(path: Path | None) -> Path:
    """The transformers package folder to verify: under ``path``, or the importable one."""
    if path is None:
        spec = importlib.util.find_spec("transformers")
        if spec is None or not spec.origin:
            raise RopefixError(
                "No transformers is importable here. Install one, or pass a tree: `ropefix verify PATH`."
            )
        return Path(spec.origin).parent
    from ropefix.fix.engine import package_dir

    return package_dir(Path(path))[0]


def version_of(pkg: Path) -> str:
    m = re.search(r'^__version__\s*=\s*["\']([^"\']+)', (pkg / "__init__.py").read_text(), re.MULTILINE)
    return m.group(1) if m else "unknown"


# ---------------------------------------------------------------- running the suite in a subprocess


def run_suite(pkg: Path, models: list[str], profile: str, max_examples: int | None = None) -> list[dict[str, Any]]:
    """The suite's JSON for ``models``, run with the package folder ``pkg`` first on the path."""
    kit_src = Path(__file__).resolve().parents[2]
    env = {
        "PYTHONPATH": os.pathsep.join([str(pkg.parent), str(kit_src)]),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "TRANSFORMERS_VERBOSITY": "error",
        "PYTHONWARNINGS": "ignore",
    }
    cmd = [proc.python(), "-m", "ropefix.prove.suite", "--profile", profile]
    for m in models:
        cmd += ["--model", m]
    if max_examples:
        cmd += ["--max-examples", str(max_examples)]
    done = proc.run(cmd, env=env, cwd=tempfile.gettempdir())
    if not done.ok:
        raise RopefixError(f"The regression suite could not run against {pkg}.\n{done.describe()}")
    for line in done.err.splitlines():  # the search's own progress: each new failure site as it was found
        if any(line.startswith(f"{m}: ") for m in models):
            ui.info(f"  {line}")
    results = json.loads(done.out)
    for r in results:  # the subprocess must have imported the tree we meant
        where = r.get("transformers_path")
        if where and Path(where).resolve() != pkg.resolve():
            raise RopefixError(
                f"The suite imported transformers from {where}, not from {pkg}. Something on the path shadows "
                "it (a .pth file or PYTHONPATH); remove that and retry."
            )
    return results


def light_copy(pkg: Path, dest: Path, models: list[str]) -> Path:
    """``dest/transformers``: real copies of ``models``' folders, symlinks for everything else.

    Only the model folders are ever rewritten, so a full copy (100+ MB) is not needed.
    """
    copy = dest / "transformers"
    copy.mkdir(parents=True)
    for entry in pkg.iterdir():
        if entry.name not in ("models", "__pycache__"):
            (copy / entry.name).symlink_to(entry)
    (copy / "models").mkdir()
    for entry in (pkg / "models").iterdir():
        if entry.name in models:
            shutil.copytree(entry, copy / "models" / entry.name, ignore=shutil.ignore_patterns("__pycache__"))
        elif entry.name != "__pycache__":
            (copy / "models" / entry.name).symlink_to(entry)
    return copy


def patched_copy(pkg: Path, models: list[str], dest: Path) -> tuple[Path, Any]:
    """A light copy of the package with the kit's fix applied to ``models``."""
    from ropefix.fix.engine import apply_tree

    present = [m for m in models if (pkg / "models" / m).is_dir()]
    copy = light_copy(pkg, dest, present)
    report = apply_tree(copy, models=present or None)
    return copy, report


# ---------------------------------------------------------------- turning results into verdicts


def _finding(f: Failure, tree: str) -> dict[str, Any]:
    return {
        "hazard": f.hazard,
        "site": f"transformers/{f.site}",
        "example": f.example.describe(),
        "tree": tree,
        "error": f.error,
        "code": f.code,
    }


def judge(
    model: str,
    rules: list[str],
    present: dict[str, bool],
    before: SuiteResult,
    after: SuiteResult | None,
    apply_error: str | None = None,
) -> ModelResult:
    """One model's verdict from the static scan and the two suite runs (pure)."""
    out_rules = []
    fix_failed = apply_error is not None
    broken = sorted(set(after.baseline_errors) - set(before.baseline_errors)) if after else []
    mismatch_after = [f for f in (after.failures if after else []) if f.hazard == "output-mismatch"]
    for rule in rules:
        hit = next((f for f in before.failures if f.hazard == rule), None)
        still = next((f for f in (after.failures if after else []) if f.hazard == rule), None)
        relevant = hit is not None or present.get(rule, False)
        fixed = None
        if relevant and after is not None:
            fixed = still is None and not broken and not mismatch_after
        if relevant and (after is None or fixed is False):
            fix_failed = True
        out_rules.append(
            RuleResult(
                rule,
                present.get(rule, False),
                hit is not None,
                hit.example.layout if hit else None,
                f"transformers/{hit.site}" if hit else None,
                fixed,
                hit.example.describe() if hit else None,
            )
        )
    others = [_finding(f, "unpatched") for f in before.failures if f.hazard not in rules]
    seen = {(o["hazard"], o["site"]) for o in others}
    if after:
        others += [
            _finding(f, "patched")
            for f in after.failures
            if f.hazard not in rules and (f.hazard, f"transformers/{f.site}") not in seen
        ]
    reproduced = any(r.reproduced for r in out_rules)
    patched_other = after is not None and any(f.hazard not in rules for f in after.failures)
    if fix_failed:
        status = Status.FIX_FAILED
    elif reproduced and patched_other:
        status = Status.REPRODUCED_OTHER_HAZARDS
    elif reproduced:
        status = Status.REPRODUCED_FIXED
    elif any(r.pattern_present for r in out_rules):
        status = Status.LATENT
    else:
        status = Status.NOT_AFFECTED
    notes = [f"patch not applied: {apply_error}"] if apply_error else []
    notes += [
        f"fails on one simulated device, unpatched (not compared): {k}: {v}"
        for k, v in sorted(before.baseline_errors.items())
    ]
    examples = before.examples_run + (after.examples_run if after else 0)
    return ModelResult(model, out_rules, others, examples, status.value, broken, notes)


def overall(models: list[ModelResult]) -> Status:
    if not models:
        return Status.SKIPPED
    return min((Status(m.status) for m in models), key=ORDER.index)


# ---------------------------------------------------------------- the command's work


def verify(
    path: Path | None = None,
    models: list[str] | None = None,
    profile: str = "ci",
    max_examples: int | None = None,
) -> VerifyResult:
    """Reproduce on the tree at ``path`` (or the importable transformers), fix a copy, prove the copy."""
    from ropefix.fix.engine import scan_tree
    from ropefix.fix.rules import REGISTRY

    if profile not in PROFILES:
        raise RopefixError(f"Unknown profile {profile!r}; use one of {', '.join(PROFILES)}.")
    start = time.monotonic()
    pkg = package_of(path)
    chosen = list(models or DEFAULT_MODELS)
    missing = [m for m in chosen if not (pkg / "models" / m).is_dir()]
    if missing:
        raise RopefixError(
            f"{', '.join(missing)} not in transformers {version_of(pkg)} at {pkg}. "
            "Pick models that release has (see its models/ folder), e.g. --models qwen2_vl."
        )
    rules = list(REGISTRY)
    ui.info(f"verify: transformers {version_of(pkg)} at {pkg}; models {', '.join(chosen)}; profile {profile}")
    scan = scan_tree(pkg, models=chosen)
    present = {
        m: {r: any(s.model == m and s.rule == r and s.status == "affected" for s in scan.sites) for r in rules}
        for m in chosen
    }
    ui.info("verify: [1/3] reproducer on the unpatched tree")
    before = {r["model"]: r for r in run_suite(pkg, chosen, profile, max_examples)}
    with tempfile.TemporaryDirectory(prefix="ropefix-verify-") as tmp:
        apply_error = None
        ui.info("verify: [2/3] fixing a copy of the tree")
        try:
            copy, _report = patched_copy(pkg, chosen, Path(tmp))
        except RopefixError as e:
            apply_error, copy = str(e).splitlines()[0], None
        after: dict[str, Any] = {}
        if copy is not None:
            ui.info("verify: [3/3] suite on the patched copy")
            after = {r["model"]: r for r in run_suite(copy, chosen, profile, max_examples)}
    results = []
    torch_version = "unknown"
    for m in chosen:
        b = before.get(m, {})
        if "error" in b:
            results.append(ModelResult(m, [], [], 0, Status.SKIPPED.value, notes=[f"not built: {b['error']}"]))
            continue
        sb = SuiteResult.from_json(b)
        torch_version = sb.torch
        a = after.get(m)
        sa = SuiteResult.from_json(a) if a and "error" not in a else None
        results.append(judge(m, rules, present[m], sb, sa, apply_error))
    return VerifyResult(
        version_of(pkg),
        torch_version,
        overall(results).value,
        results,
        round(time.monotonic() - start, 2),
        str(pkg),
        profile,
    )


# ---------------------------------------------------------------- rendering


def _yn(v: bool | None) -> str:
    return "n/a" if v is None else "yes" if v else "no"


def render(r: VerifyResult) -> str:
    lines = [
        (
            f"transformers {r.transformers} (torch {r.torch}) at {r.tree}: {r.status} ({r.duration_s:.0f}s, "
            f"profile {r.profile})"
        )
    ]
    for m in r.models:
        lines.append(f"\n{m.model}: {m.status}, {m.examples_run} examples run")
        for rr in m.rules:
            lines.append(
                f"  rule {rr.rule}: pattern present {_yn(rr.pattern_present)}, reproduced "
                f"{_yn(rr.reproduced)}, fixed {_yn(rr.fixed)}"
            )
            if rr.reproduced:
                lines.append(f"    at {rr.failure_site}")
                lines.append(f"    shrunk example: {rr.example}")
            elif rr.pattern_present:
                lines.append("    latent: the pattern is there, but no layout the suite tried reproduces it")
        for o in m.other_findings:
            lines.append(f"  finding ({o['tree']}): {o['hazard']} at {o['site']}")
            lines.append(f"    {o['code']}")
            lines.append(f"    shrunk example: {o['example']}")
        for b in m.broken_paths:
            lines.append(f"  BROKEN by the patch (worked before on one device): {b}")
        for n in m.notes:
            lines.append(f"  note: {n}")
    return "\n".join(lines)
