"""The regression suite: a hypothesis search over layouts, prompts and call paths of one tiny model.

Every example runs a call path twice: on one plain CPU model (the baseline) and on a copy placed
by accelerate across simulated accelerators. Oracles:

- a device failure (PyTorch's "same device" error) is a finding, classified by the innermost
  transformers frame of its traceback into the hazard it belongs to;
- a placed run must return the baseline bit for bit (all arithmetic is on the CPU);
- a path that fails on one plain device is recorded apart (``baseline_errors``): ``verify``
  compares those between the unpatched and the patched tree, so a fix that breaks a path that
  worked before (the naive one-liner does) is caught.

The search never hides a failure: each new failure site is recorded with hypothesis's shrunk
example, then the search goes on with the same strategies until a whole run meets no new site.
Run it in a process of its own (``python -m ropefix.prove.suite``) with the tree under test first on
``PYTHONPATH``.
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

from ropefix.prove import callpaths, layouts, tinymodels
from ropefix.prove.callpaths import Shape
from ropefix.prove.tinymodels import Prompt

# PyTorch's device-mismatch texts: operands (RuntimeError) and advanced-indexing indices (IndexError)
DEVICE_ERRORS = (
    "Expected all tensors to be on the same device",
    "indices should be either on cpu or on the same device",
)
# max_examples per profile, as tests/conftest.py registers them for pytest
PROFILES = {"ci": 25, "dev": 60, "deep": 1000}
MAX_ROUNDS = 6  # searches after which remaining new sites are left for a deeper profile


@dataclass(frozen=True)
class Example:
    model: str
    layout: dict[str, Any]
    prompt: dict[str, Any]
    path: str
    shape: dict[str, Any]

    def describe(self) -> str:
        p = self.prompt
        return (
            f"{self.path} on {self.model}, {p['kind']} prompt batch={p['batch']} len={p['length']} "
            f"pad={p['pad']}/{p['padding_side']} grid={tuple(p['grid'])}, shape={self.shape}; "
            f"layout {self.layout['kind']} over {self.layout['n_devices']} devices, inputs on "
            f"{self.layout['input_device']}: {self.layout['device_map']}"
        )


@dataclass(frozen=True)
class Failure:
    hazard: str
    site: str  # "models/qwen2_vl/modeling_qwen2_vl.py:1251", relative to the transformers package
    code: str  # the source line at the site
    error: str
    example: Example


@dataclass
class SuiteResult:
    model: str
    transformers: str
    transformers_path: str
    torch: str
    profile: str
    examples_run: int = 0
    failures: list[Failure] = field(default_factory=list)
    baseline_errors: dict[str, str] = field(default_factory=dict)  # "path/kind" -> error on one device
    duration_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(d: dict[str, Any]) -> SuiteResult:
        fails = [Failure(**{**f, "example": Example(**f["example"])}) for f in d.get("failures", [])]
        return SuiteResult(**{**d, "failures": fails})


# ---------------------------------------------------------------- classification


def _tf_root() -> str:
    import transformers

    return os.path.dirname(os.path.abspath(transformers.__file__))


def site_of(tb: Any, root: str) -> tuple[str, str, str]:
    """(file:line relative to ``root``, source line, function) of the innermost frame under ``root``."""
    frames = [f for f in traceback.extract_tb(tb) if os.path.abspath(f.filename).startswith(root + os.sep)]
    if not frames:
        return ("<outside transformers>", "", "")
    f = frames[-1]
    rel = os.path.relpath(os.path.abspath(f.filename), root).replace(os.sep, "/")
    code = (f.line or linecache.getline(f.filename, f.lineno or 0)).strip()
    return (f"{rel}:{f.lineno}", code, f.name)


def is_device_error(e: BaseException) -> bool:
    return any(text in str(e) for text in DEVICE_ERRORS)


def hazard_of(code: str, function: str) -> str:
    """The named hazard a device failure belongs to, from the failing line and its function."""
    if "delta" in code:  # the stored deltas (or the delta made from them) meet cache_position/positions
        return "rope-deltas"
    if function == "get_rope_index" or "get_rope_index" in function:
        return "rope-index-scatter"
    if "mask" in function or ("cache_position" in code and "arange" in code):
        return "causal-mask"
    if "position_ids" in code or "position" in function:
        return "position-ids"
    if function in ("_update_model_kwargs_for_generation", "prepare_inputs_for_generation"):
        return "generation-kwargs"
    return f"device-mismatch:{function or 'unknown'}"


# ---------------------------------------------------------------- running one example


def _baseline_key(ex_prompt: Prompt, path: str, shape: Shape) -> tuple:
    return (ex_prompt, path, shape)


class Runner:
    """Runs examples for one model; caches single-device baselines."""

    def __init__(self, model: str, seed: int = 0) -> None:
        self.tiny = tinymodels.build(model, seed)
        self.units = layouts.units(self.tiny.model)
        self.root = _tf_root()
        self._baselines: dict[tuple, Any] = {}
        self.baseline_errors: dict[str, str] = {}
        self.examples_run = 0

    def baseline(self, prompt: Prompt, path: str, shape: Shape) -> Any:
        """The same call on one simulated device: the reference a placed run must match bit for bit.

        One *simulated* device, not the plain CPU: transformers takes device-type branches (the
        sdpa mask unmasks fully padded rows on cuda only), so only a cuda:0 run is comparable.
        """
        key = _baseline_key(prompt, path, shape)
        if key not in self._baselines:
            one = layouts.Layout("one-device", {u: 0 for u in self.units.names}, "cuda:0", 1)
            try:
                self._baselines[key] = self.placed(one, prompt, path, shape)
            except Exception as e:  # noqa: BLE001 - the path does not run on one device: not a device finding
                self._baselines[key] = e
                site, _, _ = site_of(e.__traceback__, self.root)
                self.baseline_errors.setdefault(f"{path}/{prompt.kind}", f"{type(e).__name__}: {e} at {site}"[:400])
        return self._baselines[key]

    def placed(self, layout: layouts.Layout, prompt: Prompt, path: str, shape: Shape) -> Any:
        """Run on a copy dispatched over simulated devices; returns the output or raises."""
        import copy

        from accelerate import dispatch_model

        from ropefix import devices

        with devices.simulate(n=layout.n_devices, kind="cuda"):
            model = copy.deepcopy(self.tiny.model)
            tinymodels.reset_state(model)
            dispatch_model(model, device_map=dict(layout.device_map))
            inp = callpaths.to_device(tinymodels.inputs(self.tiny, prompt), layout.input_device)
            out = callpaths.call(path, model, inp, shape)
            return out.cpu() if hasattr(out, "cpu") else out

    def check(self, layout: layouts.Layout, prompt: Prompt, path: str, shape: Shape) -> Failure | None:
        """One example through every oracle; a Failure if any says no."""
        import torch

        self.examples_run += 1
        example = Example(str(self.tiny.family.name), layout.to_json(), {**asdict(prompt)}, path, asdict(shape))
        base = self.baseline(prompt, path, shape)
        if isinstance(base, Exception):
            return None  # recorded in baseline_errors; nothing to compare against
        try:
            out = self.placed(layout, prompt, path, shape)
        except Exception as e:  # noqa: BLE001 - every failure is classified, none dropped
            site, code, function = site_of(e.__traceback__, self.root)
            text = f"{type(e).__name__}: {e}"
            hazard = hazard_of(code, function) if is_device_error(e) else f"error:{type(e).__name__}"
            return Failure(hazard, site, code, text[:400], example)
        if not (out.shape == base.shape and torch.equal(out, base)):
            return Failure("output-mismatch", "<result>", "", "placed run differs from the one-device run", example)
        return None


# ---------------------------------------------------------------- the search


class _NewSite(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(f"{failure.hazard} at {failure.site}: {failure.error}")
        self.failure = failure


def strategies(runner: Runner, max_devices: int = 3) -> Any:
    """Everything one example draws: layout, prompt, call path, generation shape."""
    from hypothesis import strategies as st

    kinds = ["text", "image"] + (["video"] if runner.tiny.video_layout else [])
    m = runner.tiny.merge

    @st.composite
    def example(draw: Any) -> tuple[layouts.Layout, Prompt, str, Shape]:
        layout = draw(layouts.strategy(runner.units, max_devices), label="layout")
        kind = draw(st.sampled_from(kinds), label="kind")
        path = draw(st.sampled_from([p.name for p in callpaths.PATHS.values() if kind in p.kinds]), label="path")
        batch = draw(st.integers(1, 3), label="batch")
        prompt = Prompt(
            kind=kind,
            batch=batch,
            length=draw(st.integers(2, 8), label="length"),
            pad=draw(st.integers(0, 3), label="pad") if batch > 1 else 0,
            padding_side=draw(st.sampled_from(["left", "right"]), label="padding_side"),
            grid=(
                draw(st.integers(1, 2), label="frames") if kind == "video" else 1,
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


def search(model: str, profile: str = "ci", max_examples: int | None = None, seed: int = 0) -> SuiteResult:
    """Search ``model``'s layouts for failures; every distinct failure site is recorded once, shrunk."""
    import torch
    import transformers
    from hypothesis import HealthCheck, Phase, given, settings

    start = time.monotonic()
    runner = Runner(model, seed)
    result = SuiteResult(model, transformers.__version__, _tf_root(), torch.__version__, profile)
    known: set[tuple[str, str]] = set()
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
            result.failures.append(e.failure)
            known.add((e.failure.hazard, e.failure.site))
            _progress(f"{model}: {e.failure.hazard} at {e.failure.site} ({runner.examples_run} examples)")
    result.examples_run = runner.examples_run
    result.baseline_errors = dict(runner.baseline_errors)
    result.duration_s = round(time.monotonic() - start, 2)
    return result


def _progress(msg: str) -> None:
    from ropefix import ui

    ui.info(msg)


def main(argv: list[str] | None = None) -> int:
    """``python -m ropefix.prove.suite --model M [--profile P]``: JSON results on stdout, one object per model."""
    ap = argparse.ArgumentParser(prog="python -m ropefix.prove.suite")
    ap.add_argument("--model", action="append", required=True)
    ap.add_argument("--profile", default="ci", choices=sorted(PROFILES))
    ap.add_argument("--max-examples", type=int)
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    out = []
    for m in args.model:
        try:
            out.append(search(m, args.profile, args.max_examples).to_json())
        except Exception as e:  # noqa: BLE001 - one model that cannot be built must not hide the others
            out.append({"model": m, "error": f"{type(e).__name__}: {e}"})
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
