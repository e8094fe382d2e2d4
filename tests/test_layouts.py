"""Layouts: pure device-map constructors and the strategies built on them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ropefix.prove import layouts as ly
from ropefix.prove import tinymodels as tm

NAMES = ("visual", "embed", "l0", "l1", "l2", "norm", "lm_head")
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


@given(ly.strategy(U, max_devices=3))
def test_strategy_layouts_are_valid(layout: ly.Layout) -> None:
    assert set(layout.device_map) == set(NAMES)
    assert all(0 <= d < layout.n_devices for d in layout.device_map.values())
    assert layout.input_device == "cpu" or int(layout.input_device.split(":")[1]) < layout.n_devices
    assert layout.kind in ly.KINDS
    j = layout.to_json()
    assert set(j["device_map"].values()) <= {f"cuda:{i}" for i in range(layout.n_devices)}
    assert layout.kind in layout.short()


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
