"""Cost of the runtime hotfix per decode step: a tiny model's decode loop, guarded vs unguarded.

    python benchmarks/hotfix.py [MODEL]     # default qwen2_vl, in the transformers this interpreter imports
    PYTHONPATH=src $(PYTHONPATH=src python -c 'from ropefix.releases import relenv; print(relenv.python_for("4.49.0"))') benchmarks/hotfix.py

Plain CPU (no simulator), so only the guard's own cost shows. CPU seconds of this process per decode
step (the prefill is not timed; CPU time, not wall time, so other load on a shared machine does not
count), one torch thread, the best of 100 loops per arm, the arms taking turns loop by loop, in one process:

- ``unguarded``; ``hotfix(model)``; ``hotfix_class`` (the class's methods guarded);
- ``hooked`` and ``hooked + hotfix``: accelerate's AlignDevicesHook on the root (execution device
  cpu), the hotfix applied after it, so its guard sits in ``_old_forward`` as on a dispatched model;
- ``unguarded again``: the noise floor of this machine (unguarded / unguarded).

Then the guard alone: its calls per decode step (forward and prepare_inputs_for_generation of each
guarded module) timed around a method that does nothing, as a share of the unguarded step: the
figure the ratios above measure, without the machine's noise.

Target: guarded / unguarded <= 1.05. On a release the hotfix finds safe it installs nothing, and
the ratios are noise around 1.
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable

import torch
from accelerate.hooks import AlignDevicesHook, add_hook_to_module

import ropefix
from ropefix import hotfix as hf
from ropefix.prove import tinymodels
from ropefix.prove.tinymodels import Prompt

STEPS = 16
LOOPS = 20
ROUNDS = 5


def per_step(model: torch.nn.Module, x: dict) -> float:
    """CPU seconds per decode step after one prefill (the guard runs on every step)."""
    n = x["input_ids"].shape[1]
    tinymodels.reset_state(model)
    with torch.no_grad():
        out = model(**x, cache_position=torch.arange(n), use_cache=True)
        mask = x["attention_mask"]
        start = time.process_time()
        for i in range(STEPS):
            nxt = out.logits[:, -1].argmax(-1)[:, None]
            mask = torch.cat([mask, torch.ones_like(nxt)], -1)
            cp = torch.tensor([n + i])
            out = model(input_ids=nxt, attention_mask=mask, past_key_values=out.past_key_values, cache_position=cp)
        return (time.process_time() - start) / STEPS


def hooked(model: torch.nn.Module) -> torch.nn.Module:
    """A copy with accelerate's hook on the root, as dispatch_model puts it (execution device cpu)."""
    twin = copy.deepcopy(model)
    add_hook_to_module(twin, AlignDevicesHook(execution_device="cpu", io_same_device=True))
    return twin


def arms(model: torch.nn.Module, twin: torch.nn.Module) -> dict[str, tuple[torch.nn.Module, Callable[[], hf.Hotfix]]]:
    none = hf.Hotfix
    return {
        "unguarded": (model, none),
        "hotfix(model)": (model, lambda: ropefix.hotfix(model)),
        "hotfix_class": (model, lambda: hf.hotfix_class(type(model))),
        "hooked": (twin, none),
        "hooked + hotfix": (twin, lambda: ropefix.hotfix(twin)),
        "unguarded again": (model, none),
    }


def guard_alone(model: torch.nn.Module, n: int = 20000) -> float:
    """CPU seconds of one guard call (align included) minus the call it wraps, on ``model``'s holders."""
    from ropefix.hotfix import Guard, _Switch

    x = {"cache_position": torch.tensor([7]), "input_ids": None}
    tinymodels.reset_state(model)
    for m in model.modules():  # deltas stored, as after a prefill: align compares their device on every call
        if "rope_deltas" in vars(m):
            m.rope_deltas = torch.zeros(1, 1, dtype=torch.long)

    def nothing(**kwargs: object) -> None:
        return None

    guard = Guard(nothing, model, _Switch())
    timings = []
    for call in (guard, nothing):
        start = time.process_time()
        for _ in range(n):
            call(**x)
        timings.append((time.process_time() - start) / n)
    tinymodels.reset_state(model)
    return timings[0] - timings[1]


def main(name: str) -> None:
    import transformers

    torch.set_num_threads(1)
    tiny = tinymodels.fresh(name)
    x = tinymodels.inputs(tiny, Prompt(kind="text", length=16))
    twin = hooked(tiny.model)
    per_arm = arms(tiny.model, twin)
    for model, _ in per_arm.values():
        per_step(model, x)  # warm-up: first calls pay for lazy initialisation
    fix = ropefix.hotfix(tiny.model)
    guarded = list(fix.patched)
    fix.remove()
    times: dict[str, list[float]] = {arm: [] for arm in per_arm}
    for _ in range(ROUNDS * LOOPS):  # every arm once per round, so quiet and busy moments hit every arm alike
        for arm, (model, apply) in per_arm.items():
            fix = apply()
            times[arm].append(per_step(model, x))
            fix.remove()
    t = {arm: min(v) for arm, v in times.items()}
    print(
        f"transformers {transformers.__version__}, {name}: guards on {guarded or 'nothing (safe here)'}; CPU ms per decode step (best of {ROUNDS * LOOPS}, interleaved):"
    )
    for arm, base in [
        ("hotfix(model)", "unguarded"),
        ("hotfix_class", "unguarded"),
        ("hooked + hotfix", "hooked"),
        ("unguarded again", "unguarded"),
    ]:
        print(f"  {arm:16} {t[arm] * 1e3:6.3f} vs {base:9} {t[base] * 1e3:6.3f}: ratio {t[arm] / t[base]:.3f}")
    calls = 2 * len(guarded)  # generate calls forward and prepare_inputs_for_generation of each, every step
    alone = min(guard_alone(tiny.model) for _ in range(ROUNDS))
    share = calls * alone / t["unguarded"]
    print(
        f"  guard alone: {alone * 1e6:.2f} us per call, {calls} calls per generate step: {share:.2%} of an unguarded step"
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "qwen2_vl")
