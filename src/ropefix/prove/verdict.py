"""Verdicts: what the kit proved for one transformers release, per model family and rule, as values.

Every consumer (verify's output, the matrix, ``pr``, ``backport``, ``run``, ``patches/index.json``)
reads and writes these types through ``to_json``/``from_json``; none re-parses JSON by hand. A
verdict carries its proof: the shrunk failing example that went red on the unpatched tree and the
patched run that went green (``reproduced-fixed``), or the number of (call path x prompt kind)
pairs that were compared and found nothing (``latent``, ``not-affected``). Too little compared is
``not-judged``, a state of its own that never passes.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ropefix.errors import RopefixError

SCHEMA = 2  # bump when a field changes meaning; files of another schema are refused, never guessed


class State(str, enum.Enum):
    REPRODUCED_FIXED = "reproduced-fixed"  # red unpatched, green patched: the fix is proven here
    FIX_FAILED = "fix-failed"  # red unpatched and still red (or broken) patched, or the patch did not apply
    NOT_JUDGED = "not-judged"  # too little compared to say anything (reason given); never passes
    LATENT = "latent"  # the pattern is in the code, N paths judged, none failed
    NOT_AFFECTED = "not-affected"  # no pattern, N paths judged, none failed
    SKIPPED = "skipped"  # a matrix cell that could not run (the pair cannot be installed together)

    def passed(self, allow_not_judged: bool = False) -> bool:
        """Whether this outcome is a success for CI. ``not-judged`` passes only when explicitly allowed."""
        if self is State.NOT_JUDGED:
            return allow_not_judged
        return self is not State.FIX_FAILED


# worst first: a family's state is the worst of its rules', a report's the worst of its families'
ORDER = (
    State.FIX_FAILED,
    State.NOT_JUDGED,
    State.REPRODUCED_FIXED,
    State.LATENT,
    State.NOT_AFFECTED,
    State.SKIPPED,
)


def worst(states: Iterable[State], empty: State = State.NOT_JUDGED) -> State:
    found = list(states)
    return min(found, key=ORDER.index) if found else empty


@dataclass(frozen=True)
class Example:
    """One example the search ran: the model, where it was placed, the prompt and the call."""

    model: str
    layout: dict[str, Any]
    prompt: dict[str, Any]
    path: str
    shape: dict[str, Any]
    arm: str = "placed"  # "placed" (unpatched or patched tree) or "hotfix"

    @property
    def pair(self) -> str:
        return f"{self.path}/{self.prompt.get('kind', '?')}"

    def describe(self) -> str:
        p, lay = self.prompt, self.layout
        n = lay.get("n_devices")
        placed = f"{lay.get('kind')} on {n} accelerator(s): {lay.get('call') or lay.get('device_map')}"
        if lay.get("strategy"):  # the map the strategy string became on that machine
            placed += f" -> {lay.get('device_map')}"
        moved = lay.get("inputs_to") or lay.get("input_device")
        inputs = f"inputs.to({moved!r})" + (
            f" = {lay.get('input_device')}" if moved != lay.get("input_device") else ""
        )
        extra = f" (arm {self.arm})" if self.arm != "placed" else ""
        return (
            f"{self.path} on {self.model}, {p.get('kind')} prompt batch={p.get('batch')} len={p.get('length')} "
            f"pad={p.get('pad')}/{p.get('padding_side')} grid={tuple(p.get('grid', ()))}, shape={self.shape}; "
            f"{placed}; {inputs}{extra}"
        )


@dataclass(frozen=True)
class Failure:
    """A failing example: the hazard it belongs to and where (the innermost transformers frame)."""

    hazard: str
    site: str  # "models/qwen2_vl/modeling_qwen2_vl.py:1251", relative to the transformers package
    code: str  # the source line at the site
    error: str
    example: Example
    devices: int = 2  # accelerators the failing layout used (1: a single-accelerator finding)

    @staticmethod
    def from_json(d: dict[str, Any]) -> Failure:
        return Failure(**{**d, "example": Example(**d["example"])})


@dataclass(frozen=True)
class Proof:
    """The evidence that a rule's hazard is real: a failing example and the tree it failed on."""

    failure: Failure
    tree: str  # "unpatched", or "patched with rope-deltas" when an earlier rule's fix uncovered it

    @property
    def site(self) -> str:
        return f"transformers/{self.failure.site}"

    def describe(self) -> str:
        return self.failure.example.describe()

    def tree_words(self) -> str:
        """``on the unpatched tree`` / ``once rope-index-scatter was applied`` (an earlier fix uncovered it)."""
        if self.tree == "unpatched":
            return "on the unpatched tree"
        return "once " + self.tree.removeprefix("patched with ") + " was applied"


@dataclass(frozen=True)
class Verdict:
    """One release x model family x rule."""

    release: str
    torch: str
    family: str
    rule: str
    state: State
    judged: int  # (call path x prompt kind) pairs compared for this family
    decode_judged: int  # of those, decoding paths with cache_position (where the hazards show)
    sites: tuple[str, ...] = ()  # static sites of this rule the scan marks affected, "file:line"
    proof: Proof | None = None  # the failing layout, when reproduced
    after: str = ""  # what the patched tree did: "passes", "fails at ...", "" when it did not run
    reason: str = ""  # one line: why this state

    @property
    def pattern_present(self) -> bool:
        return bool(self.sites)

    @property
    def reproduced(self) -> bool:
        return self.proof is not None


@dataclass(frozen=True)
class Finding:
    """A failure no rule claims (or one that outlived its rule), shown, never hidden."""

    failure: Failure
    tree: str  # "unpatched" or "patched"
    rule: str | None = None  # the rule whose hazard it is, if any

    @property
    def hazard(self) -> str:
        return self.failure.hazard

    @property
    def site(self) -> str:
        return f"transformers/{self.failure.site}"

    @property
    def single_accelerator(self) -> bool:
        return self.failure.devices == 1


@dataclass(frozen=True)
class HotfixCheck:
    """The hotfix arm: a layout that failed at the rope-deltas line, run again with ``ropefix.hotfix``."""

    order: str  # before-dispatch, after-dispatch, after-load, class-before-load
    active: bool  # the hotfix guarded something in this model (a claim that it covers the release)
    example: Example
    failure: Failure | None  # None: the reference's result, tokens identical


@dataclass(frozen=True)
class FamilyReport:
    """One release x model family: every rule's verdict, the findings, and what was compared."""

    family: str
    state: State
    verdicts: tuple[Verdict, ...] = ()
    findings: tuple[Finding, ...] = ()
    judged_pairs: tuple[str, ...] = ()  # "generate-greedy/image": compared against the reference
    not_compared: dict[str, str] = field(default_factory=dict)  # pair -> why the reference itself failed
    examples_run: int = 0
    broken_paths: tuple[str, ...] = ()  # worked unpatched, fail patched on the reference
    notes: tuple[str, ...] = ()
    reason: str = ""  # for not-judged families: why (not built, nothing compared, ...)
    hotfix: tuple[HotfixCheck, ...] = ()

    @property
    def hotfix_holds(self) -> bool | None:
        """None: nothing to check (no rope-deltas failure) or the hotfix claims nothing here (a no-op);
        True: every failing layout passed with it, in every order; False: it does not hold somewhere."""
        claimed = [h for h in self.hotfix if h.active]
        if not claimed:
            return None
        return all(h.failure is None for h in claimed)

    @property
    def judged(self) -> int:
        return len(self.judged_pairs)

    @property
    def proven_rules(self) -> tuple[str, ...]:
        return tuple(v.rule for v in self.verdicts if v.state is State.REPRODUCED_FIXED)

    def verdict(self, rule: str) -> Verdict | None:
        return next((v for v in self.verdicts if v.rule == rule), None)


@dataclass(frozen=True)
class Report:
    """One release (and torch): a report per model family. What verify prints and every stage reads."""

    release: str
    torch: str
    kit: str
    profile: str
    families: tuple[FamilyReport, ...]
    duration_s: float = 0.0
    tree: str = ""
    schema: int = SCHEMA

    @property
    def state(self) -> State:
        return worst((f.state for f in self.families), empty=State.NOT_JUDGED)

    def passed(self, allow_not_judged: bool = False) -> bool:
        """Every family's verdict passes and the runtime hotfix holds wherever it claims to (it is a product
        of its own: a hotfix that does not hold fails the run, but never blocks the proven file fix)."""
        verdicts_pass = all(f.state.passed(allow_not_judged) for f in self.families) and bool(self.families)
        return verdicts_pass and not self.hotfix_failures()

    def hotfix_failures(self) -> list[FamilyReport]:
        return [f for f in self.families if f.hotfix_holds is False]

    def family(self, name: str) -> FamilyReport | None:
        return next((f for f in self.families if f.family == name), None)

    def proven(self) -> dict[str, tuple[str, ...]]:
        """Per family, the rules a failing layout proved and the patched run turned green."""
        return {f.family: f.proven_rules for f in self.families if f.proven_rules}

    def ship_plan(self) -> tuple[dict[str, list[str]], str]:
        """What may ship (family -> proven rules) and, when nothing may, why (empty when it may).

        The one gate behind ``patches/``, ``backport`` and the wheel: a release ships a fix only when a
        rule is proven somewhere and no family is fix-failed or not-judged.
        """
        plan = {f: list(rules) for f, rules in sorted(self.proven().items())}
        blocking = [f for f in self.families if f.state in (State.FIX_FAILED, State.NOT_JUDGED)]
        if blocking:
            why = "; ".join(f"{f.family}: {f.state.value}" + (f" ({f.reason})" if f.reason else "") for f in blocking)
            return {}, f"its verdict is {self.state.value} ({why})"
        if not plan:
            return {}, "its verdict proves nothing: no failing layout that a rule's patch turns green"
        return plan, ""

    def with_families(self, families: Iterable[FamilyReport]) -> Report:
        return replace(self, families=tuple(families))

    # ------------------------------------------------------------ JSON

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["state"] = self.state.value
        return _plain(d)

    @staticmethod
    def from_json(d: dict[str, Any], source: str = "a verdict") -> Report:
        """Read a report; a file of another schema or a malformed one is a clear error naming ``source``."""
        if not isinstance(d, dict) or d.get("schema") != SCHEMA:
            got = d.get("schema") if isinstance(d, dict) else type(d).__name__
            raise RopefixError(
                f"{source} is not a ropefix verdict of schema {SCHEMA} (it says schema {got!r}, kit "
                f"{d.get('kit', '?') if isinstance(d, dict) else '?'}). It was written by another ropefix version or is "
                "damaged; nothing was changed. Re-run `ropefix verify` (or the sweep) to make a current one."
            )
        try:
            return Report(
                release=str(d["release"]),
                torch=str(d["torch"]),
                kit=str(d["kit"]),
                profile=str(d["profile"]),
                families=tuple(_family(f) for f in d["families"]),
                duration_s=float(d.get("duration_s", 0.0)),
                tree=str(d.get("tree", "")),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise RopefixError(
                f"{source} is a damaged ropefix verdict ({type(e).__name__}: {e}); nothing was changed. Delete it and "
                "re-run `ropefix verify` (or the sweep) to make it again."
            ) from e

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=1, sort_keys=False) + "\n"

    @staticmethod
    def load(path: Path) -> Report:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise RopefixError(
                f"Cannot read the verdict {path} ({type(e).__name__}: {e}); nothing was changed. Delete it and re-run "
                "`ropefix verify` (or the sweep) to make it again."
            ) from e
        return Report.from_json(data, str(path))


def _plain(value: Any) -> Any:
    """Enums as their values, tuples as lists: JSON that round-trips through ``from_json``."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _proof(d: dict[str, Any] | None) -> Proof | None:
    return None if d is None else Proof(Failure.from_json(d["failure"]), str(d["tree"]))


def _verdict(d: dict[str, Any]) -> Verdict:
    return Verdict(
        release=str(d["release"]),
        torch=str(d["torch"]),
        family=str(d["family"]),
        rule=str(d["rule"]),
        state=State(d["state"]),
        judged=int(d["judged"]),
        decode_judged=int(d["decode_judged"]),
        sites=tuple(d.get("sites", ())),
        proof=_proof(d.get("proof")),
        after=str(d.get("after", "")),
        reason=str(d.get("reason", "")),
    )


def _family(d: dict[str, Any]) -> FamilyReport:
    return FamilyReport(
        family=str(d["family"]),
        state=State(d["state"]),
        verdicts=tuple(_verdict(v) for v in d.get("verdicts", ())),
        findings=tuple(
            Finding(Failure.from_json(f["failure"]), str(f["tree"]), f.get("rule")) for f in d.get("findings", ())
        ),
        judged_pairs=tuple(d.get("judged_pairs", ())),
        not_compared=dict(d.get("not_compared", {})),
        examples_run=int(d.get("examples_run", 0)),
        broken_paths=tuple(d.get("broken_paths", ())),
        notes=tuple(d.get("notes", ())),
        reason=str(d.get("reason", "")),
        hotfix=tuple(
            HotfixCheck(
                str(h["order"]),
                bool(h["active"]),
                Example(**h["example"]),
                Failure.from_json(h["failure"]) if h.get("failure") else None,
            )
            for h in d.get("hotfix", ())
        ),
    )
