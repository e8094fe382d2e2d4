"""accelerate places models on simulated devices exactly as on a multi-GPU machine, hooks and all."""

from __future__ import annotations

import pytest
import torch
from accelerate import dispatch_model, infer_auto_device_map
from accelerate.hooks import AlignDevicesHook, add_hook_to_module
from accelerate.utils import send_to_device

from ropefix.devices import simulate

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
