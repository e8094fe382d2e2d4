"""Tiny models: built from the installed transformers' own classes, with prompts shaped like a processor's output."""

from __future__ import annotations

import importlib
import inspect
import types

import pytest
import torch

from ropefix.errors import RopefixError
from ropefix.prove import prompts
from ropefix.prove import tinymodels as tm


@pytest.fixture(scope="module")
def families() -> dict[str, tm.Family]:
    found, _ = tm.discover()
    return {f.name: f for f in found}


def test_discovery_finds_the_two_main_families_from_the_source(families: dict[str, tm.Family]) -> None:
    assert {"qwen2_vl", "qwen2_5_vl"} <= set(families)
    # every discovered family really mentions rope_deltas, read from its module file; one class each
    for fam in families.values():
        assert "rope_deltas" in inspect.getsource(importlib.import_module(fam.module))
        assert fam.model_class.endswith("ForConditionalGeneration")


@pytest.mark.parametrize("name", ["qwen2_vl", "qwen2_5_vl"])
def test_tiny_model_is_tiny_seeded_and_token_ids_fit(name: str) -> None:
    a, b = tm.build(name, seed=0), tm.build(name, seed=1)
    n = sum(p.numel() for p in a.model.parameters())
    assert n < 2_000_000
    assert not torch.equal(next(a.model.parameters()), next(b.model.parameters()))
    assert all(v is None or v < tm.VOCAB for v in a.specials.values())
    assert len({a.specials["image"], a.specials["video"], a.specials["start"], a.specials["end"]}) == 4
    # every special id sits above the random text ids, so no text token is read as a placeholder
    assert all(v is None or v >= tm.SPARE_IDS for k, v in a.specials.items())


@pytest.mark.parametrize("name", ["qwen2_vl", "qwen2_5_vl"])
def test_kinds_are_probed_on_the_model(name: str) -> None:
    tiny = tm.build(name)
    assert {"text", "image", "video", "image+video"} <= set(tiny.kinds)
    assert "audio" not in tiny.kinds  # these forwards take no input_features: said in the notes
    assert any(n.startswith("audio: the forward takes no input_features") for n in tiny.notes)
    assert tiny.video_layout == "block"  # what their processors write: one block per video


@pytest.mark.parametrize("name", ["qwen2_vl", "qwen2_5_vl"])
@pytest.mark.parametrize("kind", ["text", "image", "video", "image+video"])
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
    for part in kind.split("+"):
        if part == "text":
            continue
        grid = inp["image_grid_thw" if part == "image" else "video_grid_thw"]
        pixels = inp["pixel_values" if part == "image" else "pixel_values_videos"]
        assert grid.dtype == torch.long and len(grid) == 2  # one item per row
        assert pixels.is_floating_point() and pixels.shape[0] == int(grid.prod(-1).sum())
        merged = int(grid.prod(-1).sum()) // tiny.merge**2
        assert int((ids == tiny.specials[part]).sum()) == merged
    tm.reset_state(tiny.model)
    with torch.no_grad():
        out = tiny.model(**inp)
    assert out.logits.shape[:2] == ids.shape
    tm.reset_state(tiny.model)


def test_video_timing_is_what_the_processor_gives() -> None:
    # Qwen2.5-VL's forward reads second_per_grid_ts; its processor gives temporal_patch_size / fps per video
    tiny = tm.build("qwen2_5_vl")
    assert tiny.io.timing_key == "second_per_grid_ts"
    for fps in (1.0, 4.0):
        inp = tm.inputs(tiny, tm.Prompt(kind="video", batch=2, grid=(2, 2, 2), fps=fps))
        t = inp["second_per_grid_ts"]
        # 4.49-4.51's processor returns it as a Python list (no tensor_type), later ones as a float tensor
        assert isinstance(t, list) == tiny.io.timing_list
        assert (t if isinstance(t, list) else t.tolist()) == [tiny.io.temporal_patch / fps] * 2
    assert tm.build("qwen2_vl").io.timing_key is None  # its forward takes no timing: none is sent
    assert "second_per_grid_ts" not in tm.inputs(tm.build("qwen2_vl"), tm.Prompt(kind="video"))


def test_processors_returning_lists_are_recognised() -> None:
    plain = "        return BatchFeature(data={**text_inputs, **image_inputs, **videos_inputs})\n"
    typed = "        return BatchFeature(\n            data={**a, **f(b)},\n            tensor_type=return_tensors,\n        )\n"
    assert tm._returns_lists(plain) and not tm._returns_lists(typed) and not tm._returns_lists("")


def test_token_types_only_where_the_forward_takes_them() -> None:
    for name in ("qwen2_vl", "qwen2_5_vl"):
        tiny = tm.build(name)
        inp = tm.inputs(tiny, tm.Prompt(kind="image+video", batch=2, pad=1, grid=(1, 2, 2)))
        takes = "mm_token_type_ids" in inspect.signature(type(tiny.model).forward).parameters
        assert ("mm_token_type_ids" in inp) == takes
        assert "moe_mm_token_type_ids" not in inp


def test_token_types_mark_placeholders_as_the_processor_does() -> None:
    tiny = tm.build("qwen2_vl")
    rows = prompts._Row()
    prompts._wrapped(rows, tiny, "image", 3)
    prompts._wrapped(rows, tiny, "video", 2)
    assert rows.types == [0, 1, 1, 1, 0, 0, 2, 2, 0]  # wrappers are text to the processors
    assert rows.moe_types == [1, 1, 1, 1, 1, 2, 2, 2, 2]  # ernie's MoE map counts wrappers in


def test_audio_prompts_for_families_whose_forward_takes_audio(families: dict[str, tm.Family]) -> None:
    takers = [
        f
        for f in families.values()
        if "input_features"
        in inspect.signature(getattr(importlib.import_module(f.module), f.model_class).forward).parameters
    ]
    if not takers:
        pytest.skip("no family of this transformers takes audio (the omni thinkers arrive in 4.52)")
    tiny = tm.build(min(takers, key=lambda f: f.name))
    assert "audio" in tiny.kinds
    p = tm.Prompt(kind="audio", batch=2, pad=1, audio_frames=40)
    inp = tm.inputs(tiny, p)
    feats, fmask = inp["input_features"], inp["feature_attention_mask"]
    assert feats.shape[:2] == (2, tiny.io.mel_bins) and fmask.tolist()[0].count(1) == 32  # shorter clip, padded
    per_clip = [prompts.count(tiny, "audio", (n,)) for n in prompts.audio_lengths(p)]
    assert int((inp["input_ids"] == tiny.specials["audio"]).sum()) == sum(per_clip)
    tm.reset_state(tiny.model)
    with torch.no_grad():
        assert tiny.model(**inp).logits.shape[:2] == inp["input_ids"].shape


def test_unsupported_kind_is_a_clear_error() -> None:
    tiny = tm.build("qwen2_vl")
    with pytest.raises(RopefixError, match="audio prompts are not supported.*input_features"):
        tm.inputs(tiny, tm.Prompt(kind="audio"))
    with pytest.raises(ValueError, match="unknown prompt kind"):
        tm.inputs(tiny, tm.Prompt(kind="smell"))


def test_unknown_family_is_a_clear_error() -> None:
    with pytest.raises(RopefixError, match="No tiny model for 'llama'"):
        tm.family("llama")


def test_a_family_that_cannot_run_text_raises_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    fam = tm.family("qwen2_vl")
    cls = getattr(importlib.import_module(fam.module), fam.model_class)

    def broken(self, *a, **k):
        raise RuntimeError("no kernel for this")

    monkeypatch.setattr(cls, "forward", broken)
    with pytest.raises(RopefixError, match="a text prompt fails on the tiny model: RuntimeError: no kernel for this"):
        tm._build_cached.__wrapped__(fam, 7)


def test_a_config_refusing_its_defaults_is_reported_not_skipped() -> None:
    class Refusing:
        def __init__(self) -> None:
            raise TypeError("Field 'use_bias' expected int, got bool")

    class FooForConditionalGeneration:
        config_class = Refusing

    mod = types.ModuleType("fake_modeling_foo")
    FooForConditionalGeneration.__module__ = mod.__name__
    mod.FooForConditionalGeneration = FooForConditionalGeneration
    why = tm._pick_class("foo", mod)
    assert isinstance(why, str) and "refuses its own defaults" in why and "use_bias" in why


def test_shrinking_keeps_types_and_cuts_per_layer_lists() -> None:
    node = {
        "vocab_size": 100_000,
        "num_hidden_layers": 28,
        "hidden_size": 2560,
        "head_dim": None,
        "moe_intermediate_size": [1536, 512],  # one size per modality: stays a list
        "mlp_layer_types": ["dense"] + ["sparse"] * 27,
        "mlp_only_layers": [0, 5, 27],
        "rope_parameters": {"rope_type": "default", "mrope_section": [22, 22, 20]},
    }
    tm._shrink(node, "text", "")
    assert node["num_hidden_layers"] == tm.TEXT_LAYERS and node["vocab_size"] == tm.VOCAB
    assert node["moe_intermediate_size"] == [32, 32]
    assert node["mlp_layer_types"] == ["dense", "sparse", "sparse", "sparse"]
    assert node["mlp_only_layers"] == [0]
    assert node["head_dim"] == tm.HEAD_DIM  # a head width left to config.json gets one
    assert node["rope_parameters"]["mrope_section"] == [4, 4, 4]  # equal: any (t, h, w) order reads it


def test_mrope_sections_follow_the_rotary_width() -> None:
    node = {
        "num_hidden_layers": 4,
        "vocab_size": 9,
        "head_dim": 256,
        "rope_parameters": {"partial_rotary_factor": 0.5},
    }
    tm._shrink(node, "text", "")
    assert node["rope_parameters"]["mrope_section"] == [2, 2, 2]  # HEAD_DIM * 0.5 rotary, halved, in 3
    flat = {
        "num_hidden_layers": 28,
        "vocab_size": 9,
        "hidden_size": 3584,
        "num_attention_heads": 28,
        "rope_scaling": None,
    }
    tm._shrink(flat, "", "")  # a 4.4x flat config whose default has no rope_scaling: one is added
    assert flat["rope_scaling"]["mrope_section"] == [4, 4, 4] and flat["rope_scaling"]["type"] == "default"


def test_fresh_copy_does_not_share_state() -> None:
    a = tm.fresh("qwen2_vl")
    base = tm.build("qwen2_vl")
    assert a.model is not base.model
    with torch.no_grad():
        next(a.model.parameters()).add_(1)
    assert not torch.equal(next(a.model.parameters()), next(base.model.parameters()))


# ---------------------------------------------------------------- BatchFeature.to semantics


@pytest.mark.parametrize(
    "args",
    [("meta",), (torch.device("meta"),), (torch.float16,), ("meta", torch.float16)],
    ids=["device-str", "device", "dtype", "device+dtype"],
)
def test_batch_to_moves_like_batchfeature(args: tuple) -> None:
    from transformers import BatchFeature

    tiny = tm.build("qwen2_5_vl")
    inp = tm.inputs(tiny, tm.Prompt(kind="image+video", batch=2, pad=1, grid=(1, 2, 2)))
    theirs = BatchFeature(dict(inp)).to(*args)
    ours = prompts.batch_to(inp, *args)
    assert set(ours) == set(theirs.keys())
    for k, v in ours.items():
        if not isinstance(v, torch.Tensor):  # 4.49's video timing is a list of floats: kept as it is
            assert v == theirs[k], k
            continue
        assert (v.device, v.dtype, v.shape) == (theirs[k].device, theirs[k].dtype, theirs[k].shape), k
    # integers move with a device and are never cast; floats are cast only when a dtype is given
    assert ours["input_ids"].dtype == torch.long and ours["pixel_values"].dtype != torch.long
    assert inp["input_ids"].device.type == "cpu"  # the caller's dict is not changed


def test_batch_to_refuses_what_batchfeature_refuses() -> None:
    with pytest.raises(ValueError, match="not supported"):
        prompts.batch_to({"x": torch.ones(1)}, [1, 2])
