"""Direct entries (ropefix.devices.direct) answer exactly what torch's routing through the mode answers.

Every call below runs twice, in a simulation with direct entries and in one without (every call
routed by torch through the mode), and both must agree: values, virtual devices and dtypes, or
the error's type and text. A second test checks that each entry really skips the mode, so an
entry torch routes around (as ``-x`` did before ``__neg__`` was an entry) cannot go unnoticed.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from accelerate import dispatch_model
from torch.overrides import TorchFunctionMode

from ropefix.devices import direct, simulate, virtual_device

CUDA0, CUDA1 = torch.device("cuda", 0), torch.device("cuda", 1)


def _values() -> dict[str, torch.Tensor]:
    """Operands on cuda:0, cuda:1 and the cpu, made inside the simulation."""
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4) / 7
    return {
        "a": base.to("cuda:0"),
        "b": (base + 1).to("cuda:0"),
        "c": base.to("cuda:1"),
        "p": base,  # cpu
        "s": torch.tensor(2.0),  # 0-dim cpu: combines with any device
        "i": torch.tensor([0, 2], device="cuda:0"),
        "j": torch.tensor([0, 2], device="cuda:1"),
        "m": torch.tensor([[True, False, True, False]] * 3, device="cuda:0"),
        "w": torch.ones(5, 4, device="cuda:0"),
        "q": torch.ones(1, 2, 3, 4, device="cuda:0"),
    }


Call = Callable[[dict[str, torch.Tensor]], Any]
# For every entry name: calls that succeed and calls that fail (mixed devices, bad arguments).
CALLS: dict[str, list[Call]] = {
    "mul": [lambda v: v["a"].mul(v["b"]), lambda v: v["a"].mul(v["s"]), lambda v: v["a"].mul(v["c"])],
    "add": [lambda v: v["a"].add(v["b"], alpha=2), lambda v: v["a"].add(v["p"])],
    "sub": [lambda v: v["a"].sub(v["b"]), lambda v: v["c"].sub(v["a"])],
    "div": [lambda v: v["a"].div(v["b"], rounding_mode="floor"), lambda v: v["a"].div(v["p"])],
    "to": [
        lambda v: v["a"].to("cuda:1"),
        lambda v: v["a"].to(torch.float16),
        lambda v: v["a"].to(v["c"]),
        lambda v: v["a"].to("cuda:0") is v["a"],
        lambda v: v["a"].to("cuda:5"),
    ],
    "view": [lambda v: v["a"].view(4, 3), lambda v: v["a"].view(5)],
    "reshape": [lambda v: v["a"].reshape(-1), lambda v: v["a"].t().reshape(2, 6)],
    "transpose": [lambda v: v["a"].transpose(0, 1)],
    "unsqueeze": [lambda v: v["a"].unsqueeze(0)],
    "squeeze": [lambda v: v["a"].unsqueeze(0).squeeze(0)],
    "contiguous": [lambda v: v["a"].t().contiguous()],
    "pow": [lambda v: v["a"].pow(2), lambda v: v["a"].pow(v["c"])],
    "mean": [lambda v: v["a"].mean(-1, keepdim=True)],
    "neg": [lambda v: v["a"].neg()],
    "float": [lambda v: v["i"].float()],
    "clone": [lambda v: v["a"].clone()],
    "expand": [lambda v: v["a"][:1].expand(3, -1)],
    "permute": [lambda v: v["q"].permute(3, 2, 1, 0)],
    "size": [lambda v: v["a"].size(), lambda v: v["a"].size(-1)],
    "dim": [lambda v: v["a"].dim()],
    "numel": [lambda v: v["a"].numel()],
    "matmul": [lambda v: v["a"].matmul(v["b"].t()), lambda v: v["a"].matmul(v["c"].t())],
    "softmax": [lambda v: v["a"].softmax(-1)],
    "flatten": [lambda v: v["q"].flatten(1)],
    "type_as": [lambda v: v["p"].type_as(v["c"])],
    "masked_fill": [lambda v: v["a"].masked_fill(v["m"], 0.5), lambda v: v["c"].masked_fill(v["m"], 0.5)],
    "sum": [lambda v: v["a"].sum(0)],
    "max": [lambda v: v["a"].max(), lambda v: v["a"].max(-1)],
    "argmax": [lambda v: v["a"].argmax(-1)],
    "cumsum": [lambda v: v["i"].cumsum(0)],
    "long": [lambda v: v["a"].long()],
    "int": [lambda v: v["a"].int()],
    "bool": [lambda v: v["a"].bool()],
    "shape": [lambda v: v["a"].shape],
    "dtype": [lambda v: v["i"].dtype],
    "device": [lambda v: (v["a"].device, v["c"].device, v["p"].device)],
    "cat": [lambda v: torch.cat([v["a"], v["b"]]), lambda v: torch.cat([v["a"], v["c"]], dim=1)],
    "stack": [lambda v: torch.stack([v["a"], v["b"]]), lambda v: torch.stack([v["c"], v["a"]])],
    "rsqrt": [lambda v: torch.rsqrt(v["a"] + 1)],
    "cos": [lambda v: torch.cos(v["a"])],
    "sin": [lambda v: torch.sin(v["c"])],
    "exp": [lambda v: torch.exp(v["a"])],
    "where": [lambda v: torch.where(v["m"], v["a"], v["b"]), lambda v: torch.where(v["m"], v["a"], v["c"])],
    "arange": [lambda v: torch.arange(4, device="cuda:1"), lambda v: torch.arange(4) + v["a"][0]],
    "full": [lambda v: torch.full((2,), 3.0, device=v["c"].device)],
    "zeros": [lambda v: torch.zeros(2, 4, device="cuda:0") + v["a"][:2]],
    "ones": [lambda v: torch.ones(3, 4) * v["a"]],
    "linear": [
        lambda v: F.linear(v["a"], v["w"]),
        lambda v: F.linear(v["c"], v["w"]),
        lambda v: F.linear(v["a"], v["w"], v["c"][0, :1]),
    ],
    "embedding": [lambda v: F.embedding(v["i"], v["w"]), lambda v: F.embedding(v["j"], v["w"])],
    "silu": [lambda v: F.silu(v["a"])],
    "gelu": [lambda v: F.gelu(v["c"], approximate="tanh")],
    "scaled_dot_product_attention": [
        lambda v: F.scaled_dot_product_attention(v["q"], v["q"], v["q"]),
        lambda v: F.scaled_dot_product_attention(v["q"], v["q"], v["q"].to("cuda:1")),
    ],
    "dropout": [lambda v: F.dropout(v["a"], 0.5, training=False)],
    "__mul__": [lambda v: v["a"] * v["b"], lambda v: v["a"] * v["c"], lambda v: v["a"] * "x"],
    "__rmul__": [lambda v: 3 * v["a"], lambda v: v["p"] * v["a"]],
    "__add__": [lambda v: v["a"] + v["s"], lambda v: v["a"] + v["c"]],
    "__radd__": [lambda v: 1 + v["c"], lambda v: [1] + v["a"]],
    "__sub__": [lambda v: v["a"] - v["b"], lambda v: v["a"] - v["p"]],
    "__truediv__": [lambda v: v["a"] / 2, lambda v: v["c"] / v["a"]],
    "__matmul__": [lambda v: v["a"] @ v["b"].t(), lambda v: v["a"] @ v["c"].t()],
    "__neg__": [lambda v: -v["c"]],
}
CALLS["softmax"].append(lambda v: F.softmax(v["c"], dim=0))


def _outcome(value: Any) -> Any:
    """What a call gave, comparable across simulations: tensors by virtual device, dtype, values."""
    if isinstance(value, torch.Tensor):
        return ("tensor", virtual_device(value), value.dtype, tuple(value.shape), value.detach().cpu().tolist())
    if isinstance(value, (tuple, list)):
        return (type(value).__name__, [_outcome(v) for v in value])
    return ("value", value)


def _run(call: Call, direct_entries: bool) -> Any:
    with simulate(2, direct_entries=direct_entries):
        values = _values()
        try:
            return _outcome(call(values))
        except Exception as e:  # noqa: BLE001 - the error is the outcome compared
            return ("error", type(e).__name__, str(e))


def _cases() -> list[tuple[str, int]]:
    return [(name, i) for name, calls in CALLS.items() for i in range(len(calls))]


def test_every_entry_has_calls_here() -> None:
    names = {entry.name for entry in direct.entries()}
    assert names, "this torch supports direct entries (the private stack functions exist from torch 2.1 on)"
    assert names <= set(CALLS), f"entries without a differential call here: {sorted(names - set(CALLS))}"


@pytest.mark.parametrize(("name", "index"), _cases())
def test_an_entry_answers_what_the_mode_answers(name: str, index: int) -> None:
    call = CALLS[name][index]
    assert _run(call, direct_entries=True) == _run(call, direct_entries=False)


def test_the_calls_cover_errors_as_well_as_results() -> None:
    outcomes = [_run(CALLS[name][i], direct_entries=True) for name, i in _cases()]
    errors = [o for o in outcomes if o[0] == "error"]
    assert len(errors) >= 15 and any("cuda:0 and cuda:1" in o[2] or "cuda:1 and cuda:0" in o[2] for o in errors)
    assert any(o[1] == "TypeError" for o in errors)  # an operator that gave NotImplemented on both sides


@pytest.mark.parametrize("name", sorted({e.name for e in direct.entries()}))
def test_an_entry_skips_the_round_trip(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The call reaches the handler without torch routing it through the mode's __torch_function__."""
    from ropefix.devices.mode import DeviceMode

    routed: list[Any] = []
    handle = DeviceMode.__torch_function__

    def counting(self, func, types, args=(), kwargs=None):
        routed.append(func)
        return handle(self, func, types, args, kwargs)

    with simulate(2):
        values = _values()
        monkeypatch.setattr(DeviceMode, "__torch_function__", counting)
        try:
            CALLS[name][0](values)
        except RuntimeError:  # a call that fails on purpose (``ones`` without a device) still skips it
            pass
        finally:
            monkeypatch.undo()
    entry = next(e for e in direct.entries() if e.name == name)
    # routed calls left are other functions the sample call makes (a transpose, an index, ...)
    assert not any(f is entry.func or f == entry.func for f in routed), routed
    assert not any(getattr(f, "__name__", "") in (name, getattr(entry.func, "__name__", name)) for f in routed), routed


def test_torch_is_restored_after_the_simulation_even_after_an_error() -> None:
    def names() -> dict[str, Any]:
        return {
            f"{getattr(e.owner, '__name__', e.owner)}.{e.name}": e.owner.__dict__.get(e.name) for e in direct.entries()
        }

    def protocols() -> list[int]:  # what CPython's slot table says a tensor is
        api, x = ctypes.pythonapi, ctypes.py_object(torch.ones(2))
        return [api.PySequence_Check(x), api.PyMapping_Check(x), api.PyNumber_Check(x), api.PyIndex_Check(x)]

    before, slots = names(), protocols()
    tensor_dict = dict(torch.Tensor.__dict__)
    with pytest.raises(ZeroDivisionError), simulate(2):
        assert names() != before
        raise ZeroDivisionError
    assert names() == before
    assert dict(torch.Tensor.__dict__) == tensor_dict
    assert protocols() == slots == [0, 1, 1, 1]
    assert torch.tensor([torch.tensor(1.0), torch.tensor(2.0)]).tolist() == [1.0, 2.0]  # 0-d items are no sequences
    x = torch.ones(2)
    assert (-x).tolist() == [-1.0, -1.0] and x.shape == (2,) and torch.cat([x, x]).shape == (4,)


def test_a_call_torch_routes_with_an_entry_as_its_function_gets_the_originals_handler() -> None:
    """Calling torch's C method itself (not through the name) makes torch look the name up: the mode is then
    handed the entry, and must answer as for the original (``DeviceMode.alias``)."""
    with simulate(2):
        x = torch.ones(2, device="cuda:0")
        assert torch._C.TensorBase.device.__get__(x) == CUDA0
        moved = torch._C.TensorBase.to(x, "cuda:1")
        assert virtual_device(moved) == CUDA1


def test_torchs_tables_of_overridable_functions_never_hold_an_entry() -> None:
    with simulate(2):
        methods = torch.overrides._get_tensor_methods()
        by_namespace = torch.overrides.get_overridable_functions()
    assert torch.Tensor.mul in methods and torch.Tensor.to in methods
    assert not [f for f in methods if getattr(f, "__qualname__", "").startswith("_make.")]
    assert torch.cat in by_namespace[torch] and torch.nn.functional.linear in by_namespace[torch.nn.functional]
    assert not [f for f in by_namespace[torch.Tensor] if getattr(f, "__qualname__", "").startswith("_make.")]


def test_a_thread_outside_the_simulation_gets_torch_itself() -> None:
    """A thread started before the simulation has no mode: the entries hand its calls to the originals."""
    go, done = threading.Event(), threading.Event()
    seen: dict[str, Any] = {}

    def worker() -> None:
        go.wait()
        seen["device"] = tagged.device  # the real device: the tag means nothing outside the simulation
        seen["sum"] = (tagged * torch.ones(2)).tolist()  # no device check outside the simulation
        done.set()

    thread = threading.Thread(target=worker)
    thread.start()
    with simulate(2):
        tagged = torch.ones(2, device="cuda:1")
        go.set()
        done.wait(10)
        assert tagged.device == CUDA1  # and inside, the simulation's answer
    thread.join()
    assert seen == {"device": torch.device("cpu"), "sum": [1.0, 1.0]}


def test_a_mode_pushed_inside_the_simulation_sees_each_call_once() -> None:
    class Recorder(TorchFunctionMode):
        def __init__(self) -> None:
            super().__init__()
            self.names: list[str] = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            self.names.append(getattr(func, "__name__", ""))
            return func(*args, **(kwargs or {}))

    with simulate(2):
        x, y = torch.ones(2, device="cuda:1"), torch.ones(2, device="cuda:1")
        with Recorder() as recorder:
            out = x.mul(y)
            cat = torch.cat([x, y])
        assert recorder.names == ["mul", "cat"]
        assert out.device == CUDA1 and cat.device == CUDA1  # the simulation still answers below it
        with torch._C.DisableTorchFunction():
            assert x.device == torch.device("cpu")  # torch functions off: torch's own answer


def test_a_split_generate_gives_the_same_tokens_and_the_same_error_either_way() -> None:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    ids = torch.randint(0, 96, (2, 6), generator=torch.Generator().manual_seed(1))
    split = {
        "model.embed_tokens": 0,
        "model.rotary_emb": 0,
        "model.layers.0": 0,
        "model.layers.1": 1,
        "model.norm": 1,
        "lm_head": 1,
    }
    outcomes = []
    for direct_entries in (True, False):
        with simulate(2, direct_entries=direct_entries):
            torch.manual_seed(0)
            model = dispatch_model(Qwen2ForCausalLM(config).eval(), device_map=split)
            tokens = model.generate(ids.to("cuda:0"), max_new_tokens=4, do_sample=False).cpu().tolist()
            torch.manual_seed(0)
            broken = Qwen2ForCausalLM(config).eval().to("cuda:0")
            broken.lm_head.to("cuda:1")  # no hooks: the head gets its input on the wrong device
            with pytest.raises(RuntimeError) as error:
                broken.generate(ids.to("cuda:0"), max_new_tokens=4, do_sample=False)
        outcomes.append((tokens, str(error.value), error.traceback[-1].name))
    assert outcomes[0] == outcomes[1]
    assert "cuda:1" in outcomes[0][1]
