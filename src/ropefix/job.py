"""The main job end to end (``ropefix run``, README's ``scripts/main``), as a pipeline of steps.

checkout (the release from the package index, as a git work tree) -> scan -> apply (the engine's
patch, written to ``out/``) -> verify red/green (the regression suite on the unpatched tree and a
patched copy, in an interpreter that imports that release) -> PR (topic branch, series, PR body)
-> summary. Each step is a function returning a value; a step that cannot run is recorded as
skipped with its reason, and the summary says so instead of hiding it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ropefix import proc, ui
from ropefix.errors import RopefixError
from ropefix.fix import engine
from ropefix.releases import sources
from ropefix.ship import backport
from ropefix.store import Store


@dataclass
class Step:
    name: str
    status: str  # "ok", "skipped", "failed", or a verify status
    detail: str
    seconds: float


@dataclass
class JobResult:
    version: str
    out: Path
    steps: list[Step] = field(default_factory=list)
    verify: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        """Every step ran and the fix broke nothing; "reproduced-other-hazards" is a verdict, shown, not a failure."""
        return not any(s.status in ("failed", "fix-failed") for s in self.steps)

    def render(self) -> str:
        width = max(len(s.name) for s in self.steps) if self.steps else 4
        lines = [f"ropefix run: transformers {self.version} -> {self.out}", ""]
        lines += [f"  {s.name:<{width}}  {s.status:<24} {s.seconds:6.1f}s  {s.detail}" for s in self.steps]
        return "\n".join(lines)


def _timed(result: JobResult, name: str, fn: Callable[[], tuple[str, str]]) -> None:
    ui.info(f"[{len(result.steps) + 1}] {name}")
    start = time.monotonic()
    try:
        status, detail = fn()
    except RopefixError as e:
        status, detail = "failed", str(e).splitlines()[0]
    result.steps.append(Step(name, status, detail, round(time.monotonic() - start, 1)))
    ui.info(f"    {name}: {status} ({result.steps[-1].seconds:.1f}s) {detail}")


def run_job(
    version: str,
    out: Path = Path("out/run"),
    models: list[str] | None = None,
    max_examples: int | None = None,
    python: str | None = None,
    store: Store | None = None,
) -> JobResult:
    store = store or Store()
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    result = JobResult(version, out)
    tree: dict[str, Any] = {}

    def checkout() -> tuple[str, str]:
        tree["root"] = sources.release_tree(version, store)
        return "ok", str(tree["root"])

    _timed(result, "checkout", checkout)
    if "root" not in tree:
        return result
    root: Path = tree["root"]

    def scan() -> tuple[str, str]:
        report = engine.scan_tree(root)
        tree["models"] = sorted({s.model for s in report.affected})
        (out / "scan.json").write_text(json.dumps(report.to_json(), indent=1))
        if not report.affected:
            return "not-affected", "no affected site: nothing to fix in this release"
        return "ok", f"{len(report.affected)} affected site(s) in {', '.join(tree['models'])}"

    _timed(result, "scan", scan)
    if not tree.get("models"):
        return result

    def apply() -> tuple[str, str]:
        patch = backport.make_patch(version, tree=root)
        dest = backport.write_patch(patch, out)
        return "ok", f"{len(patch.changes)} file(s) -> {dest.name}"

    _timed(result, "apply", apply)

    def env() -> tuple[str, str]:
        from ropefix.releases import relenv

        if python:
            tree["python"] = python
        elif _installed_transformers() == version:  # this environment already imports that release
            tree["python"] = proc.python()
        else:
            tree["python"] = str(relenv.python_for(version, store))
        return "ok", tree["python"]

    _timed(result, "environment", env)
    chosen = [m for m in (models or ["qwen2_vl", "qwen2_5_vl"]) if m in tree["models"]] or tree["models"][:1]

    def verify() -> tuple[str, str]:
        if "python" not in tree:
            return "skipped", "no interpreter imports this release here"
        cmd = [tree["python"], "-m", "ropefix", "verify", str(root), "--json"]
        cmd += ["--max-examples", str(max_examples)] if max_examples else []
        done = proc.run([*cmd, "--models", *chosen], env={"OMP_NUM_THREADS": "1"}, timeout=1800)
        try:
            data = json.loads(done.out)
        except ValueError:
            return (
                "failed",
                f"verify printed no result (exit {done.rc}): {(done.err.strip().splitlines() or [''])[-1]}",
            )
        result.verify = data
        (out / "verify.json").write_text(json.dumps(data, indent=1))
        (out / "evidence.md").write_text(evidence_table(data))
        return data["status"], "; ".join(_model_line(m) for m in data["models"])

    _timed(result, "verify", verify)

    def pull_request() -> tuple[str, str]:
        from ropefix.ship import pr

        history = _history_repo(store)
        matrix = Path("out/matrix.md")  # the matrix's table when it was run; else this run's verify
        evidence = matrix if matrix.exists() else out / "evidence.md"
        made = pr.make_pr(
            f"v{version}",
            repo=str(history),
            out=out / "pr",
            store=store,
            python=tree.get("python"),
            evidence=evidence,
            proofs=_proofs(result.verify),
        )
        if made.safe:
            return "not-affected", "already safe"
        untested = f"; no tests for {len(made.untested)} model(s)" if made.untested else ""
        return "ok", f"{len(made.patches)} patch(es), {len(made.tests)} test file(s) -> pr/PR_BODY.md{untested}"

    _timed(result, "pr", pull_request)
    (out / "SUMMARY.md").write_text("```\n" + result.render() + "\n```\n")
    return result


def _history_repo(store: Store) -> Path:
    """The cache's repository of imported releases (tags ``vX.Y.Z``), which release_tree checked out from."""
    return store.path("repos", sources.HISTORY_REPO)


def _installed_transformers() -> str | None:
    import importlib.metadata as md

    try:
        return md.version("transformers")
    except md.PackageNotFoundError:
        return None


def _model_line(m: dict[str, Any]) -> str:
    parts = []
    for r in m["rules"]:
        red = "red" if r["reproduced"] else "latent" if r["pattern_present"] else "absent"
        green = {True: "green", False: "still red", None: "n/a"}[r["fixed"]]
        parts.append(f"{r['rule']} {red}->{green}")
    others = sorted({o["hazard"] for o in m["other_findings"]})
    if others:
        parts.append(f"other hazards (no rule yet): {', '.join(others)}")
    return f"{m['model']}: " + ", ".join(parts or [m["status"]])


def evidence_table(data: dict[str, Any]) -> str:
    """verify's verdict as the Markdown table PR_BODY.md shows when no matrix was run."""
    rows = [
        "| transformers | torch | model | rule | unpatched | patched | failing site |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for m in data["models"]:
        for r in m["rules"]:
            red = "reproduced" if r["reproduced"] else "latent" if r["pattern_present"] else "absent"
            green = {True: "passes", False: "fails", None: "n/a"}[r["fixed"]]
            site = f"`{r['failure_site']}`" if r["failure_site"] else ""
            rows.append(
                f"| {data['transformers']} | {data['torch']} | {m['model']} | {r['rule']} | {red} | {green} | {site} |"
            )
        for o in m["other_findings"]:
            rows.append(
                f"| {data['transformers']} | {data['torch']} | {m['model']} | ({o['hazard']}, no rule) | "
                f"reproduced | {'fails' if o['tree'] == 'patched' else 'n/a'} | `{o['site']}` |"
            )
    return "\n".join(rows) + "\n"


def _proofs(data: dict[str, Any] | None) -> dict[str, str]:
    """Per rule, the first shrunk failing example verify found on the unpatched tree."""
    found: dict[str, str] = {}
    for m in (data or {}).get("models", []):
        for r in m["rules"]:
            if r["reproduced"] and r.get("example") and r["rule"] not in found:
                found[r["rule"]] = f"{m['model']}: {r['example']}"
    return found
