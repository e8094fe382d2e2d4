"""The ways callers drive an mRoPE model; each returns its result as a CPU tensor to compare runs bit for bit.

- ``generate-greedy`` / ``generate-beams``: ``generate()`` as chat front-ends call it;
- ``decode-loop``: a hand-written loop calling ``forward`` with ``past_key_values`` and
  ``cache_position``, as serving and RL code does;
- ``forward``: a plain forward without ``cache_position`` or cache (training);
- ``forward-after-generate``: the same, on a model that kept ``rope_deltas`` from a generation;
- ``embeds-forward`` / ``embeds-generate``: ``inputs_embeds`` without ``input_ids``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ropefix.prove.prompts import KINDS, batch_to
from ropefix.prove.tinymodels import reset_state


@dataclass(frozen=True)
class Shape:
    """Generation parameters drawn with the prompt."""

    max_new_tokens: int = 2
    num_beams: int = 2
    num_return_sequences: int = 1


@dataclass(frozen=True)
class CallPath:
    name: str
    run: Callable[[Any, dict[str, Any], Shape], Any]
    kinds: tuple[str, ...] = KINDS  # prompt kinds the path accepts

    def __str__(self) -> str:
        return self.name


def to_device(inputs: dict[str, Any], device: str) -> dict[str, Any]:
    """The processor output moved as users move it (``inputs.to(device)``): every tensor, floats not cast."""
    return batch_to(inputs, device)


def _gen_kwargs(model: Any, shape: Shape) -> dict[str, Any]:
    # pad_token_id given so generate neither warns nor guesses; eos never stops a tiny random model early
    return {"max_new_tokens": shape.max_new_tokens, "do_sample": False, "pad_token_id": 0, "min_new_tokens": 0}


def _greedy(model: Any, inputs: dict[str, Any], shape: Shape) -> Any:
    return model.generate(**inputs, **_gen_kwargs(model, shape)).cpu()


def _beams(model: Any, inputs: dict[str, Any], shape: Shape) -> Any:
    r = min(shape.num_return_sequences, shape.num_beams)
    return model.generate(
        **inputs, **_gen_kwargs(model, shape), num_beams=shape.num_beams, num_return_sequences=r
    ).cpu()


def _decode_loop(model: Any, inputs: dict[str, Any], shape: Shape) -> Any:
    import torch

    ids = inputs["input_ids"]
    mask = inputs["attention_mask"]
    device = ids.device
    params = inspect.signature(type(model).forward).parameters
    # cache_position where the forward can take it (4.45-4.46 forwards have neither it nor **kwargs)
    takes_position = "cache_position" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
    cache_position = torch.arange(ids.shape[1], device=device)
    position = {"cache_position": cache_position} if takes_position else {}
    out = model(**inputs, **position, use_cache=True)  # the model makes its own cache
    # the cache argument was renamed in later 5.x releases (``cache``); use what this forward takes
    cache_kw = "cache" if "cache" in params else "past_key_values"
    tokens = []
    for _ in range(shape.max_new_tokens):
        nxt = out.logits[:, -1].argmax(-1).to(device)
        tokens.append(nxt.cpu())
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
        cache_position = cache_position[-1:] + 1
        position = {"cache_position": cache_position} if takes_position else {}
        out = model(
            input_ids=nxt[:, None],
            attention_mask=mask,
            use_cache=True,
            **position,
            **{cache_kw: getattr(out, cache_kw, None) or out.past_key_values},
        )
    tokens.append(out.logits[:, -1].argmax(-1).cpu())
    return torch.stack(tokens, dim=1)


def _forward(model: Any, inputs: dict[str, Any], shape: Shape) -> Any:
    return model(**inputs, use_cache=False).logits.cpu()


def _forward_after_generate(model: Any, inputs: dict[str, Any], shape: Shape) -> Any:
    _greedy(model, inputs, shape)
    return _forward(model, inputs, shape)


def _embeds(model: Any, inputs: dict[str, Any]) -> dict[str, Any]:
    emb = model.get_input_embeddings()
    embeds = emb(inputs["input_ids"].to(emb.weight.device)).to(inputs["input_ids"].device)
    return {"inputs_embeds": embeds, "attention_mask": inputs["attention_mask"]}


def _embeds_forward(model: Any, inputs: dict[str, Any], shape: Shape) -> Any:
    return model(**_embeds(model, inputs), use_cache=False).logits.cpu()


def _embeds_generate(model: Any, inputs: dict[str, Any], shape: Shape) -> Any:
    return model.generate(**_embeds(model, inputs), **_gen_kwargs(model, shape)).cpu()


PATHS: dict[str, CallPath] = {
    p.name: p
    for p in (
        CallPath("generate-greedy", _greedy),
        CallPath("generate-beams", _beams),
        CallPath("decode-loop", _decode_loop),
        CallPath("forward", _forward),
        CallPath("forward-after-generate", _forward_after_generate),
        CallPath("embeds-forward", _embeds_forward, ("text",)),
        CallPath("embeds-generate", _embeds_generate, ("text",)),
    )
}


def call(path: str | CallPath, model: Any, inputs: dict[str, Any], shape: Shape) -> Any:
    """Run one call path from a clean state (no rope_deltas kept from an earlier call)."""
    import torch

    p = PATHS[path] if isinstance(path, str) else path
    reset_state(model)
    with torch.no_grad():
        return p.run(model, inputs, shape)
