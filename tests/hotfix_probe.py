"""Run inside an environment holding one transformers release: hotfix red/green under the simulator.

Two parts. ``decode_step``: the state a split model reaches (deltas stored on one accelerator at
prefill, the decode step's ``cache_position`` on another) is produced on a tiny model by hand, then a
decode step and a ``generate`` run: without the hotfix, with ``hotfix(model)``, with ``hotfix_class``.
``placed``: the model really split (vision tower on cuda:0, the rest on cuda:1, inputs on the CPU) by
``dispatch_model`` and by ``from_pretrained(device_map=...)``, unpatched and in each order of
``ropefix.prove.hotfix_orders``; every run's tokens are compared with the unsplit model's. Prints one
JSON object.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import json
import re
import sys
import traceback

import torch

from ropefix import devices
from ropefix import hotfix as hf
from ropefix.prove import callpaths, layouts, tinymodels
from ropefix.prove import hotfix_orders as orders
from ropefix.prove.callpaths import Shape
from ropefix.prove.tinymodels import Prompt

DEVICE_ERROR = "Expected all tensors to be on the same device"


def _move_deltas(model: torch.nn.Module, device: str) -> None:
    for m in model.modules():
        if isinstance(m.__dict__.get("rope_deltas"), torch.Tensor):
            m.rope_deltas = m.rope_deltas.to(device)


def decode_step(fam: str, fix: str) -> str:
    tiny = tinymodels.fresh(fam)
    # token ids older modeling code reads from the config, which only config.json would set
    source = inspect.getsource(importlib.import_module(tiny.family.module))
    for i, attr in enumerate(sorted(set(re.findall(r"config\.(\w+_token_id)", source)))):
        if getattr(tiny.model.config, attr, None) is None:
            setattr(tiny.model.config, attr, tinymodels.VOCAB - 1 - i)
    with devices.simulate(n=2):
        model = tiny.model.to("cuda:0")
        handle = hf.hotfix(model) if fix == "instance" else hf.hotfix_class(type(model)) if fix == "class" else None
        try:
            x = {k: v.to("cuda:0") for k, v in tinymodels.inputs(tiny, Prompt(kind="text")).items()}
            n = x["input_ids"].shape[1]
            with torch.no_grad():
                out = model(**x, cache_position=torch.arange(n, device="cuda:0"), use_cache=True)
                holders = [m for m in model.modules() if isinstance(m.__dict__.get("rope_deltas"), torch.Tensor)]
                if not holders:
                    return "no-deltas"
                _move_deltas(model, "cuda:1")  # where a split layout leaves them: the prefill inputs' device
                nxt = out.logits[:, -1].argmax(-1)[:, None]
                mask = torch.cat([x["attention_mask"], torch.ones_like(x["attention_mask"][:, :1])], -1)
                model(
                    input_ids=nxt,
                    attention_mask=mask,
                    past_key_values=out.past_key_values,
                    cache_position=torch.tensor([n], device="cuda:0"),
                    use_cache=True,
                )
                model(**x, use_cache=False)  # a plain forward (no cache_position) still works
                # generate: from 5.0 the deltas are combined in prepare_inputs_for_generation, which
                # a forward loop never calls; after every forward they are left where a split leaves them
                hook = model.register_forward_hook(lambda *_: _move_deltas(model, "cuda:1"))
                try:
                    model.generate(**x, max_new_tokens=3, do_sample=False)
                finally:
                    hook.remove()
            return "green"
        except RuntimeError as e:
            return _red(e)
        finally:
            if handle is not None:
                handle.remove()


def _red(e: RuntimeError) -> str:
    if DEVICE_ERROR not in str(e):
        raise e
    frames = [f for f in traceback.extract_tb(e.__traceback__) if "transformers" in f.filename]
    return f"red: {frames[-1].line}" if frames else "red"


def placed(fam: str, inputs_on: str = "cpu") -> dict[str, str]:
    """generate on the split model per loader, unpatched and in every order: green (the unsplit model's
    tokens), mismatch or red; keys ``LOADER/unpatched``, ``LOADER/ORDER`` and ``LOADER/ORDER-removed``."""
    tiny = tinymodels.build(fam)
    x = tinymodels.inputs(tiny, Prompt(kind="text"))
    with devices.simulate(n=1):
        reference = _generate(copy.deepcopy(tiny.model).to("cuda:0"), x, "cuda:0")
    out = {}
    with devices.simulate(n=2):
        for loader, applicable in orders.BY_LOADER.items():
            layout = layouts.Layout("vision-apart", layouts.towers_apart(tiny.model), inputs_on, loader=loader)
            out[f"{loader}/unpatched"] = _judge(layouts.place(tiny, layout), x, inputs_on, reference)
            for order in applicable:
                model, fix = orders.place(order, tiny, layout)
                out[f"{loader}/{order}"] = _judge(model, x, inputs_on, reference)
                fix.remove()  # must give the original behaviour back
                out[f"{loader}/{order}-removed"] = _judge(model, x, inputs_on, reference)
    return out


def _generate(model: torch.nn.Module, x: dict, inputs_on: str) -> torch.Tensor:
    return callpaths.call("generate-greedy", model, callpaths.to_device(x, inputs_on), Shape(max_new_tokens=3))


def _judge(model: torch.nn.Module, x: dict, inputs_on: str, reference: torch.Tensor) -> str:
    try:
        return "green" if _generate(model, x, inputs_on).equal(reference) else "mismatch"
    except RuntimeError as e:
        return _red(e)


def main(fam: str) -> None:
    import transformers

    from ropefix.fix import engine, rules

    module = importlib.import_module(tinymodels.family(fam).module)
    classes = [c for c in vars(module).values() if isinstance(c, type) and c.__module__ == module.__name__]
    findings = engine.rewrite(inspect.getsource(module), rules.select(None), fix=False).findings
    result = {
        "version": transformers.__version__,
        "scan_affected": any(f.status == rules.AFFECTED for _, f in findings),
        "hazardous": any(hf.is_hazardous(c) for c in classes),  # in the file the engine scans
        "patched": hf.hotfix(tinymodels.fresh(fam).model).patched,
        **{fix: decode_step(fam, fix) for fix in ("none", "instance", "class", "none-again")},
        "placed": placed(fam),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
