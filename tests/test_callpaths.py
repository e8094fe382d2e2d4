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
