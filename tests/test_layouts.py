"""Layouts: pure device-map constructors and the strategies built on them."""

from __future__ import annotations

import pytest
import torch
from hypothesis import find, given, settings
from hypothesis import strategies as st

from ropefix.prove import layouts as ly
from ropefix.prove import tinymodels as tm

NAMES = ("visual", "embed", "l0", "l1", "l2", "norm", "lm_head")
# find() stops at the first match; the profile's max_examples (25 in ci) is too few for rare draws
FIND = settings(database=None, max_examples=2000)
U = ly.Units(NAMES, towers=("visual",), layers=("l0", "l1", "l2"), embeddings=("embed",), head=("lm_head",))


def test_units_cover_every_parameter_once() -> None:
    model = tm.build("qwen2_vl").model
    u = ly.units(model)
    params = {n for n, _ in model.named_parameters()}
    covered = {p for p in params if any(p.startswith(x + ".") for x in u.names)}
    assert covered == params
    for a in u.names:  # no unit inside another
        assert not any(b != a and b.startswith(a + ".") for b in u.names)
    assert u.towers and u.layers and u.embeddings and u.head


@given(st.lists(st.integers(0, len(NAMES)), max_size=3))
def test_contiguous_runs_are_increasing_and_cover_all(cuts: list[int]) -> None:
    dmap = ly.contiguous(NAMES, cuts)
    assert list(dmap) == list(NAMES)
    devs = list(dmap.values())
    assert devs == sorted(devs) and devs[0] == 0
    assert ly.used_devices(dmap) == 1 + len({c for c in cuts if 0 < c < len(NAMES)})


@given(st.integers(0, 2), st.lists(st.integers(0, len(NAMES)), max_size=2))
def test_vision_apart_keeps_the_tower_alone(tower: int, cuts: list[int]) -> None:
    dmap = ly.vision_apart(U, tower, cuts, 3)
    assert dmap["visual"] == tower
    assert all(d != tower for k, d in dmap.items() if k != "visual")


def test_ends_apart_moves_only_embeddings_and_head() -> None:
    body = ly.contiguous(NAMES, [3])
    dmap = ly.ends_apart(U, body, 2, 1)
    assert dmap["embed"] == 2 and dmap["lm_head"] == 1
    assert {k: v for k, v in dmap.items() if k not in ("embed", "lm_head")} == {
        k: v for k, v in body.items() if k not in ("embed", "lm_head")
    }


def _places_each_once(device_map: dict[str, int], names: tuple[str, ...]) -> bool:
    """Every name has exactly one key of the map holding it (itself, a parent, or the whole model "")."""
    return all(
        sum(1 for k in device_map if k == "" or n == k or n.startswith(k + ".")) == 1 for n in names
    ) and not any(o != k and (o == "" or k.startswith(o + ".")) for k in device_map for o in device_map)


@given(ly.strategy(U, max_devices=3))
def test_strategy_layouts_are_valid(layout: ly.Layout) -> None:
    assert _places_each_once(layout.device_map, NAMES)
    assert all(0 <= d < layout.n_devices for d in layout.device_map.values())
    assert layout.input_device in ("cpu", "cuda") or int(layout.input_device.split(":")[1]) < layout.n_devices
    assert layout.kind in ly.KINDS and layout.kind not in ly.STRATEGIES and layout.loader == "dispatch"
    if layout.inputs_to == ly.MODEL_DEVICE:  # the first unit holds the first parameter
        assert layout.input_device == f"cuda:{ly.device_of(layout.device_map, NAMES[0])}"
    if len(set(layout.device_map.values())) == 1:  # no hooks: inputs go where the model is
        assert layout.inputs_to == ly.MODEL_DEVICE
    j = layout.to_json()
    assert set(j["device_map"].values()) <= {f"cuda:{i}" for i in range(layout.n_devices)}
    assert ly.Layout.from_json(j) == layout
    assert layout.kind in layout.short()
    assert layout.call() in layout.describe()


@pytest.mark.parametrize("kind", [k for k in ly.KINDS if k not in ly.STRATEGIES])
def test_units_strategy_draws_every_kind(kind: str) -> None:
    layout = find(ly.strategy(U, 3), lambda lay: lay.kind == kind, settings=FIND)
    assert layout.kind == kind
    if kind == "module-apart":  # units move alone: the one apart differs from a neighbour
        (moved,) = layout.apart
        i = NAMES.index(moved)
        neighbours = {layout.device_map[n] for n in NAMES[max(0, i - 1) : i + 2] if n != moved}
        assert layout.device_map[moved] not in neighbours


@pytest.mark.parametrize("target", [ly.MODEL_DEVICE, "cpu", "cuda", "cuda:2"])
def test_inputs_go_to_every_place_users_send_them(target: str) -> None:
    layout = find(ly.strategy(U, 3), lambda lay: lay.inputs_to == target, settings=FIND)
    assert layout.input_device == (
        f"cuda:{ly.device_of(layout.device_map, NAMES[0])}" if target == ly.MODEL_DEVICE else target
    )


def test_one_accelerator_is_a_layout_with_inputs_on_the_model() -> None:
    layout = find(ly.strategy(U, 1), lambda lay: True, settings=FIND)
    assert (layout.kind, layout.device_map, layout.n_devices) == ("one-accelerator", {"": 0}, 1)
    assert (layout.inputs_to, layout.input_device) == (ly.MODEL_DEVICE, "cuda:0")
    assert "inputs.to(model.device)" in layout.short()


def test_strategies_need_a_model() -> None:
    with pytest.raises(ValueError, match="need a ModelInfo"):
        ly.strategy(U, 3, kinds=["auto"])
    with pytest.raises(ValueError, match="unknown layout kinds"):
        ly.strategy(U, 3, kinds=["diagonal"])


def test_towers_apart_is_the_coarsest_cover_with_towers_on_the_first_device() -> None:
    import torch

    class Tower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = torch.nn.ModuleList([torch.nn.Linear(2, 2) for _ in range(3)])

    class Inner(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.visual = Tower()
            self.language_model = torch.nn.ModuleDict({"embed": torch.nn.Embedding(4, 2)})
            self.empty = torch.nn.Identity()

    class Top(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = Inner()
            self.lm_head = torch.nn.Linear(2, 4)

    assert ly.towers_apart(Top()) == {"model.visual": 0, "model.language_model": 1, "lm_head": 1}
    with pytest.raises(ValueError, match="no vision or audio tower"):
        ly.towers_apart(Inner().language_model)


def _toy() -> torch.nn.Module:
    import torch

    class Tower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = torch.nn.ModuleList([torch.nn.Linear(2, 2) for _ in range(3)])
            self.merger = torch.nn.Linear(2, 2)

    class Inner(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.visual = Tower()
            self.norm = torch.nn.LayerNorm(2)

    class Top(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = Inner()
            self.lm_head = torch.nn.Linear(2, 4)

    return Top()


def test_apart_writes_the_holding_key_out_as_its_children() -> None:
    top = _toy()
    base = {"model": 0, "lm_head": 1}
    merger = ly.apart(base, "model.visual.merger", 2, top)
    assert merger == {
        "model.visual.blocks": 0,
        "model.visual.merger": 2,
        "model.norm": 0,
        "lm_head": 1,
    }
    block = ly.apart(merger, "model.visual.blocks.1", 1, top)
    assert list(block.items())[:3] == [
        ("model.visual.blocks.0", 0),
        ("model.visual.blocks.1", 1),
        ("model.visual.blocks.2", 0),
    ]
    whole = ly.apart({"": 0}, "lm_head", 3, top)
    assert whole == {"model": 0, "lm_head": 3}
    assert ly.apart(block, "model.visual", 3) == {
        "model.visual": 3,
        "model.norm": 0,
        "lm_head": 1,
    }  # keys inside merge
    assert ly.apart(base, "lm_head", 0) == {"model": 0, "lm_head": 0}  # a key itself: no model needed
    with pytest.raises(ValueError, match="needs the model"):
        ly.apart(base, "model.norm", 1)
    names = tuple(n for n, _ in top.named_parameters())
    for dmap in (merger, block, whole):
        assert _places_each_once(dmap, names)
        assert ly.uncovered(dmap, top) == ([], [])
    assert ly.uncovered({"model": 0, "model.norm": 1}, top) == (["lm_head.weight", "lm_head.bias"], ["model.norm"])


def test_layouts_say_how_a_user_wrote_them() -> None:
    lay = ly.Layout(
        "balanced_low_0",
        {"model.visual": 1, "lm_head": 2},
        "cuda:1",
        3,
        inputs_to=ly.MODEL_DEVICE,
        loader="from_pretrained",
        strategy="balanced_low_0",
        max_memory={0: "40KiB", 1: "300KiB", 2: "1GiB"},
    )
    assert lay.call() == (
        'Model.from_pretrained(path, device_map="balanced_low_0", max_memory={0: "40KiB", 1: "300KiB", 2: "1GiB"})'
    )
    assert "inputs.to(model.device)  # cuda:1" in lay.short()
    assert '# resolves to device_map={"model.visual": 1, "lm_head": 2}' in lay.describe()
    by_hand = ly.Layout("module-apart", {"model.visual": 0, "model.norm": 1}, "cpu", 2, apart=("model.norm",))
    assert by_hand.call() == 'dispatch_model(model, device_map={"model.visual": 0, "model.norm": 1})'
    assert "model.norm apart" in by_hand.short() and "left on the CPU" in by_hand.short()
    dispatched = ly.Layout(
        "sequential", {"": 0}, "cuda:0", 2, strategy="sequential", max_memory={0: "1KiB", 1: "1GiB"}
    )
    assert dispatched.call().startswith(
        'dispatch_model(model, infer_auto_device_map(model, max_memory=get_max_memory({0: "1KiB"'
    )
    assert ly.Layout.from_json(lay.to_json()) == lay


@pytest.fixture(scope="module")
def info() -> ly.ModelInfo:
    return ly.model_info(tm.build("qwen2_vl"))


def test_small_modules_are_the_ones_users_put_apart(info: ly.ModelInfo) -> None:
    roles = dict(info.modules)
    model = info.model
    text = [u for u in info.units.names if u.endswith("rotary_emb")]
    assert [r for _, r in info.modules[:1]] == ["rotary"] and info.modules[0][0] == text[0]
    for role in ("final-norm", "merger", "lm_head", "embeddings", "vision-block", "vision-rotary", "patch-embed"):
        assert role in roles.values(), role
    for path in roles:  # every one is a real module holding tensors
        assert any(True for _ in model.get_submodule(path).parameters()) or any(
            True for _ in model.get_submodule(path).buffers()
        )
    assert info.no_split and all(isinstance(c, str) for c in info.no_split)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_every_device_map_strategy_covers_each_tensor_once(info: ly.ModelInfo, n: int) -> None:
    # every device but the last gets an equal share of the model, a byte short of holding it (a model
    # whose size is a whole number of KiB would fit a KiB-rounded share exactly): a split over all of them
    share = {**{i: (info.total_bytes - 1) // (n - 1) for i in range(n - 1)}, n - 1: ly.LAST_BUDGET}
    for strategy in ly.STRATEGIES:
        for budget in (None, share):
            dmap, problem = ly.resolve(info, strategy, n, budget, "dispatch")
            assert not problem, problem
            assert ly.uncovered(dmap, info.model) == ([], [])
            assert set(dmap.values()) <= set(range(n))
            if budget is not None:  # balanced_low_0 keeps device 0 free for generate's buffers
                low = 1 if strategy == "balanced_low_0" else 0
                assert set(dmap.values()) == set(range(low, n)), (strategy, dmap)


@settings(max_examples=20)
@given(st.data())
def test_model_layouts_cover_each_tensor_once(info: ly.ModelInfo, data: st.DataObject) -> None:
    layout = data.draw(ly.strategy(info, 4, loaders=["dispatch"]))
    assert not layout.problem, layout.problem
    assert ly.uncovered(layout.device_map, info.model) == ([], [])
    assert set(layout.device_map.values()) <= set(range(layout.n_devices))
    if layout.inputs_to == ly.MODEL_DEVICE:  # transformers' model.device: the first parameter's device
        assert layout.input_device == f"cuda:{ly.device_of(layout.device_map, info.units.first)}"
    for moved in layout.apart:  # a module apart has its own entry, as in a hand-written map
        assert moved in layout.device_map and moved in dict(info.modules)
    assert ly.Layout.from_json(layout.to_json()) == layout
