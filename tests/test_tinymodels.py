"""Tiny models: built from the installed transformers' own classes, with prompts the models accept."""

from __future__ import annotations

import pytest
import torch

from ropefix.errors import RopefixError
from ropefix.prove import tinymodels as tm


@pytest.fixture(scope="module")
def families() -> dict[str, tm.Family]:
    found, _ = tm.discover()
    return {f.name: f for f in found}


def test_discovery_finds_the_two_main_families_from_the_source(families: dict[str, tm.Family]) -> None:
    assert {"qwen2_vl", "qwen2_5_vl"} <= set(families)
    # every discovered family really keeps rope_deltas on the model, read from its module file
    import importlib
    import inspect

    for fam in families.values():
        assert "rope_deltas" in inspect.getsource(importlib.import_module(fam.module))


@pytest.mark.parametrize("name", ["qwen2_vl", "qwen2_5_vl"])
def test_tiny_model_is_tiny_seeded_and_token_ids_fit(name: str) -> None:
    a, b = tm.build(name, seed=0), tm.build(name, seed=1)
    n = sum(p.numel() for p in a.model.parameters())
    assert n < 2_000_000
    assert not torch.equal(next(a.model.parameters()), next(b.model.parameters()))
    assert all(v is None or v < tm.VOCAB for v in a.specials.values())
    assert len({a.specials["image"], a.specials["video"], a.specials["start"], a.specials["end"]}) == 4


@pytest.mark.parametrize("name", ["qwen2_vl", "qwen2_5_vl"])
@pytest.mark.parametrize("kind", ["text", "image", "video"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_prompts_are_accepted_and_placeholders_match_the_grid(name: str, kind: str, side: str) -> None:
    tiny = tm.build(name)
    p = tm.Prompt(kind=kind, batch=2, length=5, pad=2, padding_side=side, grid=(2, 4, 2))
    inp = tm.inputs(tiny, p)
    ids, mask = inp["input_ids"], inp["attention_mask"]
    assert ids.shape == mask.shape and ids.shape[0] == 2
    # the padded row has exactly `pad` zeros in its mask, on the chosen side
    assert int((mask[0] == 0).sum()) == 2
    assert (mask[0, :2] == 0).all() if side == "left" else (mask[0, -2:] == 0).all()
    if kind != "text":
        grid = inp["image_grid_thw" if kind == "image" else "video_grid_thw"]
        merged = int(grid.prod(-1).sum()) // tiny.merge**2
        assert int((ids == tiny.specials[kind]).sum()) == merged
    tm.reset_state(tiny.model)
    with torch.no_grad():
        out = tiny.model(**inp)
    assert out.logits.shape[:2] == ids.shape
    tm.reset_state(tiny.model)


def test_unknown_family_is_a_clear_error() -> None:
    with pytest.raises(RopefixError, match="No tiny model for 'llama'"):
        tm.family("llama")


def test_fresh_copy_does_not_share_state() -> None:
    a = tm.fresh("qwen2_vl")
    base = tm.build("qwen2_vl")
    assert a.model is not base.model
    with torch.no_grad():
        next(a.model.parameters()).add_(1)
    assert not torch.equal(next(a.model.parameters()), next(base.model.parameters()))
