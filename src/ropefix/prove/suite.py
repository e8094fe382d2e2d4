"""The regression suite: a hypothesis search over layouts, prompts and call paths of one tiny model.

Every example runs a call path twice: once on the plain CPU (the reference: what the model
computes when nothing is split) and once placed on simulated accelerators as users place it. Oracles:

- a device failure (PyTorch's "same device" error) in the placed run is a finding, named by its
  innermost transformers frame through ``ropefix.fix.hazards``; a layout on ONE accelerator that
  fails where the CPU did not is a finding too (a single-accelerator bug), not a note;
- a placed run must return the reference's result bit for bit (all arithmetic is on the CPU);
- a path whose reference fails is "not compared" (with the reason) and counts against coverage;
  when the CPU lacks a kernel CUDA has (the reference fails with a non-device error), the run on
  one simulated accelerator is the reference instead, and the note says so.

Every (call path x prompt kind) pair that was compared is counted: verify's verdicts carry the
count, and a rule judged on no decoding path is ``not-judged``. The search never hides a failure:
each new failure site is kept with hypothesis's shrunk example, then the search goes on until a
whole round meets no new site. ``--replay FILE`` re-runs given examples (a proof's failing layout on
a patched tree). Run it in a process of its own (``python -m ropefix.prove.suite``) with the tree
under test first on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import json
import linecache
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any

from ropefix.fix import hazards
from ropefix.prove import callpaths, layouts, tinymodels
from ropefix.prove.callpaths import Shape
from ropefix.prove.tinymodels import Prompt
from ropefix.prove.verdict import Example, Failure

__all__ = ["DECODING", "PROFILES", "Example", "Failure", "Runner", "SuiteResult", "search"]

# PyTorch's device-mismatch texts: operands (RuntimeError) and advanced-indexing indices (IndexError)
DEVICE_ERRORS = (
    "Expected all tensors to be on the same device",
    "indices should be either on cpu or on the same device",
)
# max_examples per profile, as tests/conftest.py registers them for pytest
PROFILES = {"ci": 25, "dev": 60, "deep": 1000}
MAX_ROUNDS = 6  # searches after which remaining new sites are left for a deeper profile
# call paths that decode with cache_position: where stored deltas and the causal mask meet it
HOTFIX_SAMPLES = (
    6  # distinct rope-deltas failures met during a search that the hotfix arm re-runs, besides shrunk ones
)
DECODING = frozenset({"generate-greedy", "generate-beams", "decode-loop", "forward-after-generate", "embeds-generate"})


@dataclass
class SuiteResult:
    model: str
    transformers: str
    transformers_path: str
    torch: str
    profile: str
    examples_run: int = 0
    failures: list[Failure] = field(default_factory=list)
    judged_pairs: list[str] = field(default_factory=list)  # "path/kind" compared against the reference
    not_compared: dict[str, str] = field(default_factory=dict)  # "path/kind" -> why the reference failed
    notes: list[str] = field(default_factory=list)
    replays: list[dict[str, Any]] = field(default_factory=list)  # {"example": ..., "failure": ... | None}
    hotfix: list[dict[str, Any]] = field(default_factory=list)  # {"order", "active", "example", "failure"}
    duration_s: float = 0.0

    @property
    def decode_judged(self) -> int:
        return sum(1 for p in self.judged_pairs if p.split("/", 1)[0] in DECODING)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(d: dict[str, Any]) -> SuiteResult:
        fails = [Failure.from_json(f) for f in d.get("failures", [])]
        replays = [
            {"example": r["example"], "failure": Failure.from_json(r["failure"]) if r.get("failure") else None}
            for r in d.get("replays", [])
        ]
        hotfix = [
            {**h, "failure": Failure.from_json(h["failure"]) if h.get("failure") else None}
            for h in d.get("hotfix", [])
        ]
        return SuiteResult(**{**d, "failures": fails, "replays": replays, "hotfix": hotfix})


# ---------------------------------------------------------------- classification


def _tf_root() -> str:
    import transformers

    return os.path.dirname(os.path.abspath(transformers.__file__))


def site_of(tb: Any, root: str) -> tuple[str, hazards.Site]:
    """("file:line" relative to ``root``, the innermost frame under ``root``) of a traceback."""
    frames = [f for f in traceback.extract_tb(tb) if os.path.abspath(f.filename).startswith(root + os.sep)]
    if not frames:
        return "<outside transformers>", hazards.Site("", "", "")
    f = frames[-1]
    rel = os.path.relpath(os.path.abspath(f.filename), root).replace(os.sep, "/")
    code = (f.line or linecache.getline(f.filename, f.lineno or 0)).strip()
    return f"{rel}:{f.lineno}", hazards.Site(rel, f.name, code)


def is_device_error(e: BaseException) -> bool:
    return any(text in str(e) for text in DEVICE_ERRORS)


def failure_of(e: BaseException, root: str, example: Example, devices: int) -> Failure:
    where, site = site_of(e.__traceback__, root)
    hazard = hazards.classify(site) if is_device_error(e) else f"error:{type(e).__name__}"
    return Failure(hazard, where, site.code, f"{type(e).__name__}: {e}"[:400], example, devices)


# ---------------------------------------------------------------- running one example


@dataclass(frozen=True)
class Reference:
    """What a call path gives when nothing is split: the expected result, or why there is none."""

    output: Any = None
    where: str = "cpu"  # "cpu", or "cuda:0" when the CPU lacks a kernel the accelerator has
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


def same(a: Any, b: Any, mask: Any = None) -> bool:
    """Bit for bit equal; per-position logits only where the attention mask holds a real token.

    Padded positions are compared by nobody: transformers unmasks fully padded rows on cuda only (an
    sdpa workaround), so their logits differ between the CPU and an accelerator by design.
    """
    import torch

    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape):
        return False
    if mask is not None and a.dim() == 3 and tuple(a.shape[:2]) == tuple(mask.shape):
        keep = mask.bool()
        return torch.equal(a[keep], b[keep])
    return torch.equal(a, b)


class Runner:
    """Runs examples for one model; caches references; counts what was compared."""

    def __init__(self, model: str, seed: int = 0, hotfix_arm: bool = False) -> None:
        self.tiny = tinymodels.build(model, seed)
        self.info = layouts.model_info(self.tiny)
        self.units = self.info.units
        self.root = _tf_root()
        self._references: dict[tuple, Reference] = {}
        self.judged: set[str] = set()
        self.not_compared: dict[str, str] = {}
        self.notes: list[str] = []
        self.unplaceable: dict[str, str] = {}  # layout -> why accelerate or transformers refused it
        self.hotfix_arm = hotfix_arm
        self.hotfix_checks: list[dict[str, Any]] = []
        self._sampled: set[tuple[str, str, str]] = set()
        self.examples_run = 0

    def _example(self, layout: layouts.Layout, prompt: Prompt, path: str, shape: Shape, arm: str) -> Example:
        return Example(str(self.tiny.family.name), layout.to_json(), asdict(prompt), path, asdict(shape), arm)

    def reference(self, prompt: Prompt, path: str, shape: Shape) -> Reference:
        """The call on the plain CPU model; on one simulated accelerator when the CPU itself cannot run it."""
        key = (prompt, path, shape)
        if key in self._references:
            return self._references[key]
        inputs = tinymodels.inputs(self.tiny, prompt)
        try:
            ref = Reference(_as_cpu(callpaths.call(path, self.tiny.model, inputs, shape)))
        except Exception as cpu_error:  # noqa: BLE001 - a path the CPU cannot run is recorded, not raised
            cpu_where, _ = site_of(cpu_error.__traceback__, self.root)
            why = f"{type(cpu_error).__name__}: {cpu_error} at {cpu_where}"[:400]
            one = layouts.Layout("one-accelerator", {"": 0}, "cuda:0", 1, inputs_to="model.device")
            try:
                ref = Reference(self.placed(one, prompt, path, shape), "cuda:0")
                self.notes.append(f"{path}/{prompt.kind}: the CPU cannot run it ({why}); reference on cuda:0")
            except Exception:  # noqa: BLE001 - neither runs it: the pair cannot be compared
                ref = Reference(error=why)
        self._references[key] = ref
        return ref

    def placed(self, layout: layouts.Layout, prompt: Prompt, path: str, shape: Shape) -> Any:
        """Run on a fresh model placed as a user places it (``layouts.place``: dispatch_model or
        from_pretrained(device_map=...)), the processor's output moved as a whole to the layout's input
        device; returns the output (on the CPU) or raises (``layouts.NotPlaceable`` before running)."""
        from ropefix import devices

        with devices.simulate(n=layout.n_devices, kind="cuda"):
            model = layouts.place(self.tiny, layout)
            inp = callpaths.to_device(tinymodels.inputs(self.tiny, prompt), layout.input_device)
            return _as_cpu(callpaths.call(path, model, inp, shape))

    def check(
        self, layout: layouts.Layout, prompt: Prompt, path: str, shape: Shape, arm: str = "placed"
    ) -> Failure | None:
        """One example through every oracle; a Failure if any says no."""
        self.examples_run += 1
        example = self._example(layout, prompt, path, shape, arm)
        ref = self.reference(prompt, path, shape)
        if not ref.ok:
            self.not_compared.setdefault(example.pair, ref.error)
            return None
        try:
            out = self.placed(layout, prompt, path, shape)
        except layouts.NotPlaceable as e:  # accelerate or transformers refuses the layout: listed, not judged
            self.unplaceable.setdefault(layout.short()[:160], e.reason[:200])
            return None
        except Exception as e:  # noqa: BLE001 - every failure is classified, none dropped
            self.judged.add(example.pair)
            failure = failure_of(e, self.root, example, layout.n_devices if not layout.one_accelerator else 1)
            key = (layout.short(), prompt.kind, path)
            wanted = self.hotfix_arm and failure.hazard == "rope-deltas" and len(self._sampled) < HOTFIX_SAMPLES
            if (
                wanted and key not in self._sampled
            ):  # a few distinct failing layouts met on the way, besides the shrunk
                self._sampled.add(key)
                self.check_hotfix(layout, prompt, path, shape, ref)
            return failure
        self.judged.add(example.pair)
        if not same(out, ref.output, tinymodels.inputs(self.tiny, prompt).get("attention_mask")):
            return Failure(
                "output-mismatch", "<result>", "", f"placed run differs from the reference on {ref.where}", example
            )
        return None

    def check_hotfix(self, layout: layouts.Layout, prompt: Prompt, path: str, shape: Shape, ref: Reference) -> None:
        """The third arm: a layout that failed at the rope-deltas line, again with ``ropefix.hotfix`` in every
        order a user of its loader can write; it must give the reference's result."""
        from ropefix import devices
        from ropefix.prove import hotfix_orders

        mask = tinymodels.inputs(self.tiny, prompt).get("attention_mask")
        for order in hotfix_orders.orders_for(layout):
            example = self._example(layout, prompt, path, shape, f"hotfix:{order}")
            failure: Failure | None = None
            fix = None
            try:
                with devices.simulate(n=layout.n_devices, kind="cuda"):
                    model, fix = hotfix_orders.place(order, self.tiny, layout)
                    inp = callpaths.to_device(tinymodels.inputs(self.tiny, prompt), layout.input_device)
                    out = _as_cpu(callpaths.call(path, model, inp, shape))
                if not same(out, ref.output, mask):
                    failure = Failure(
                        "output-mismatch", "<result>", "", "hotfixed run differs from the reference", example
                    )
            except layouts.NotPlaceable:
                continue
            except Exception as e:  # noqa: BLE001 - a hotfix that does not hold is a finding, classified
                failure = failure_of(e, self.root, example, layout.n_devices)
            finally:
                active = bool(fix is not None and fix.active)
                if fix is not None:
                    fix.remove()  # hotfix_class is global: never leave it on for the next example
            self.hotfix_checks.append(
                {"order": order, "active": active, "example": asdict(example), "failure": failure}
            )

    def replay(self, example: dict[str, Any]) -> Failure | None:
        """Run a recorded example again (e.g. an unpatched tree's failing layout on the patched tree)."""
        ex = Example(**example)
        return self.check(*_parts(ex), ex.arm)

    def hotfix_for(self, ex: Example) -> None:
        """The hotfix arm on a recorded failing example (the search's shrunk rope-deltas failures)."""
        layout, prompt, path, shape = _parts(ex)
        ref = self.reference(prompt, path, shape)
        if ref.ok:
            self.check_hotfix(layout, prompt, path, shape, ref)

    def result(self, into: SuiteResult) -> SuiteResult:
        into.examples_run = self.examples_run
        into.judged_pairs = sorted(self.judged)
        into.not_compared = dict(sorted(self.not_compared.items()))
        into.notes = list(dict.fromkeys(self.notes))
        into.hotfix = list(self.hotfix_checks)
        if self.unplaceable:
            first = next(iter(self.unplaceable.items()))
            into.notes.append(f"{len(self.unplaceable)} layout(s) not placeable, e.g. {first[0]}: {first[1]}")
        return into


def _parts(ex: Example) -> tuple[layouts.Layout, Prompt, str, Shape]:
    layout = layouts.Layout.from_json(ex.layout)
    prompt = Prompt(**{**ex.prompt, "grid": tuple(ex.prompt["grid"])})
    return layout, prompt, ex.path, Shape(**ex.shape)


def _as_cpu(out: Any) -> Any:
    return out.cpu() if hasattr(out, "cpu") else out


# ---------------------------------------------------------------- the search


class _NewSite(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(f"{failure.hazard} at {failure.site}: {failure.error}")
        self.failure = failure


def strategies(runner: Runner, max_devices: int = 4) -> Any:
    """Everything one example draws: layout, prompt, call path, generation shape."""
    from hypothesis import strategies as st

    kinds = list(runner.tiny.kinds)  # the prompt kinds this build accepts (probed)
    m = runner.tiny.merge
    rows = runner.tiny.max_batch or 3

    @st.composite
    def example(draw: Any) -> tuple[layouts.Layout, Prompt, str, Shape]:
        layout = draw(layouts.strategy(runner.info, max_devices), label="layout")
        kind = draw(st.sampled_from(kinds), label="kind")
        path = draw(st.sampled_from([p.name for p in callpaths.PATHS.values() if kind in p.kinds]), label="path")
        batch = draw(st.integers(1, min(3, rows)), label="batch")
        prompt = Prompt(
            kind=kind,
            batch=batch,
            length=draw(st.integers(2, 8), label="length"),
            pad=draw(st.integers(0, 3), label="pad") if batch > 1 else 0,
            padding_side=draw(st.sampled_from(["left", "right"]), label="padding_side"),
            grid=(
                draw(st.integers(1, 2), label="frames") if "video" in kind else 1,
                m * draw(st.integers(1, 2), label="h"),
                m * draw(st.integers(1, 2), label="w"),
            ),
        )
        beams = draw(st.integers(1, 3), label="num_beams")
        shape = Shape(
            max_new_tokens=draw(st.integers(1, 3), label="max_new_tokens"),
            num_beams=max(beams, 2) if path == "generate-beams" else 1,
            num_return_sequences=draw(st.integers(1, beams), label="num_return_sequences")
            if path == "generate-beams"
            else 1,
        )
        return layout, prompt, path, shape

    return example()


# The first examples every search runs, before hypothesis draws any: what a user of a split model runs
# first (the vision and audio towers on cuda:0, the language model on cuda:1, the processor output left
# on the CPU, one unpadded text prompt) through every decoding path that takes it. A random search can
# miss this one layout for a long time (4.46.3's inputs_embeds generate); these never are.
SEED_PATHS = ("generate-greedy", "decode-loop", "embeds-generate", "generate-beams", "forward-after-generate")


def seeds(runner: Runner) -> list[tuple[layouts.Layout, Prompt, str, Shape]]:
    """The towers-apart layout with the canonical prompt on each decoding path (none for a model without towers)."""
    u = runner.info.units
    if not u.towers or "text" not in runner.tiny.kinds:
        return []
    dmap = layouts.vision_apart(u, 0, [], 2)
    if layouts.on_one_accelerator(dmap):
        return []
    layout = layouts.Layout("vision-apart", dmap, "cpu", 2)
    m = runner.tiny.merge
    prompt = Prompt(kind="text", batch=1, length=4, pad=0, padding_side="left", grid=(1, m, m))
    out = []
    for path in SEED_PATHS:
        if path in callpaths.PATHS and "text" in callpaths.PATHS[path].kinds:
            beams = 2 if path == "generate-beams" else 1
            out.append((layout, prompt, path, Shape(max_new_tokens=2, num_beams=beams, num_return_sequences=1)))
    return out


def search(
    model: str,
    profile: str = "ci",
    max_examples: int | None = None,
    seed: int = 0,
    replay: list[dict[str, Any]] | None = None,
    hotfix_arm: bool = False,
) -> SuiteResult:
    """Replay the given examples, then search ``model``'s layouts; every distinct failure site is kept once, shrunk.

    ``hotfix_arm``: every example that fails at the rope-deltas line runs again with the hotfix in each order."""
    import torch
    import transformers
    from hypothesis import HealthCheck, Phase, given, settings

    start = time.monotonic()
    runner = Runner(model, seed, hotfix_arm)
    result = SuiteResult(model, transformers.__version__, _tf_root(), torch.__version__, profile)
    known: set[tuple[str, str]] = set()

    def keep(failure: Failure) -> bool:
        """Record a failure at a site not seen yet; whether it was new."""
        if (failure.hazard, failure.site) in known:
            return False
        result.failures.append(failure)
        known.add((failure.hazard, failure.site))
        return True

    for ex in replay or []:
        failure = runner.replay(ex)
        result.replays.append({"example": ex, "failure": failure})
        if failure is not None:
            keep(failure)
    for seed_ex in seeds(runner):
        failure = runner.check(*seed_ex)
        if failure is not None and keep(failure):
            if hotfix_arm and failure.hazard == "rope-deltas":
                runner.hotfix_for(failure.example)
            _progress(f"{model}: {failure.hazard} at {failure.site} (a seed example)")
    n = max_examples or PROFILES[profile]
    cfg = settings(
        max_examples=n,
        derandomize=profile == "ci",
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.generate, Phase.shrink] if profile == "ci" else list(Phase),
        print_blob=False,
    )

    @cfg
    @given(strategies(runner))
    def prop(ex: tuple[layouts.Layout, Prompt, str, Shape]) -> None:
        failure = runner.check(*ex)
        if failure is not None and (failure.hazard, failure.site) not in known:
            raise _NewSite(failure)

    for _ in range(MAX_ROUNDS):
        try:
            prop()
            break
        except _NewSite as e:  # hypothesis re-raises the shrunk example's failure last
            keep(e.failure)
            if hotfix_arm and e.failure.hazard == "rope-deltas":
                runner.hotfix_for(e.failure.example)
            _progress(f"{model}: {e.failure.hazard} at {e.failure.site} ({runner.examples_run} examples)")
    runner.result(result)
    result.duration_s = round(time.monotonic() - start, 2)
    return result


def _progress(msg: str) -> None:
    from ropefix import ui

    ui.info(msg)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    """``python -m ropefix.prove.suite --model M [--profile P] [--replay FILE]``: JSON on stdout, one object per model."""
    ap = argparse.ArgumentParser(prog="python -m ropefix.prove.suite")
    ap.add_argument("--model", action="append", required=True)
    ap.add_argument("--profile", default="ci", choices=sorted(PROFILES))
    ap.add_argument("--max-examples", type=_positive)
    ap.add_argument("--replay", help="JSON file: {model: [example, ...]} to run before the search")
    ap.add_argument(
        "--hotfix", action="store_true", help="re-run rope-deltas failures with ropefix.hotfix (each order)"
    )
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    replays: dict[str, list[dict[str, Any]]] = {}
    if args.replay:
        with open(args.replay, encoding="utf-8") as fh:
            replays = json.load(fh)
    out = []
    for m in args.model:
        try:
            out.append(
                search(m, args.profile, args.max_examples, replay=replays.get(m), hotfix_arm=args.hotfix).to_json()
            )
        except Exception as e:  # noqa: BLE001 - one model that cannot be built must not hide the others
            out.append({"model": m, "error": f"{type(e).__name__}: {e}"})
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
