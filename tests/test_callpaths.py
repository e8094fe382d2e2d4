"""Call paths on one plain CPU model: each runs, is deterministic, and leaves no rope_deltas behind."""

from __future__ import annotations

import pytest
import torch

from ropefix.prove import callpaths as cp
from ropefix.prove import tinymodels as tm


@pytest.mark.parametrize("path", sorted(cp.PATHS))
def test_each_path_runs_and_repeats_bit_for_bit(path: str) -> None:
    tiny = tm.build("qwen2_vl")
    inp = tm.inputs(tiny, tm.Prompt(kind="text", batch=2, pad=1))
    shape = cp.Shape(max_new_tokens=2, num_beams=2, num_return_sequences=2)
    a = cp.call(path, tiny.model, inp, shape)
    b = cp.call(path, tiny.model, inp, shape)
    assert isinstance(a, torch.Tensor) and torch.equal(a, b)
    if path == "generate-beams":
        assert a.shape[0] == 4  # batch × num_return_sequences
    if path.startswith("generate"):
        assert a.shape[1] == inp["input_ids"].shape[1] + 2


def test_decode_loop_matches_greedy_generate() -> None:
    # the hand-written loop is the same computation as generate's greedy search
    tiny = tm.build("qwen2_5_vl")
    inp = tm.inputs(tiny, tm.Prompt(kind="text", batch=1, length=6))
    shape = cp.Shape(max_new_tokens=3)
    gen = cp.call("generate-greedy", tiny.model, inp, shape)
    loop = cp.call("decode-loop", tiny.model, inp, shape)
    assert torch.equal(gen[:, inp["input_ids"].shape[1] :], loop[:, :3])


def test_call_starts_from_a_clean_state() -> None:
    tiny = tm.build("qwen2_vl")
    inp = tm.inputs(tiny, tm.Prompt(kind="image", batch=1))
    cp.call("generate-greedy", tiny.model, inp, cp.Shape())
    assert any(getattr(m, "rope_deltas", None) is not None for m in tiny.model.modules())
    tm.reset_state(tiny.model)
    assert all(getattr(m, "rope_deltas", None) is None for m in tiny.model.modules())


def test_embeds_paths_accept_text_only() -> None:
    assert cp.PATHS["embeds-forward"].kinds == ("text",)
    assert "image" in cp.PATHS["forward"].kinds


def test_to_device_moves_every_tensor_like_batchfeature() -> None:
    # users move the whole processor output: ids, masks and grids go to the device too, nothing is cast
    from ropefix import devices

    tiny = tm.build("qwen2_5_vl")
    inp = tm.inputs(tiny, tm.Prompt(kind="video", batch=2, pad=1, grid=(2, 2, 2)))
    tensors = {k for k, v in inp.items() if isinstance(v, torch.Tensor)}  # 4.49's video timing is a list
    with devices.simulate(n=1):
        moved = cp.to_device(inp, "cuda:0")
        assert {k: (str(moved[k].device), moved[k].dtype) for k in tensors} == {
            k: ("cuda:0", inp[k].dtype) for k in tensors
        }
        assert {k: moved[k] for k in set(inp) - tensors} == {k: inp[k] for k in set(inp) - tensors}


class _NarrowForward(torch.nn.Module):
    """A model whose forward takes neither cache_position nor **kwargs, as 4.45's Qwen2-VL: the decode
    loop must not pass it what it cannot take."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls: list[set[str]] = []

    def forward(self, input_ids=None, attention_mask=None, past_key_values=None, use_cache=None):
        self.calls.append({k for k, v in locals().items() if k not in ("self", "__class__") and v is not None})
        return self.inner(
            input_ids=input_ids, attention_mask=attention_mask, past_key_values=past_key_values, use_cache=use_cache
        )


def test_decode_loop_passes_only_what_the_forward_takes() -> None:
    tiny = tm.build("qwen2_vl")
    narrow = _NarrowForward(tiny.model)
    inp = tm.inputs(tiny, tm.Prompt(kind="text", batch=1, length=6))
    out = cp.call(
        "decode-loop", narrow, {k: inp[k] for k in ("input_ids", "attention_mask")}, cp.Shape(max_new_tokens=2)
    )
    assert out.shape == (1, 3) and len(narrow.calls) == 3
    assert all("past_key_values" in c for c in narrow.calls[1:])  # the cache goes under the name it takes


@pytest.mark.parametrize("kind", ["image", "video", "image+video"])
def test_multimodal_prompts_run_greedy_and_forward(kind: str) -> None:
    tiny = tm.build("qwen2_5_vl")
    inp = tm.inputs(tiny, tm.Prompt(kind=kind, batch=2, pad=1, grid=(2, 2, 2)))
    gen = cp.call("generate-greedy", tiny.model, inp, cp.Shape(max_new_tokens=2))
    assert gen.shape == (2, inp["input_ids"].shape[1] + 2)
    assert cp.call("forward", tiny.model, inp, cp.Shape()).shape[:2] == inp["input_ids"].shape
