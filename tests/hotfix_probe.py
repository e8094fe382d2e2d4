"""Run inside an environment holding one transformers release: hotfix red/green under the simulator.

The state a split model reaches (deltas stored on one accelerator at prefill, the decode step's
``cache_position`` on another) is produced on a tiny model, then a hand-written decode step and a
``generate`` run: without the hotfix, with ``hotfix(model)``, and with ``hotfix_class``. Prints one
JSON object.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import sys
import traceback

import torch

from ropefix import devices
from ropefix import hotfix as hf
from ropefix.prove import tinymodels
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
            if DEVICE_ERROR in str(e):
                frames = [f for f in traceback.extract_tb(e.__traceback__) if "transformers" in f.filename]
                return f"red: {frames[-1].line}" if frames else "red"
            raise
        finally:
            if handle is not None:
                handle.remove()


def main(fam: str) -> None:
    import transformers

    from ropefix.fix import engine, rules

    module = importlib.import_module(tinymodels.family(fam).module)
    cls = getattr(module, tinymodels.family(fam).model_class)
    findings = engine.rewrite(inspect.getsource(module), rules.select(None), fix=False).findings
    result = {
        "version": transformers.__version__,
        "scan_affected": any(f.status == rules.AFFECTED for _, f in findings),
        "hazardous": hf.is_hazardous(cls),
        "patched": hf.hotfix(tinymodels.fresh(fam).model).patched,
        **{fix: decode_step(fam, fix) for fix in ("none", "instance", "class", "none-again")},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
