"""``verify``: reproduce on the unpatched tree, fix a copy with the proven rules only, prove the copy.

1. Scan: which families of the tree the rules flag (any site), and each rule's affected sites.
2. The suite on the unpatched tree (a subprocess with the tree first on ``PYTHONPATH``).
3. A rule is applied to a family only when a failing example proved its hazard there. The patched
   copy (a light copy; the tree given is never modified) gets exactly those rules per family; the
   suite replays each proof's failing layout on it and searches again. A hazard that the earlier
   fix uncovered (the failure moved one line down) proves its own rule in the next round.
4. ``judge`` (pure) turns the runs into a ``Report`` of verdicts (``ropefix.prove.verdict``).

The report is kept in the cache (``ropefix.prove.verdicts``), so ``backport`` and ``pr`` reuse it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ropefix import proc, ui
from ropefix.errors import RopefixError
from ropefix.prove.suite import PROFILES, SuiteResult
from ropefix.prove.verdict import (
    Example,
    Failure,
    FamilyReport,
    Finding,
    HotfixCheck,
    Proof,
    Report,
    State,
    Verdict,
    worst,
)
from ropefix.prove.verdicts import kit_version

# ``ropefix run``'s default families: the two the bug was reported against
DEFAULT_MODELS = ("qwen2_vl", "qwen2_5_vl")


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


def run_suite(
    pkg: Path,
    models: list[str],
    profile: str,
    max_examples: int | None = None,
    replay: dict[str, list[dict[str, Any]]] | None = None,
    hotfix: bool = False,
) -> dict[str, SuiteResult | str]:
    """Per model, the suite's result (or why the model could not be built), run with ``pkg`` first on the path."""
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
    if hotfix:
        cmd += ["--hotfix"]
    with tempfile.TemporaryDirectory(prefix="ropefix-replay-") as tmp:
        if replay:
            file = Path(tmp) / "replay.json"
            file.write_text(json.dumps(replay))
            cmd += ["--replay", str(file)]
        done = proc.run(cmd, env=env, cwd=tempfile.gettempdir())
    if not done.ok:
        raise RopefixError(f"The regression suite could not run against {pkg}.\n{done.describe()}")
    for line in done.err.splitlines():  # the search's own progress: each new failure site as it was found
        if any(line.startswith(f"{m}: ") for m in models):
            ui.info(f"  {line}")
    out: dict[str, SuiteResult | str] = {}
    for r in json.loads(done.out):
        if "error" in r:
            out[r["model"]] = r["error"]
            continue
        where = r.get("transformers_path")
        if where and Path(where).resolve() != pkg.resolve():  # the subprocess must have imported the tree we meant
            raise RopefixError(
                f"The suite imported transformers from {where}, not from {pkg}. Something on the path shadows "
                "it (a .pth file or PYTHONPATH); remove that and retry."
            )
        out[r["model"]] = SuiteResult.from_json(r)
    return out


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


def patched_copy(pkg: Path, plan: dict[str, list[str]], dest: Path) -> Path:
    """A light copy of the package with, per family, exactly the rules in ``plan`` applied."""
    from ropefix.fix.engine import apply_tree

    copy = light_copy(pkg, dest, sorted(plan))
    for family, rules in sorted(plan.items()):
        if rules:
            apply_tree(copy, models=[family], rules=rules)
    return copy


# ---------------------------------------------------------------- static facts


@dataclass(frozen=True)
class Static:
    """What the scan says about one family: affected sites per rule, and whether anything is flagged."""

    family: str
    affected: dict[str, tuple[str, ...]]  # rule -> "file:line" of affected sites
    flagged: bool  # any site of any rule, whatever its status
    unknown: dict[str, tuple[str, ...]] = field(default_factory=dict)  # rule -> unknown-shape sites
    safe: dict[str, int] = field(default_factory=dict)  # rule -> how many sites the scan calls safe or fixed

    def pattern(self, rule: str) -> tuple[str, ...]:
        """The sites a verdict must account for: affected, and unknown shapes (resolved by the search)."""
        return self.affected.get(rule, ()) + self.unknown.get(rule, ())


def static_facts(pkg: Path, models: list[str] | None) -> dict[str, Static]:
    from ropefix.fix.engine import scan_tree
    from ropefix.fix.rules import REGISTRY

    scan = scan_tree(pkg, models=models)
    families = sorted({s.model for s in scan.sites} | set(models or ()))
    out = {}
    for fam in families:
        sites = [s for s in scan.sites if s.model == fam]

        affected = {r: _where(sites, r, "affected") for r in REGISTRY}
        unknown = {r: found for r in REGISTRY if (found := _where(sites, r, "unknown-shape"))}
        safe = {r: n for r in REGISTRY if (n := sum(s.rule == r and s.status in ("safe", "fixed") for s in sites))}
        out[fam] = Static(fam, affected, bool(sites), unknown, safe)
    return out


def _where(sites: list[Any], rule: str, status: str) -> tuple[str, ...]:
    return tuple(f"{s.file}:{s.line}" for s in sites if s.rule == rule and s.status == status)


def rule_of_hazard() -> dict[str, str]:
    from ropefix.fix.rules import REGISTRY

    return {r.hazard: r.name for r in REGISTRY.values()}


# ---------------------------------------------------------------- turning runs into verdicts


def _proofs(
    result: SuiteResult, static: Static, owner: dict[str, str], tree: str, original: Path | None = None
) -> dict[str, Proof]:
    """Per rule, the first failure of its hazard on this run. A failure on a patched copy gets the line of
    the same code in the ``original`` package, so every proof's site reads against the release as published."""
    found: dict[str, Proof] = {}
    for f in result.failures:
        rule = owner.get(f.hazard)
        if rule and rule not in found:
            found[rule] = Proof(_at_original(f, original) if original else f, tree)
    return found


def _at_original(f: Failure, pkg: Path) -> Failure:
    file, _, line = f.site.rpartition(":")
    try:
        lines = (pkg / file).read_text(encoding="utf-8").splitlines()
    except OSError:
        return f
    same = [i + 1 for i, text in enumerate(lines) if text.strip() == f.code]
    if len(same) != 1 or str(same[0]) == line:
        return f  # not found once: keep the patched copy's line (the proof's tree says which)
    return replace(f, site=f"{file}:{same[0]}")


def judge(
    release: str,
    torch: str,
    static: Static,
    before: SuiteResult,
    after: SuiteResult | None,
    proofs: dict[str, Proof],
    applied: list[str],
    apply_error: str | None = None,
) -> FamilyReport:
    """One family's verdicts from the scan and the suite runs (pure)."""
    owner = rule_of_hazard()
    family = static.family
    broken = sorted(set(after.not_compared) - set(before.not_compared)) if after else []
    mismatch_after = [f for f in (after.failures if after else []) if f.hazard == "output-mismatch"]
    judged, decode = len(before.judged_pairs), before.decode_judged
    verdicts = []
    for rule in static.affected:
        sites = static.pattern(rule)
        proof = proofs.get(rule)
        common = {"release": release, "torch": torch, "family": family, "rule": rule, "judged": judged}
        common |= {"decode_judged": decode, "sites": sites}
        if proof is not None:
            state, after_text, reason = _proven(rule, proof, applied, after, broken, mismatch_after, apply_error)
            verdicts.append(Verdict(**common, state=state, proof=proof, after=after_text, reason=reason))
        elif decode == 0:
            why = "no decoding path (generate, a decode loop) could be compared: " + _not_compared_summary(before)
            verdicts.append(Verdict(**common, state=State.NOT_JUDGED, reason=why))
        elif sites:
            unknown = len(static.unknown.get(rule, ()))
            shapes = f" ({unknown} of unknown shape, resolved by the search)" if unknown else ""
            why = f"pattern at {len(sites)} site(s){shapes}; {judged} path x prompt pairs judged ({decode} decoding), none failed"
            verdicts.append(Verdict(**common, state=State.LATENT, reason=why))
        else:
            safe = static.safe.get(rule, 0)
            claim = f"the scan's {safe} safe or fixed site(s) confirmed: " if safe else "no affected site; "
            why = f"{claim}{judged} path x prompt pairs judged ({decode} decoding), none failed"
            verdicts.append(Verdict(**common, state=State.NOT_AFFECTED, reason=why))
    findings = [Finding(f, "unpatched", owner.get(f.hazard)) for f in before.failures if f.hazard not in owner]
    seen = {(f.failure.hazard, f.failure.site) for f in findings}
    for f in after.failures if after else []:
        if f.hazard not in owner and (f.hazard, f.site) not in seen:
            findings.append(Finding(f, "patched", None))
    notes = [f"patch not applied: {apply_error}"] if apply_error else []
    notes += list(before.notes)
    checks = tuple(HotfixCheck(h["order"], h["active"], Example(**h["example"]), h["failure"]) for h in before.hotfix)
    if checks and not any(h.active for h in checks):
        notes.append("the runtime hotfix claims nothing in this release (a no-op here): only the file fix covers it")
    if judged == 0:
        state, reason = State.NOT_JUDGED, "nothing was compared: " + _not_compared_summary(before)
    else:
        state, reason = worst(v.state for v in verdicts), ""
    return FamilyReport(
        family=family,
        state=state,
        verdicts=tuple(verdicts),
        findings=tuple(findings),
        judged_pairs=tuple(before.judged_pairs),
        not_compared=dict(before.not_compared),
        examples_run=before.examples_run + (after.examples_run if after else 0),
        broken_paths=tuple(broken),
        notes=tuple(notes),
        reason=reason,
        hotfix=checks,
    )


def _proven(
    rule: str,
    proof: Proof,
    applied: list[str],
    after: SuiteResult | None,
    broken: list[str],
    mismatch: list[Any],
    apply_error: str | None,
) -> tuple[State, str, str]:
    """The state of a reproduced rule: fixed only if the patched tree passes its proof and breaks nothing."""
    if apply_error:
        return State.FIX_FAILED, "", f"reproduced; the patch did not apply: {apply_error}"
    if rule not in applied:
        return State.FIX_FAILED, "", "reproduced, but the rule finds no affected site to rewrite in this family"
    if after is None:
        return State.FIX_FAILED, "", "reproduced; the patched tree was not run"
    hazard = proof.failure.hazard
    still = next((f for f in after.failures if f.hazard == hazard), None)
    replay = next((r for r in after.replays if r["example"] == _as_dict(proof.failure.example)), None)
    replay_failure = replay["failure"] if replay else None
    if replay_failure is not None:
        return (
            State.FIX_FAILED,
            f"the proof's layout fails at {replay_failure.site}",
            "reproduced, still fails patched",
        )
    if still is not None:
        return State.FIX_FAILED, f"fails at transformers/{still.site}", "reproduced, still fails patched"
    if broken:
        return State.FIX_FAILED, f"breaks {', '.join(broken)}", "the patch breaks paths that worked unpatched"
    if mismatch:
        return State.FIX_FAILED, "a placed run differs from the reference", "the patched tree gives other results"
    checked = "the proof's layout passes" if replay else "no example fails"
    return (
        State.REPRODUCED_FIXED,
        f"passes: {checked} with results identical to the reference; {after.examples_run} examples searched",
        f"red {proof.tree_words()}, green after the patch",
    )


def _as_dict(example: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(example)


def _not_compared_summary(r: SuiteResult) -> str:
    if not r.not_compared:
        return "no example reached a compared pair"
    first = next(iter(r.not_compared.items()))
    return f"{len(r.not_compared)} pair(s) fail on the reference itself, e.g. {first[0]}: {first[1][:200]}"


def not_built(release: str, torch: str, static: Static, why: str) -> FamilyReport:
    verdicts = tuple(
        Verdict(release, torch, static.family, rule, State.NOT_JUDGED, 0, 0, sites, reason=f"not built: {why}")
        for rule, sites in ((r, static.pattern(r)) for r in static.affected)
    )
    return FamilyReport(static.family, State.NOT_JUDGED, verdicts, reason=f"no tiny model could be built: {why}")


# ---------------------------------------------------------------- the command's work


def verify(
    path: Path | None = None,
    models: list[str] | None = None,
    profile: str = "ci",
    max_examples: int | None = None,
) -> Report:
    """Reproduce on the tree at ``path`` (or the importable transformers), fix a copy, prove the copy."""
    if profile not in PROFILES:
        raise RopefixError(f"Unknown profile {profile!r}; use one of {', '.join(PROFILES)}.")
    start = time.monotonic()
    pkg = package_of(path)
    release = version_of(pkg)
    missing = [m for m in models or [] if not (pkg / "models" / m).is_dir()]
    if missing:
        raise RopefixError(
            f"{', '.join(missing)} not in transformers {release} at {pkg}. "
            "Pick models that release has (see its models/ folder), e.g. --models qwen2_vl."
        )
    facts = static_facts(pkg, models)
    chosen = list(models) if models else [f for f, s in facts.items() if s.flagged]
    if not chosen:
        ui.info(f"verify: transformers {release}: no family carries a site any rule knows")
        return Report(
            release, _torch_version(), kit_version(), profile, (), round(time.monotonic() - start, 2), str(pkg)
        )
    ui.info(f"verify: transformers {release} at {pkg}; families {', '.join(chosen)}; profile {profile}")
    ui.info("verify: [1/2] the suite on the unpatched tree")
    before = run_suite(pkg, chosen, profile, max_examples, hotfix=True)
    owner = rule_of_hazard()
    proofs = {f: _proofs(r, facts[f], owner, "unpatched") for f, r in before.items() if isinstance(r, SuiteResult)}
    applied: dict[str, list[str]] = {}
    after: dict[str, SuiteResult | str] = {}
    apply_error = None
    for round_ in range(1, len(owner) + 1):
        plan = {f: [r for r in owner.values() if r in p and facts[f].affected.get(r)] for f, p in proofs.items()}
        plan = {f: rules for f, rules in plan.items() if rules}
        if plan == applied or not plan:
            break
        applied = plan
        ui.info(f"verify: [2/2] round {round_}: the proven rules on a copy: {_plan_text(plan)}")
        with tempfile.TemporaryDirectory(prefix="ropefix-verify-") as tmp:
            try:
                copy = patched_copy(pkg, plan, Path(tmp))
            except RopefixError as e:
                apply_error = str(e).splitlines()[0]
                break
            replay = {f: [_as_dict(p.failure.example) for p in proofs[f].values()] for f in plan}
            after = run_suite(copy, sorted(plan), profile, max_examples, replay)
        uncovered = False
        for f, r in after.items():
            if not isinstance(r, SuiteResult):
                continue
            for rule, proof in _proofs(r, facts[f], owner, "patched with " + ", ".join(plan[f]), pkg).items():
                if rule not in proofs[f] and facts[f].affected.get(rule):
                    proofs[f][rule] = proof  # an earlier fix uncovered it: it proves its own rule next round
                    uncovered = True
        if not uncovered:
            break
    torch = _torch_version(before)
    families = []
    for f in chosen:
        b = before.get(f)
        if not isinstance(b, SuiteResult):
            families.append(not_built(release, torch, facts[f], str(b)))
            continue
        a = after.get(f)
        families.append(
            judge(
                release,
                torch,
                facts[f],
                b,
                a if isinstance(a, SuiteResult) else None,
                proofs.get(f, {}),
                applied.get(f, []),
                apply_error,
            )
        )
    report = Report(
        release, torch, kit_version(), profile, tuple(families), round(time.monotonic() - start, 2), str(pkg)
    )
    return report


def _plan_text(plan: dict[str, list[str]]) -> str:
    return "; ".join(f"{f}: {', '.join(rules)}" for f, rules in sorted(plan.items()))


def _torch_version(results: dict[str, SuiteResult | str] | None = None) -> str:
    for r in (results or {}).values():
        if isinstance(r, SuiteResult):
            return r.torch
    try:
        import importlib.metadata as md

        return md.version("torch")
    except Exception:  # noqa: BLE001 - torch missing here: the report says so
        return "unknown"
