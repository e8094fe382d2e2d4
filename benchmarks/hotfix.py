"""Cost of the runtime hotfix: a prefill and decode loop on a tiny model, guarded vs unguarded.

    python benchmarks/hotfix.py [MODEL]     # default qwen2_vl, in the transformers this interpreter imports
    $(python -c 'from ropefix import relenv; print(relenv.python_for("4.57.6"))') benchmarks/hotfix.py

Plain CPU (no simulator), so only the guard's own cost shows. Best of 3x5 interleaved runs each, in
one process; the figure is guarded / unguarded (target <= 1.05). On a release the hotfix finds safe it
installs nothing, and the ratio is noise around 1.
"""

from __future__ import annotations

import sys
import time

import torch

import ropefix
from ropefix.prove import tinymodels
from ropefix.prove.tinymodels import Prompt

STEPS = 16


def decode(model: torch.nn.Module, x: dict) -> None:
    n = x["input_ids"].shape[1]
    with torch.no_grad():
        out = model(**x, cache_position=torch.arange(n), use_cache=True)
        mask = x["attention_mask"]
        for i in range(STEPS):
            nxt = out.logits[:, -1].argmax(-1)[:, None]
            mask = torch.cat([mask, torch.ones_like(nxt)], -1)
            cp = torch.tensor([n + i])
            out = model(input_ids=nxt, attention_mask=mask, past_key_values=out.past_key_values, cache_position=cp)


def best(model: torch.nn.Module, x: dict, n: int = 5) -> float:
    times = []
    for _ in range(n):
        tinymodels.reset_state(model)
        t = time.perf_counter()
        decode(model, x)
        times.append(time.perf_counter() - t)
    return min(times)


def main(name: str) -> None:
    import transformers

    torch.set_num_threads(1)
    tiny = tinymodels.fresh(name)
    x = tinymodels.inputs(tiny, Prompt(kind="text", length=16))
    decode(tiny.model, x)  # warm-up: first calls pay for lazy initialisation
    fix = ropefix.hotfix(tiny.model)
    guards = list(fix.patched) or "nothing (safe here)"
    fix.remove()
    plain, guarded, control = [], [], []
    for _ in range(3):  # interleaved, so drift hits both sides alike
        plain.append(best(tiny.model, x))
        fix = ropefix.hotfix(tiny.model)
        guarded.append(best(tiny.model, x))
        fix.remove()
        control.append(best(tiny.model, x))  # unguarded again: the noise floor of this machine
    p, g, c = min(plain), min(guarded), min(control)
    print(f"transformers {transformers.__version__}, {name}: guards on {guards}")
    print(
        f"prefill + {STEPS} decode steps: unguarded {p * 1e3:.1f} ms, guarded {g * 1e3:.1f} ms, ratio {g / p:.3f} "
        f"(unguarded/unguarded control: {c / p:.3f})"
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "qwen2_vl")
