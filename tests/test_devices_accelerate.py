"""accelerate places models on simulated devices exactly as on a multi-GPU machine, hooks and all."""

from __future__ import annotations

import pytest
import torch
from accelerate import dispatch_model, infer_auto_device_map
from accelerate.hooks import AlignDevicesHook, add_hook_to_module
from accelerate.utils import send_to_device

from ropefix.devices import simulate
from ropefix.prove.layouts import ModelInfo
from ropefix.prove.tinymodels import TinyModel

CUDA0, CUDA1 = torch.device("cuda", 0), torch.device("cuda", 1)


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(4, 8)
        self.b = torch.nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


class LeakyNet(Net):
    """Adds a tensor made on the input's device to the last layer's output, as the rope_deltas bug does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + torch.ones(2, device=x.device)


def test_dispatch_model_places_split_layouts_and_matches_cpu() -> None:
    torch.manual_seed(0)
    net, x = Net().eval(), torch.randn(3, 4)
    expected = net(x)
    with simulate(2):
        model = dispatch_model(net, device_map={"a": 0, "b": 1})
        assert model.a.weight.device == CUDA0 and model.b.weight.device == CUDA1
        out = model(x.to("cuda:0"))
        assert out.device == CUDA0  # io_same_device: the answer comes back to the input's device
        assert torch.equal(out.cpu(), expected)


def test_a_tensor_made_on_the_wrong_device_fails_as_on_real_gpus() -> None:
    net = LeakyNet().eval()
    net(torch.ones(1, 4))  # fine on one device
    with simulate(2):
        model = dispatch_model(net, device_map={"a": 0, "b": 1})
        with pytest.raises(RuntimeError) as e:
            model(torch.ones(1, 4, device="cuda:0"))
        assert str(e.value) == (
            "Expected all tensors to be on the same device, but found at least two devices, cuda:1 and cuda:0!"
        )
        single = dispatch_model(LeakyNet().eval(), device_map={"a": 0, "b": 0})
        assert single(torch.ones(1, 4, device="cuda:0")).device == CUDA0


def test_align_devices_hook_and_send_to_device() -> None:
    with simulate(2):
        lin = torch.nn.Linear(2, 2)
        add_hook_to_module(lin, AlignDevicesHook(execution_device=1, io_same_device=True))
        assert lin.weight.device == CUDA1
        out = lin(torch.ones(1, 2))
        assert out.device == torch.device("cpu")
        moved = send_to_device({"x": torch.ones(1), "y": [torch.zeros(2)], "n": 3}, "cuda:1")
        assert moved["x"].device == CUDA1 and moved["y"][0].device == CUDA1 and moved["n"] == 3


def test_auto_device_map_uses_the_simulated_memory() -> None:
    net = torch.nn.Sequential(*[torch.nn.Linear(64, 64) for _ in range(4)])
    layer = 64 * 65 * 4
    with simulate(2, memory=10**9):
        device_map = infer_auto_device_map(net, max_memory={0: int(2.5 * layer), 1: 10**9})
        model = dispatch_model(net, device_map=device_map)
        assert {p.device for p in model[0].parameters()} == {CUDA0}
        assert {p.device for p in model[3].parameters()} == {CUDA1}
        assert model(torch.ones(1, 64)).shape == (1, 64)


def _tiny(family: str) -> torch.nn.Module:
    import transformers

    common = {
        "vocab_size": 96,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 64,
    }
    config = getattr(transformers, f"{family}Config")(**common)
    torch.manual_seed(0)
    return getattr(transformers, f"{family}ForCausalLM")(config).eval()


SPLIT = {
    "model.embed_tokens": 0,
    "model.rotary_emb": 0,
    "model.layers.0": 0,
    "model.layers.1": 0,
    "model.layers.2": 1,
    "model.layers.3": 1,
    "model.norm": 1,
    "lm_head": 1,
}


@pytest.mark.parametrize("family", ["Llama", "Qwen2"])
def test_transformers_generate_on_a_split_model_is_bit_identical(family: str) -> None:
    model = _tiny(family)
    ids = torch.randint(0, 96, (2, 6), generator=torch.Generator().manual_seed(1))
    expected = model.generate(ids, max_new_tokens=5, do_sample=False)
    with simulate(2):
        split = dispatch_model(model, device_map=SPLIT)
        assert split.lm_head.weight.device == CUDA1 and split.model.embed_tokens.weight.device == CUDA0
        out = split.generate(ids.to("cuda:0"), max_new_tokens=5, do_sample=False)
        assert out.device == CUDA0
        assert torch.equal(out.cpu(), expected)


@pytest.mark.slow
def test_from_pretrained_with_device_map_auto_splits_over_the_simulated_devices(tmp_path) -> None:
    import transformers

    _tiny("Qwen2").save_pretrained(tmp_path)
    with simulate(2):  # transformers' allocator warm-up assumes devices bigger than 1.2 GiB
        model = transformers.AutoModelForCausalLM.from_pretrained(
            tmp_path, device_map="auto", max_memory={0: 60_000, 1: 10**9}
        )
        devices = set(model.hf_device_map.values())
        assert devices == {0, 1}, model.hf_device_map
        assert model.model.embed_tokens.weight.device == CUDA0 and model.lm_head.weight.device == CUDA1
        out = model.generate(torch.ones(1, 4, dtype=torch.long, device="cuda:0"), max_new_tokens=3, do_sample=False)
        assert out.shape == (1, 7)


def test_empty_weights_then_loading_onto_a_device() -> None:
    from accelerate import init_empty_weights
    from accelerate.utils import set_module_tensor_to_device

    source = torch.nn.Linear(3, 2)
    x = torch.ones(1, 3)
    with simulate(2):
        with init_empty_weights():
            empty = torch.nn.Linear(3, 2)
        assert empty.weight.device == torch.device("meta")
        for name, value in source.state_dict().items():
            set_module_tensor_to_device(empty, name, 1, value=value)
        assert empty.weight.device == CUDA1 and type(empty.weight) is torch.nn.Parameter
        assert torch.equal(empty(x.to("cuda:1")).cpu(), source(x))


def test_safetensors_loads_straight_onto_a_device(tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    path = tmp_path / "w.safetensors"
    save_file({"w": torch.arange(3.0)}, str(path))
    with simulate(2):
        for device in ("cuda:1", 1):  # the string path stages through pinned memory, which the simulation lacks
            loaded = load_file(str(path), device=device)["w"]
            assert loaded.device == CUDA1 and loaded.tolist() == [0.0, 1.0, 2.0]


# ---------------------------------------------------------------- user-shaped layouts of a tiny mRoPE model


@pytest.fixture(scope="module")
def tiny() -> TinyModel:
    from ropefix.prove import tinymodels

    return tinymodels.build("qwen2_vl")


@pytest.fixture(scope="module")
def info(tiny: TinyModel) -> ModelInfo:
    from ropefix.prove import layouts

    return layouts.model_info(tiny)


def _where(model: torch.nn.Module) -> dict[str, str]:
    return {n: str(t.device) for n, t in [*model.named_parameters(), *model.named_buffers()]}


def _share(info: ModelInfo, n: int) -> dict[int, str]:
    """Every device but the last gets an equal share of the model: accelerate splits over all of them."""
    return {**{i: f"{info.total_bytes // 1024 // (n - 1)}KiB" for i in range(n - 1)}, n - 1: "1GiB"}


@pytest.mark.parametrize("loader", ["dispatch", "from_pretrained"])
def test_a_hand_written_map_puts_small_modules_apart(tiny: TinyModel, info: ModelInfo, loader: str) -> None:
    from ropefix.prove import layouts

    roles = {role: path for path, role in reversed(info.modules)}  # the first module of each role
    merger, rotary, head = roles["merger"], roles["rotary"], roles["lm_head"]
    base = layouts.contiguous(info.units.names, [len(info.units.names) // 2])
    dmap = layouts.apart(layouts.apart(base, merger, 2, tiny.model), rotary, 2, tiny.model)
    dmap = layouts.apart(dmap, head, 0)
    layout = layouts.Layout("module-apart", dmap, "cpu", 3, loader=loader, apart=(merger, rotary, head))
    assert merger in dmap and not any(k == merger.rsplit(".", 1)[0] for k in dmap)  # the tower is written out
    with simulate(3):
        model = layouts.place(tiny, layout)
        where = _where(model)
        assert layouts.misplaced(model, dmap) == []
        assert any(name.startswith(merger + ".") for name in layouts.misplaced(model, base))  # the check can fail
    tower = merger.rsplit(".", 1)[0]
    assert {d for n, d in where.items() if n.startswith(merger + ".")} == {"cuda:2"}
    assert {d for n, d in where.items() if n.startswith(tower + ".") and not n.startswith(merger + ".")} == {"cuda:0"}
    assert {d for n, d in where.items() if n.startswith(rotary + ".")} == {"cuda:2"}
    assert {d for n, d in where.items() if n.startswith(head + ".")} == {"cuda:0"}
    assert all(d == f"cuda:{layouts.device_of(dmap, n)}" for n, d in where.items())
    assert {d.type for d in map(torch.device, _where(tiny.model).values())} == {"cpu"}  # the original is untouched


@pytest.mark.parametrize(
    ("strategy", "budget"), [(s, "share") for s in ("auto", "balanced_low_0", "sequential")] + [("auto", None)]
)
def test_from_pretrained_with_a_strategy_string_places_as_resolved(
    tiny: TinyModel, info: ModelInfo, strategy: str, budget: str | None
) -> None:
    from ropefix.prove import layouts

    n = 3
    max_memory = _share(info, n) if budget else None
    dmap, problem = layouts.resolve(info, strategy, n, max_memory, "from_pretrained")
    assert not problem and layouts.uncovered(dmap, tiny.model) == ([], [])
    layout = layouts.Layout(
        strategy, dmap, "cpu", n, loader="from_pretrained", strategy=strategy, max_memory=max_memory
    )
    with simulate(n):
        model = layouts.place(tiny, layout)
        assert layouts.placement(model) == dmap  # hf_device_map, as transformers reports it
        where = _where(model)
    assert all(d == f"cuda:{layouts.device_of(dmap, n_)}" for n_, d in where.items())
    low = 1 if strategy == "balanced_low_0" else 0
    assert set(where.values()) == {f"cuda:{i}" for i in range(low, n)}


@pytest.mark.skipif(
    int(__import__("transformers").__version__.split(".")[0]) >= 5,
    reason="5.x from_pretrained computes maps with its own copies of accelerate's functions; resolve() reads its map",
)
def test_accelerate_maps_mirror_from_pretrained_in_4x(info: ModelInfo) -> None:
    from ropefix.prove import layouts

    for strategy in layouts.STRATEGIES:
        for max_memory in (None, _share(info, 3)):
            by_hand = layouts.resolve(info, strategy, 3, max_memory, "dispatch")
            assert by_hand == layouts.resolve(info, strategy, 3, max_memory, "from_pretrained"), strategy


@pytest.mark.parametrize("loader", ["dispatch", "from_pretrained"])
def test_one_accelerator_layouts_have_no_hooks_and_take_inputs_on_the_model_device(
    tiny: TinyModel, info: ModelInfo, loader: str
) -> None:
    from hypothesis import find, settings

    from ropefix.prove import callpaths, layouts, tinymodels

    # unpadded: with padding, transformers' sdpa mask takes a cuda-only branch (fully masked rows), not the CPU's
    inputs = tinymodels.inputs(tiny, tinymodels.Prompt(kind="text", batch=2))
    tinymodels.reset_state(tiny.model)
    with torch.no_grad():
        expected = tiny.model(**inputs).logits
    drawn = find(layouts.strategy(info, 1, loaders=[loader]), lambda lay: True, settings=settings(database=None))
    on_second = layouts.Layout("one-accelerator", {"": 1}, "cuda:1", 2, inputs_to=layouts.MODEL_DEVICE, loader=loader)
    assert (drawn.kind, drawn.device_map, drawn.inputs_to) == ("one-accelerator", {"": 0}, layouts.MODEL_DEVICE)
    for layout in (drawn, on_second):
        with simulate(layout.n_devices):
            model = layouts.place(tiny, layout)
            assert set(_where(model).values()) == {layout.input_device} == {str(model.device)}
            assert not any(hasattr(m, "_hf_hook") for m in model.modules())  # model.to(), as accelerate does
            with torch.no_grad():
                out = model(**callpaths.to_device(inputs, layout.input_device)).logits
            assert str(out.device) == layout.input_device
            assert torch.equal(out.cpu(), expected)


def test_a_layout_accelerate_cannot_place_is_reported(tiny: TinyModel, info: ModelInfo) -> None:
    from ropefix.prove import layouts

    budget = {0: "1KiB", 1: "1KiB"}
    dmap, problem = layouts.resolve(info, "sequential", 2, budget, "dispatch")
    assert "offloads to disk" in problem
    starved = layouts.Layout(
        "sequential", dmap, "cuda:0", 2, strategy="sequential", max_memory=budget, problem=problem
    )
    missing = {k: v for k, v in layouts.contiguous(info.units.names, [3]).items() if k not in info.units.head}
    with simulate(2):
        with pytest.raises(layouts.NotPlaceable, match="layout not placeable: sequential on 2 GPUs.*offloads to disk"):
            layouts.place(tiny, starved)
        for loader in ("dispatch", "from_pretrained"):  # lm_head has no device: refused, or left off the accelerators
            with pytest.raises(layouts.NotPlaceable, match="layout not placeable: contiguous") as e:
                layouts.place(tiny, layouts.Layout("contiguous", missing, "cpu", 2, loader=loader))
            assert "lm_head" in e.value.reason


class _Movable:
    """An object with its own .to (as BatchFeature has): accelerate calls it."""

    def __init__(self) -> None:
        self.moved_to: object = None

    def to(self, device: object, non_blocking: bool = False) -> _Movable:
        self.moved_to = device
        return self


def _shape(value: object) -> object:
    """A structure with each tensor replaced by (device, values, identity token)."""
    if isinstance(value, torch.Tensor):
        return ("tensor", value.device, value.tolist())
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [_shape(v) for v in value])
    return value


def test_hook_moves_give_what_accelerates_own_function_gives() -> None:
    from collections import namedtuple

    import accelerate.hooks
    from accelerate.utils import operations

    pair = namedtuple("pair", "a b")
    original = accelerate.hooks.send_to_device
    with simulate(2):
        assert accelerate.hooks.send_to_device is not original  # the simulator's, for hooks only
        assert operations.send_to_device is original  # what users call is untouched
        x0, x1, cpu = torch.ones(2, device="cuda:0"), torch.arange(3.0, device="cuda:1"), torch.zeros(1)
        structures = [
            x0,
            (x0, x1, None, 3, "s"),
            [x1, (cpu, [x0])],
            {"hidden": x1, "pos": (x0, x1), "mask": None, "cache": object, "flag": True},
            pair(x0, x1),  # namedtuple: accelerate's own function
            {"a": x1, "m": _Movable()},  # an object with .to: accelerate's own function
            (),  # a module called with keywords only
            {},  # a module called without keywords: new empty dicts, as accelerate builds
        ]
        for value in structures:
            for device, skip in [(0, None), ("cuda:1", None), (torch.device("cuda", 0), "pos"), ("cpu", ["a"])]:
                ours = accelerate.hooks.send_to_device(value, device, skip_keys=skip)
                theirs = original(value, device, skip_keys=skip)
                assert _shape(ours) == _shape(theirs)
                assert type(ours) is type(theirs)
                assert (ours is value) == (theirs is value)
        assert accelerate.hooks.send_to_device(x0, 0) is x0  # nothing to move: the same tensor
        with torch._C.DisableTorchFunction():  # no mode running: accelerate's function, real devices
            assert accelerate.hooks.send_to_device(torch.ones(1), "cpu").device == torch.device("cpu")
    assert accelerate.hooks.send_to_device is original
