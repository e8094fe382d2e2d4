"""The main job end to end (``ropefix run``, README's ``scripts/main``), as explicit, resumable steps.

checkout (the release from the package index, as a git work tree) -> scan -> environment (an
interpreter that imports that release) -> verify (the regression suite red/green; a ``Report`` of
verdicts) -> patch (only the rules verify proved, on the families they were proven for) -> pr (the
series, proven rules only) -> summary. Each step is a function from the job's state to a
``StepResult``; every result is written to ``out/state.json`` as soon as it exists, so
``ropefix run --resume`` continues after an interrupted or failed step with the outputs of the steps
that finished. A step that cannot run is recorded with its reason and the summary says so.
"""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ropefix import proc, ui
from ropefix.errors import RopefixError
from ropefix.prove.verdict import Report, State
from ropefix.store import Store

STATE_FILE = "state.json"


class StepStatus(str, enum.Enum):
    OK = "ok"
    SKIPPED = "skipped"  # nothing to do (already safe, nothing proven): the detail says why
    FAILED = "failed"


@dataclass(frozen=True)
class StepResult:
    name: str
    status: StepStatus
    detail: str
    seconds: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)  # what later steps read (paths, names)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status.value}

    @staticmethod
    def from_json(d: dict[str, Any]) -> StepResult:
        return StepResult(d["name"], StepStatus(d["status"]), d["detail"], float(d["seconds"]), dict(d["data"]))


@dataclass(frozen=True)
class Options:
    version: str
    models: tuple[str, ...] = ()
    max_examples: int | None = None
    python: str | None = None

    def key(self) -> dict[str, Any]:
        """What a resumed run must share with the run it continues."""
        return {"version": self.version, "models": list(self.models), "max_examples": self.max_examples}


@dataclass
class JobResult:
    version: str
    out: Path
    steps: list[StepResult] = field(default_factory=list)
    report: Report | None = None

    def step(self, name: str) -> StepResult | None:
        return next((s for s in self.steps if s.name == name), None)

    @property
    def ok(self) -> bool:
        """Every step ran or said why not, and verify's verdict passes (not-judged and fix-failed do not)."""
        if any(s.status is StepStatus.FAILED for s in self.steps):
            return False
        return self.report is None or self.report.passed()

    def render(self) -> str:
        width = max((len(s.name) for s in self.steps), default=4)
        lines = [f"ropefix run: transformers {self.version} -> {self.out}", ""]
        lines += [f"  {s.name:<{width}}  {s.status.value:<8} {s.seconds:6.1f}s  {s.detail}" for s in self.steps]
        return "\n".join(lines)


# ---------------------------------------------------------------- the steps


@dataclass
class Context:
    """What steps share: options, the cache, the output folder, the results so far."""

    opts: Options
    out: Path
    store: Store
    done: dict[str, StepResult] = field(default_factory=dict)

    def data(self, step: str, key: str) -> Any:
        return self.done[step].data[key]

    def report(self) -> Report:
        return Report.load(Path(self.data("verify", "report")))


def step_checkout(ctx: Context) -> StepResult:
    from ropefix.releases import sources

    root = sources.release_tree(ctx.opts.version, ctx.store)
    return StepResult("checkout", StepStatus.OK, str(root), data={"root": str(root)})


def step_scan(ctx: Context) -> StepResult:
    from ropefix.files import atomic_write
    from ropefix.fix import engine

    report = engine.scan_tree(Path(ctx.data("checkout", "root")), store=ctx.store)
    atomic_write(ctx.out / "scan.json", json.dumps(report.to_json(), indent=1))
    families = sorted({s.model for s in report.affected})
    if not families:
        return StepResult("scan", StepStatus.SKIPPED, "no affected site: nothing to fix in this release")
    chosen = [m for m in ctx.opts.models if m in families] or families[:1] if ctx.opts.models else families
    detail = f"{len(report.affected)} affected site(s) in {', '.join(families)}; verifying {', '.join(chosen)}"
    return StepResult("scan", StepStatus.OK, detail, data={"families": families, "chosen": chosen})


def step_environment(ctx: Context) -> StepResult:
    if ctx.opts.python:
        py = ctx.opts.python
    elif _installed_transformers() == ctx.opts.version:  # this environment already imports that release
        py = proc.python()
    else:
        from ropefix.releases import relenv

        py = str(relenv.python_for(ctx.opts.version, ctx.store))
    return StepResult("environment", StepStatus.OK, py, data={"python": py})


def step_verify(ctx: Context) -> StepResult:
    from ropefix.files import atomic_write
    from ropefix.prove import render

    cmd = [ctx.data("environment", "python"), "-m", "ropefix", "verify", ctx.data("checkout", "root"), "--json"]
    cmd += ["--max-examples", str(ctx.opts.max_examples)] if ctx.opts.max_examples else []
    cmd += ["--models", *ctx.data("scan", "chosen")]
    done = proc.run(cmd, env={"OMP_NUM_THREADS": "1"}, timeout=3600)
    try:
        report = Report.from_json(json.loads(done.out), "verify's report")
    except ValueError:
        last = (done.err.strip().splitlines() or [""])[-1]
        return StepResult("verify", StepStatus.FAILED, f"verify printed no report (exit {done.rc}): {last}")
    dest = ctx.out / "verify.json"
    atomic_write(dest, report.dumps())
    atomic_write(ctx.out / "evidence.md", render.evidence_markdown([report]))
    detail = f"{report.state.value}: " + "; ".join(render.family_line(f) for f in report.families)
    return StepResult("verify", StepStatus.OK, detail, data={"report": str(dest), "state": report.state.value})


def step_patch(ctx: Context) -> StepResult:
    from ropefix.ship import patches

    report = ctx.report()
    made = patches.generate_proven(ctx.opts.version, Path(ctx.data("checkout", "root")), report)
    if made is None:
        return StepResult("patch", StepStatus.SKIPPED, "nothing proven: no patch (see verify)")
    dest = patches.write_one(made, ctx.out)
    return StepResult("patch", StepStatus.OK, f"{made.sites} site(s), {len(made.changes)} file(s) -> {dest.name}")


def step_pr(ctx: Context) -> StepResult:
    from ropefix.releases import sources
    from ropefix.ship import pr

    made = pr.make_pr(
        f"v{ctx.opts.version}",
        repo=str(ctx.store.path("repos", sources.HISTORY_REPO)),
        out=ctx.out / "pr",
        store=ctx.store,
        python=ctx.data("environment", "python"),
        evidence=None,
        report=ctx.report(),
        force=True,  # out/run/pr is this job's own folder: an edited earlier PR body is moved aside, not lost
    )
    if made.safe:
        return StepResult("pr", StepStatus.SKIPPED, made.why_nothing)
    untested = f"; no tests for {len(made.untested)} model(s)" if made.untested else ""
    detail = f"{len(made.patches)} patch(es), {len(made.tests)} test file(s) -> pr/PR_BODY.md{untested}"
    return StepResult("pr", StepStatus.OK, detail, data={"series": [str(p) for p in made.patches]})


STEPS: tuple[tuple[str, Callable[[Context], StepResult], tuple[str, ...]], ...] = (
    ("checkout", step_checkout, ()),
    ("scan", step_scan, ("checkout",)),
    ("environment", step_environment, ("scan",)),
    ("verify", step_verify, ("environment",)),
    ("patch", step_patch, ("verify",)),
    ("pr", step_pr, ("verify",)),
)


# ---------------------------------------------------------------- running and resuming


def run_job(
    version: str,
    out: Path = Path("out/run"),
    models: list[str] | None = None,
    max_examples: int | None = None,
    python: str | None = None,
    store: Store | None = None,
    resume: bool = False,
) -> JobResult:
    opts = Options(version, tuple(models or ()), max_examples, python)
    out = out.resolve()
    ctx = Context(opts, out, store or Store())
    out.mkdir(parents=True, exist_ok=True)
    if resume:
        ctx.done = _load_state(out, opts)
    elif (out / STATE_FILE).exists():
        (out / STATE_FILE).unlink()  # a fresh run: the old state (ours) no longer describes out/
    result = JobResult(version, out)
    for i, (name, fn, needs) in enumerate(STEPS, 1):
        kept = ctx.done.get(name)
        if kept is not None and kept.status is not StepStatus.FAILED:
            ui.info(f"[{i}/{len(STEPS)}] {name}: kept from the interrupted run ({kept.status.value})")
            result.steps.append(kept)
            continue
        if any(ctx.done.get(n) is None or ctx.done[n].status is not StepStatus.OK for n in needs):
            break  # an earlier step stopped the job (skipped or failed): the summary says why
        ui.info(f"[{i}/{len(STEPS)}] {name}")
        start = time.monotonic()
        try:
            res = fn(ctx)
        except RopefixError as e:
            res = StepResult(name, StepStatus.FAILED, str(e).splitlines()[0])
        res = StepResult(res.name, res.status, res.detail, round(time.monotonic() - start, 1), res.data)
        ui.info(f"    {name}: {res.status.value} ({res.seconds:.1f}s) {res.detail}")
        ctx.done[name] = res
        result.steps.append(res)
        _save_state(out, opts, ctx.done)
        if res.status is StepStatus.FAILED:
            ui.info(f"run: stopped at {name}; fix the cause and continue with `ropefix run --resume --out {out}`")
            break
    if "verify" in ctx.done and ctx.done["verify"].status is StepStatus.OK:
        result.report = ctx.report()
    _write_summary(result)
    return result


def _save_state(out: Path, opts: Options, done: dict[str, StepResult]) -> None:
    from ropefix.files import atomic_write

    state = {"options": opts.key(), "steps": [s.to_json() for s in done.values()]}
    atomic_write(out / STATE_FILE, json.dumps(state, indent=1))


def _load_state(out: Path, opts: Options) -> dict[str, StepResult]:
    path = out / STATE_FILE
    if not path.exists():
        raise RopefixError(f"Nothing to resume: {path} does not exist. Start the job without --resume.")
    try:
        state = json.loads(path.read_text())
        steps = {s["name"]: StepResult.from_json(s) for s in state["steps"]}
    except (ValueError, KeyError, TypeError) as e:
        raise RopefixError(f"{path} is damaged ({e}); start the job again without --resume.") from e
    if state.get("options") != opts.key():
        raise RopefixError(
            f"{path} belongs to a run with other options ({state.get('options')}); resume with the same release, "
            "--models and --max-examples, or start a fresh run without --resume."
        )
    return steps


def _write_summary(result: JobResult) -> None:
    """SUMMARY.md: the steps, then per finding and proof its file:line, and where the evidence is."""
    from ropefix.files import atomic_write

    lines = ["```", result.render(), "```", ""]
    if result.report is not None:
        lines += ["| model | rule or hazard | verdict | failing site |", "| --- | --- | --- | --- |"]
        for f in result.report.families:
            for v in f.verdicts:
                if v.proof or v.state not in (State.NOT_AFFECTED,):
                    site = f"`{v.proof.site}`" if v.proof else ""
                    lines.append(f"| {f.family} | {v.rule} | {v.state.value} | {site} |")
            for x in f.findings:
                lines.append(f"| {f.family} | {x.hazard} (no rule) | finding ({x.tree}) | `{x.site}` |")
        lines += ["", "Evidence (failing layouts, pairs judged): [evidence.md](evidence.md); report: verify.json."]
    atomic_write(result.out / "SUMMARY.md", "\n".join(lines) + "\n")


def _installed_transformers() -> str | None:
    import importlib.metadata as md

    try:
        return md.version("transformers")
    except md.PackageNotFoundError:
        return None
