"""hotfix: red/green under the simulator, on synthetic modules and on real affected releases."""

from __future__ import annotations

import copy
import inspect
import json
import os
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from accelerate import dispatch_model
from accelerate.hooks import remove_hook_from_module
from releaseenv import release_python

import ropefix
from ropefix import devices
from ropefix import hotfix as hf
from ropefix.errors import RopefixError
from ropefix.prove import callpaths, layouts, tinymodels
from ropefix.prove import hotfix_orders as orders
from ropefix.prove.callpaths import Shape
from ropefix.prove.tinymodels import Prompt
from ropefix.store import Store

DEVICE_ERROR = "Expected all tensors to be on the same device"


class HazardModel(torch.nn.Module):
    """Synthetic stand-in: stores deltas at prefill and adds them to cache_position[0] when decoding."""

    def __init__(self) -> None:
        super().__init__()
        self.rope_deltas = None

    def forward(self, ids: torch.Tensor, cache_position: torch.Tensor | None = None) -> torch.Tensor:
        if self.rope_deltas is None or cache_position is None:
            self.rope_deltas = ids[:, :1] * 0 + 3
            return ids
        return cache_position[0] + self.rope_deltas


class SafeModel(torch.nn.Module):
    """Keeps deltas too, but never adds them to cache_position: the hotfix leaves it alone."""

    def __init__(self) -> None:
        super().__init__()
        self.rope_deltas = None

    def forward(self, ids: torch.Tensor, cache_position: torch.Tensor | None = None) -> torch.Tensor:
        return ids + (0 if self.rope_deltas is None else self.rope_deltas.to(ids.device))


class Outer(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.model = inner

    def forward(self, ids: torch.Tensor, cache_position: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(ids, cache_position=cache_position)


def _decode(model: torch.nn.Module) -> torch.Tensor:
    ids = torch.ones(1, 4, dtype=torch.long, device="cuda:1")
    model(ids, cache_position=torch.arange(4, device="cuda:1"))  # prefill: deltas land on cuda:1
    return model(ids[:, -1:], cache_position=torch.tensor([4], device="cuda:0"))


def test_import_stays_cheap_and_hotfix_is_callable() -> None:
    code = "import sys, ropefix; assert 'torch' not in sys.modules; assert callable(ropefix.hotfix); print('ok')"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "ok\n"
    assert ropefix.hotfix_class is hf.hotfix_class


def test_synthetic_red_then_green_with_instance_hotfix() -> None:
    with devices.simulate(n=2):
        with pytest.raises(RuntimeError, match=DEVICE_ERROR):
            _decode(Outer(HazardModel()))
        model = Outer(HazardModel())
        fix = ropefix.hotfix(model)
        assert fix.active and fix.patched == ["model"]
        out = _decode(model)
        assert devices.virtual_device(out) == torch.device("cuda:0") and out.item() == 7
        fix.remove()
        with pytest.raises(RuntimeError, match=DEVICE_ERROR):
            _decode(model)


def test_class_hotfix_guards_every_instance_until_removed() -> None:
    with devices.simulate(n=2):
        fix = hf.hotfix_class(HazardModel)
        try:
            assert "HazardModel" in fix.patched and "SafeModel" not in fix.patched
            assert _decode(Outer(HazardModel())).item() == 7
        finally:
            fix.remove()
        with pytest.raises(RuntimeError, match=DEVICE_ERROR):
            _decode(Outer(HazardModel()))


def test_no_op_where_not_needed_and_without_cache_position() -> None:
    assert not ropefix.hotfix(torch.nn.Linear(2, 2)).active
    assert not ropefix.hotfix(Outer(SafeModel())).active
    model = HazardModel()
    ropefix.hotfix(model)
    ids = torch.ones(1, 3, dtype=torch.long)
    model(ids)  # a plain forward without cache_position (training) is untouched
    assert model(ids).equal(ids)


class SplitHazard(torch.nn.Module):
    """The 4.49 shape in miniature: the root keeps the deltas and adds them to cache_position[0].

    Split by accelerate, the root's execution device is its first module's (``tower``) while the
    deltas are made on the language model's (``text``): inputs on any other device fail at decode.
    """

    def __init__(self) -> None:
        super().__init__()
        self.tower = torch.nn.Linear(1, 1)
        self.text = torch.nn.Linear(1, 1)
        self.rope_deltas = None

    def forward(self, ids: torch.Tensor, cache_position: torch.Tensor | None = None) -> torch.Tensor:
        if cache_position is None or cache_position[0] == 0:
            self.rope_deltas = (ids[:, :1] * 0 + 3).to(self.text.weight.device)
            return ids
        return cache_position[0] + self.rope_deltas


SPLIT = {"tower": 0, "text": 1}


def _split_decode(model: torch.nn.Module, inputs_on: str = "cpu") -> torch.Tensor:
    ids = torch.ones(1, 4, dtype=torch.long, device=inputs_on)
    model(ids, cache_position=torch.arange(4, device=inputs_on))
    return model(ids[:, -1:], cache_position=torch.tensor([4], device=inputs_on))


def test_a_forward_pre_hook_aligns_too_early_under_accelerate() -> None:
    """Why the guard wraps the innermost forward: a pre-hook sees cache_position before accelerate moves it."""
    with devices.simulate(n=2):
        model = SplitHazard()
        model.register_forward_pre_hook(lambda mod, args, kwargs: (args, hf.align(mod, kwargs)), with_kwargs=True)
        dispatch_model(model, device_map=SPLIT)
        with pytest.raises(RuntimeError, match=DEVICE_ERROR):
            _split_decode(model)


@pytest.mark.parametrize("inputs_on", ["cpu", "cuda:1"])
@pytest.mark.parametrize("order", ["before-dispatch", "after-dispatch", "class-before-dispatch"])
def test_synthetic_split_red_then_green_in_every_order(order: str, inputs_on: str) -> None:
    with devices.simulate(n=2):
        with pytest.raises(RuntimeError, match=DEVICE_ERROR):
            _split_decode(dispatch_model(SplitHazard(), device_map=SPLIT), inputs_on)
        model = SplitHazard()
        fix = hf.hotfix_class(SplitHazard) if order == "class-before-dispatch" else hf.Hotfix()
        fix = hf.hotfix(model) if order == "before-dispatch" else fix
        dispatch_model(model, device_map=SPLIT)
        fix = hf.hotfix(model) if order == "after-dispatch" else fix
        try:
            assert fix.active
            out = _split_decode(model, inputs_on)
            assert out.item() == 7 and devices.virtual_device(out) == torch.device(inputs_on)
        finally:
            fix.remove()
        with pytest.raises(RuntimeError, match=DEVICE_ERROR):  # remove() restores the original behaviour
            _split_decode(model, inputs_on)


@pytest.mark.parametrize("order", ["before-dispatch", "after-dispatch"])
@pytest.mark.parametrize("undispatch_first", [False, True])
def test_remove_puts_the_original_forward_back_wherever_accelerate_moved_the_guard(
    order: str, undispatch_first: bool
) -> None:
    with devices.simulate(n=2):
        model = SplitHazard()
        fix = hf.hotfix(model) if order == "before-dispatch" else None
        dispatch_model(model, device_map=SPLIT)
        fix = fix or hf.hotfix(model)
        guard = model.__dict__["_old_forward"]
        assert isinstance(guard, hf.Guard)  # accelerate's hook calls the guard after moving the inputs
        if undispatch_first:
            remove_hook_from_module(model)  # accelerate hands _old_forward (the guard) back as forward
            assert model.__dict__["forward"] is guard
        fix.remove()
        restored = model.__dict__.get("_old_forward", model.__dict__.get("forward"))
        if undispatch_first and order == "before-dispatch":
            assert "forward" not in model.__dict__  # the class's forward shows through, as before the hotfix
        else:
            assert not isinstance(restored, hf.Guard)
            assert restored.__func__ is SplitHazard.forward and restored.__self__ is model
        again = hf.hotfix(model)  # nothing of the removed hotfix counts as a guard any more
        assert again.active
        again.remove()


def test_class_guard_accelerate_captured_is_a_pass_through_once_removed() -> None:
    """Unwrapping is impossible there (the instance holds the bound guard), so the guard stops guarding."""
    with devices.simulate(n=2):
        fix = hf.hotfix_class(SplitHazard)
        model = dispatch_model(SplitHazard(), device_map=SPLIT)
        assert _split_decode(model).item() == 7
        fix.remove()
        captured = model.__dict__["_old_forward"]
        assert getattr(captured, hf.SWITCH).on is False  # still the guard, switched off
        assert SplitHazard.__dict__["forward"] is captured.__func__.__wrapped__  # the class got its own back
        with pytest.raises(RuntimeError, match=DEVICE_ERROR):
            _split_decode(model)


def test_guarded_forward_keeps_its_signature() -> None:
    """transformers reads forward's parameters (inspect.signature(self.forward)); accelerate's wrapper too."""
    plain = inspect.signature(SplitHazard().forward)
    model = SplitHazard()
    fix = hf.hotfix(model)
    assert inspect.signature(model.forward) == plain
    with devices.simulate(n=2):
        dispatch_model(model, device_map=SPLIT)
    assert inspect.signature(model.forward) == plain
    fix.remove()


def test_place_refuses_an_order_the_layout_cannot_take() -> None:
    dispatched = layouts.Layout("vision-apart", SPLIT, "cpu", loader="dispatch")
    assert orders.orders_for(dispatched) == ("before-dispatch", "after-dispatch", "class-before-load")
    with pytest.raises(RopefixError, match="'after-load' does not apply to a layout loaded with 'dispatch'"):
        orders.place("after-load", SplitHazard(), dispatched)
    with pytest.raises(RopefixError, match="'sideways' does not apply"):
        orders.place("sideways", SplitHazard(), dispatched)


def test_hotfix_twice_adds_nothing_and_a_copy_guards_itself() -> None:
    with devices.simulate(n=2):
        model = SplitHazard()
        fix = hf.hotfix(model)
        assert hf.hotfix(model).patched == []
        twin = copy.deepcopy(model)  # the guard is copied with its module: it aligns the copy, not the original
        assert twin.forward.root is twin and twin.forward.inner.__self__ is twin
        dispatch_model(twin, device_map=SPLIT)
        assert _split_decode(twin).item() == 7 and model.rope_deltas is None
        fix.remove()


# ---------------------------------------------------------------- a real split model, in the installed release
# CI pins 4.49.0, where Qwen2-VL's root adds the deltas; on a release the hotfix finds safe the same
# tests check that it changes nothing. Locally: run this file with relenv.python_for("4.49.0").

FAMILY = "qwen2_vl"
NEW_TOKENS = 3


@dataclass(frozen=True)
class Case:
    tiny: tinymodels.TinyModel
    reference: torch.Tensor  # generate's tokens on one simulated device: what every split run must give


@pytest.fixture(scope="module")
def qwen2_vl() -> Case:
    tiny = tinymodels.build(FAMILY)
    with devices.simulate(n=1):
        reference = _generate(tiny, copy.deepcopy(tiny.model).to("cuda:0"), "cuda:0")
    return Case(tiny, reference)


def _generate(tiny: tinymodels.TinyModel, model: torch.nn.Module, inputs_on: str) -> torch.Tensor:
    x = callpaths.to_device(tinymodels.inputs(tiny, Prompt(kind="text")), inputs_on)
    return callpaths.call("generate-greedy", model, x, Shape(max_new_tokens=NEW_TOKENS))


def _site(e: BaseException) -> str:
    """The innermost transformers line of a device error."""
    import transformers

    root = os.path.dirname(os.path.abspath(transformers.__file__))
    frames = [f for f in traceback.extract_tb(e.__traceback__) if os.path.abspath(f.filename).startswith(root)]
    return (frames[-1].line or "").strip() if frames else "<outside transformers>"


LOADER = {"before-dispatch": "dispatch", "after-dispatch": "dispatch", "after-load": "from_pretrained"}


@pytest.mark.parametrize("inputs_on", ["cpu", "cuda:1"])  # anywhere but the first module's device
@pytest.mark.parametrize("order", orders.ORDERS)
def test_split_model_red_without_green_with_the_hotfix_in_every_order(
    order: str, inputs_on: str, qwen2_vl: Case
) -> None:
    """Vision tower on cuda:0 (the root's execution device), language model and lm_head on cuda:1."""
    loader = LOADER.get(order, "from_pretrained")  # hotfix_class before from_pretrained(device_map=...)
    layout = layouts.Layout("vision-apart", layouts.towers_apart(qwen2_vl.tiny.model), inputs_on, loader=loader)
    hazardous = any(hf.is_hazardous(type(m)) for m in qwen2_vl.tiny.model.modules())
    with devices.simulate(n=2):
        model = layouts.place(qwen2_vl.tiny, layout)
        if hazardous:
            with pytest.raises(RuntimeError, match=DEVICE_ERROR) as red:
                _generate(qwen2_vl.tiny, model, inputs_on)
            assert "cache_position[0] + self.rope_deltas" in _site(red.value)
        else:
            assert _generate(qwen2_vl.tiny, model, inputs_on).equal(qwen2_vl.reference)
        model, fix = orders.place(order, qwen2_vl.tiny, layout)
        try:
            assert fix.active == hazardous  # a no-op where the release is safe
            assert _generate(qwen2_vl.tiny, model, inputs_on).equal(qwen2_vl.reference)
        finally:
            fix.remove()
        if hazardous:  # remove() restores the original behaviour, in this order too
            with pytest.raises(RuntimeError, match=DEVICE_ERROR) as again:
                _generate(qwen2_vl.tiny, model, inputs_on)
            assert _site(again.value) == _site(red.value)


SPLIT_FAILS = ("4.49.0", "4.50.3", "4.51.3", "4.52.4")  # the towers-apart split fails at the rope-deltas line


@pytest.mark.network
@pytest.mark.slow
@pytest.mark.parametrize("version", [*SPLIT_FAILS, "4.57.6", "5.1.0", "5.3.0"])  # + the quick matrix's releases
def test_real_release_red_without_green_with(version: str, shared_store: Store) -> None:
    """Affected (the engine's scan says so): red without, green with, in every order. Safe: nothing changes."""
    py = release_python(shared_store, version)
    probe = Path(__file__).with_name("hotfix_probe.py")
    cmd = [py, "-W", "ignore", probe, "qwen2_vl"]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["version"] == version
    assert result["hazardous"] == result["scan_affected"]  # the hotfix guards exactly what the engine would fix
    placed = result["placed"]
    for loader, applicable in orders.BY_LOADER.items():  # tokens identical to the unsplit model's, every order
        assert all(placed[f"{loader}/{order}"] == "green" for order in applicable), placed
    if result["hazardous"]:
        assert result["none"].startswith("red") and "rope_deltas" in result["none"]
        assert result["instance"] == "green" and result["class"] == "green"
        assert result["none-again"] == result["none"]  # remove() restores the original classes
    else:
        assert result["patched"] == []
        assert result["instance"] == result["none"] == result["class"]
    for loader, applicable in orders.BY_LOADER.items():
        unpatched = placed[f"{loader}/unpatched"]
        if version in SPLIT_FAILS:  # a layout users make: red unpatched, and red again once the hotfix is removed
            assert unpatched.startswith("red") and "rope_deltas" in unpatched
            assert all(placed[f"{loader}/{order}-removed"] == unpatched for order in applicable), placed
        else:
            assert unpatched == "green"


class KwargsModel(torch.nn.Module):
    """Synthetic stand-in for the oldest shape: deltas travel in the generation kwargs."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return ids

    def prepare_inputs_for_generation(self, ids, cache_position=None, rope_deltas=None):
        return cache_position[0] + rope_deltas if cache_position is not None and rope_deltas is not None else 0


def test_deltas_passed_as_generation_arguments_are_aligned() -> None:
    with devices.simulate(n=2):
        model = KwargsModel()
        kwargs = {
            "cache_position": torch.tensor([4], device="cuda:0"),
            "rope_deltas": torch.ones(1, 1, device="cuda:1"),
        }
        with pytest.raises(RuntimeError, match=DEVICE_ERROR):
            model.prepare_inputs_for_generation(None, **kwargs)
        fix = ropefix.hotfix(model)
        assert fix.active
        out = model.prepare_inputs_for_generation(None, **kwargs)
        assert devices.virtual_device(out) == torch.device("cuda:0") and out.item() == 5
        fix.remove()
        assert "prepare_inputs_for_generation" not in model.__dict__


class ShiftHazard(torch.nn.Module):
    """4.47's shape in miniature: the delta made from cache_position shifts positions built on the embeddings' device."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(8, 4)
        self.head = torch.nn.Linear(4, 1)
        self.rope_deltas = None

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.embed

    def forward(self, input_ids: torch.Tensor, cache_position: torch.Tensor | None = None) -> torch.Tensor:
        embeds = self.embed(input_ids)
        positions = torch.arange(input_ids.shape[1], device=embeds.device)
        if cache_position is not None and cache_position[0] == 0:
            self.rope_deltas = torch.full((1, 1), 3, dtype=torch.long, device=input_ids.device)
        else:
            delta = cache_position[0] + self.rope_deltas
            positions = positions.add(delta)
        return self.head(embeds).squeeze(-1).to(positions.device) + positions


def _shift_decode(model: torch.nn.Module) -> torch.Tensor:
    ids = torch.ones(1, 4, dtype=torch.long)
    model(ids, cache_position=torch.arange(4))
    return model(ids[:, -1:], cache_position=torch.tensor([4])).cpu()


def test_the_guard_aligns_to_where_positions_are_built_not_only_to_cache_position() -> None:
    """4.45-4.48 shift positions built on the embeddings' device by the delta: deltas moved to cache_position's
    device alone still fail at the shift; the guard puts both on the embeddings' device."""
    torch.manual_seed(0)
    base = ShiftHazard()
    want = _shift_decode(copy.deepcopy(base))
    with devices.simulate(n=2):
        split = {"embed": 1, "head": 0}
        with pytest.raises(RuntimeError, match=DEVICE_ERROR):  # unguarded
            _shift_decode(dispatch_model(copy.deepcopy(base), device_map=split))
        only_cache = dispatch_model(copy.deepcopy(base), device_map=split)
        inner = only_cache._old_forward

        def deltas_to_cache_position(*args: object, cache_position: torch.Tensor, **kwargs: object) -> object:
            if isinstance(only_cache.rope_deltas, torch.Tensor):
                only_cache.rope_deltas = only_cache.rope_deltas.to(cache_position.device)
            return inner(*args, cache_position=cache_position, **kwargs)

        only_cache._old_forward = deltas_to_cache_position
        with pytest.raises(RuntimeError, match=DEVICE_ERROR):  # the guard's old target: still red at the shift
            _shift_decode(only_cache)
        guarded = dispatch_model(copy.deepcopy(base), device_map=split)
        fix = hf.hotfix(guarded)
        assert fix.active and torch.equal(_shift_decode(guarded), want)


class IdsShiftHazard(ShiftHazard):
    """4.52's omni thinker in miniature: positions built on the input ids' device, deltas kept where the
    embeddings are, the delta made from cache_position shifts the positions."""

    def forward(self, input_ids: torch.Tensor, cache_position: torch.Tensor | None = None) -> torch.Tensor:
        embeds = self.embed(input_ids.to(self.embed.weight.device))
        if cache_position is not None and cache_position[0] == 0:
            self.rope_deltas = torch.full((1, 1), 3, dtype=torch.long, device=embeds.device)
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        else:
            delta = cache_position[0] + self.rope_deltas
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
            positions = positions.add(delta)
        return self.head(embeds).squeeze(-1).to(positions.device) + positions


def test_the_guard_follows_a_forward_that_builds_positions_on_the_input_ids_device() -> None:
    assert hf.builds_on_input_ids(IdsShiftHazard) and not hf.builds_on_input_ids(ShiftHazard)
    torch.manual_seed(0)
    base = IdsShiftHazard()
    ids = torch.ones(1, 4, dtype=torch.long)

    def decode(model: torch.nn.Module, device: str) -> torch.Tensor:
        model(ids.to(device), cache_position=torch.arange(4, device=device))
        return model(ids[:, -1:].to(device), cache_position=torch.tensor([4], device=device)).cpu()

    want = decode(copy.deepcopy(base), "cpu")
    with devices.simulate(n=2):
        with pytest.raises(RuntimeError, match=DEVICE_ERROR):  # unguarded: deltas on cuda:1, positions on cuda:0
            decode(copy.deepcopy(base).to("cuda:1"), "cuda:0")
        guarded = copy.deepcopy(base).to("cuda:1")
        fix = hf.hotfix(guarded)
        assert fix.active and torch.equal(decode(guarded, "cuda:0"), want)


def test_the_guard_claims_the_stored_deltas_shift_only_while_the_delta_is_unmoved() -> None:
    # 5.2.0's ernie4_5_vl_moe shape (tests/snippets/shift_stored_deltas.py): the rope-deltas rule's shift-unaligned
    shifted = (Path(__file__).parent / "snippets" / "shift_stored_deltas.py").read_text()
    assert hf.HAZARD.search(shifted)
    moved = shifted.replace("(position_ids + delta).to(", "(position_ids + delta.to(position_ids.device)).to(")
    assert moved != shifted and not hf.HAZARD.search(moved)  # 5.3 on: upstream moves the delta first
    aligned = shifted.replace(
        "        position_ids = (position_ids",
        "        delta = delta.to(position_ids.device)\n        position_ids = (position_ids",
    )
    assert not hf.HAZARD.search(aligned)
