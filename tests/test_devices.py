"""The device simulator behaves as real multi-GPU hardware does, one behaviour per test."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
import torch

from ropefix.devices import rules, simulate, virtual_device
from ropefix.errors import RopefixError

CUDA0, CUDA1, CPU = torch.device("cuda", 0), torch.device("cuda", 1), torch.device("cpu")


def mixed(a: object, b: object) -> str:
    return f"Expected all tensors to be on the same device, but found at least two devices, {a} and {b}!"


def wrapper(arg: str, dev: object, common: object, method: str) -> str:
    if not rules.NEW_WRAPPER_WORDING:  # torch < 2.8
        return (
            f"Expected all tensors to be on the same device, but found at least two devices, {common} and {dev}! "
            f"(when checking argument for argument {arg} in method wrapper_CUDA_{method})"
        )
    return (
        f"Expected all tensors to be on the same device, but got {arg} is on {dev}, different from other "
        f"tensors on {common} (when checking argument in method wrapper_CUDA_{method})"
    )


@pytest.fixture
def sim():
    with simulate(2) as s:
        yield s


FACTORIES = {
    "ones": lambda d: torch.ones(2, 3, device=d),
    "zeros": lambda d: torch.zeros(2, device=d),
    "empty": lambda d: torch.empty(4, device=d),
    "full": lambda d: torch.full((2,), 7.0, device=d),
    "arange": lambda d: torch.arange(5, device=d),
    "tensor": lambda d: torch.tensor([1, 2], device=d),
    "randn": lambda d: torch.randn(3, device=d),
    "rand": lambda d: torch.rand(3, device=d),
    "randint": lambda d: torch.randint(0, 9, (3,), device=d),
    "eye": lambda d: torch.eye(2, device=d),
    "linspace": lambda d: torch.linspace(0, 1, 4, device=d),
    "zeros_like": lambda d: torch.zeros_like(torch.ones(2), device=d),
    "empty_like": lambda d: torch.empty_like(torch.ones(2), device=d),
    "new_zeros": lambda d: torch.ones(2).new_zeros(3, device=d),
    "as_tensor": lambda d: torch.as_tensor([1.0], device=d),
    "device_object": lambda d: torch.ones(1, device=torch.device(d)),
    "int_index": lambda d: torch.ones(1, device=torch.device(d).index),
}


@pytest.mark.parametrize("name", sorted(FACTORIES))
@pytest.mark.parametrize("where", ["cuda:0", "cuda:1"])
def test_factories_place_tensors_on_the_virtual_device(sim, name: str, where: str) -> None:
    t = FACTORIES[name](where)
    expected = torch.device(where)
    assert t.device == expected
    assert t.is_cuda and not t.is_cpu
    assert t.get_device() == expected.index


@pytest.mark.parametrize(
    "make",
    [
        lambda n: torch.arange(n),
        lambda n: torch.arange(0, n),
        lambda n: torch.full((2,), n),
        lambda n: torch.zeros(int(n)),
        lambda n: torch.linspace(0, n, 3),
    ],
)
def test_factories_without_device_ignore_the_device_of_tensor_arguments(sim, make) -> None:
    n = torch.tensor(4, device="cuda:1")  # a 0-dim tensor read as a number, as real torch does
    t = make(n)
    assert t.device == torch.device("cpu")
    assert (t + torch.ones_like(t)).device == torch.device("cpu")  # no false mismatch later
    out = torch.empty(4, dtype=torch.long, device="cuda:0")
    assert torch.arange(4, out=out).device == torch.device("cuda:0")


@pytest.mark.parametrize(
    "shape_call",
    [
        lambda x, n: x[:, :1].expand(-1, n),
        lambda x, n: x.view(n // 2, -1),
        lambda x, n: x.reshape(-1, n),
        lambda x, n: torch.reshape(x, (n, -1)),
        lambda x, n: x.repeat(1, n),
        lambda x, n: x.narrow(1, 0, n),
        lambda x, n: x.unsqueeze(n - 4),
        lambda x, n: x.split(n // 2, dim=1)[0],
        lambda x, n: x.new_zeros(n, 2),
        lambda x, n: x.flatten(0, n - 3),
        lambda x, n: torch.nn.functional.pad(x, (0, n, 0, n - 3), "constant", -1.0),
        lambda x, n: x.view((n // 2, n)),
    ],
)
@pytest.mark.parametrize("where", ["cpu", "cuda:1"])
def test_shape_calls_read_0_dim_tensors_as_numbers(sim, shape_call, where: str) -> None:
    # sizes and dims taken from a tensor on another device (a grid read from cuda) never mix devices
    x = torch.arange(8.0, device=where).reshape(2, 4)
    n = torch.tensor(4, device="cuda:0")
    out = shape_call(x, n)
    assert out.device == torch.device(where)
    assert out.sum().device == torch.device(where)


def test_cpu_tensors_stay_cpu(sim) -> None:
    t = torch.ones(3)
    assert t.device == CPU and not t.is_cuda and t.get_device() == -1


def test_cuda_without_index_means_the_current_device(sim) -> None:
    assert torch.ones(1, device="cuda").device == CUDA0
    torch.cuda.set_device(1)
    assert torch.ones(1, device="cuda").device == CUDA1
    assert torch.ones(1).cuda().device == CUDA1
    with torch.cuda.device(0):
        assert torch.cuda.current_device() == 0
        assert torch.ones(1).to("cuda").device == CUDA0
    assert torch.cuda.current_device() == 1
    with torch.cuda.device_of(torch.ones(1, device="cuda:0")):
        assert torch.ones(1, device="cuda").device == CUDA0
    assert torch.cuda.current_device() == 1


def test_unknown_ordinal_is_refused_like_a_real_driver(sim) -> None:
    with pytest.raises(RuntimeError, match="invalid device ordinal"):
        torch.ones(1, device="cuda:2")


TO_FORMS = {
    "device str": (lambda x, y: x.to("cuda:1"), CUDA1, torch.float32),
    "device obj": (lambda x, y: x.to(torch.device("cuda", 1)), CUDA1, torch.float32),
    "device int": (lambda x, y: x.to(1), CUDA1, torch.float32),
    "dtype": (lambda x, y: x.to(torch.float16), CUDA0, torch.float16),
    "device dtype": (lambda x, y: x.to("cuda:1", torch.float64), CUDA1, torch.float64),
    "keywords": (lambda x, y: x.to(device="cuda:1", dtype=torch.bfloat16), CUDA1, torch.bfloat16),
    "tensor": (lambda x, y: x.to(y), CUDA1, torch.int64),
    "tensor non_blocking": (lambda x, y: x.to(y, non_blocking=True), CUDA1, torch.int64),
    "non_blocking": (lambda x, y: x.to("cuda:1", non_blocking=True), CUDA1, torch.float32),
    "copy": (lambda x, y: x.to("cuda:1", copy=True), CUDA1, torch.float32),
    "positional flags": (lambda x, y: x.to("cpu", None, False, True), CPU, torch.float32),
    "cpu": (lambda x, y: x.to("cpu"), CPU, torch.float32),
    "cpu()": (lambda x, y: x.cpu(), CPU, torch.float32),
    "cuda()": (lambda x, y: x.cuda(), CUDA0, torch.float32),
    "cuda(1)": (lambda x, y: x.cuda(1), CUDA1, torch.float32),
    "cuda(device=)": (lambda x, y: x.cuda(device="cuda:1", non_blocking=True), CUDA1, torch.float32),
    "type_as": (lambda x, y: x.type_as(y), CUDA1, torch.int64),
}


@pytest.mark.parametrize("form", sorted(TO_FORMS))
def test_to_in_every_call_form(sim, form: str) -> None:
    fn, device, dtype = TO_FORMS[form]
    x = torch.arange(4.0, device="cuda:0")
    y = torch.zeros(2, dtype=torch.int64, device="cuda:1")
    out = fn(x, y)
    assert (out.device, out.dtype) == (device, dtype)
    assert x.device == CUDA0  # the source never moves
    assert torch.equal(out.cpu().double(), torch.arange(4.0).double())


def test_to_returns_self_when_nothing_changes_and_a_copy_when_asked(sim) -> None:
    x = torch.ones(2, device="cuda:1")
    assert x.to("cuda:1") is x and x.to(x) is x and x.cuda(1) is x
    c = x.to("cuda:1", copy=True)
    assert c is not x and c.device == CUDA1
    c.add_(1)
    assert x.sum().item() == 2  # a real copy
    assert torch.ones(1).cpu().device == CPU


def test_module_to_and_cuda_move_parameters_and_buffers(sim) -> None:
    m = torch.nn.BatchNorm1d(3)
    m.to("cuda:1")
    assert {p.device for p in m.parameters()} | {b.device for b in m.buffers()} == {CUDA1}
    assert all(type(p) is torch.nn.Parameter for p in m.parameters())
    m.cuda(0)
    assert {p.device for p in m.parameters()} | {b.device for b in m.buffers()} == {CUDA0}
    m.to(torch.float64)
    assert m.weight.device == CUDA0 and m.weight.dtype == torch.float64
    m.cpu()
    assert m.weight.device == CPU


def test_results_views_and_parameters_inherit_the_device(sim) -> None:
    x = torch.arange(6.0, device="cuda:1").reshape(2, 3)
    for t in (
        x * 2,
        x[0],
        x.t(),
        x.sum(),
        x.detach(),
        torch.nn.Parameter(x),
        x.clone(),
        torch.zeros_like(x),
        x.new_ones(2),
        torch.softmax(x, -1),
        x.max(dim=1).values,
        copy.deepcopy(x),
    ):
        assert t.device == CUDA1
    assert [t.device for t in x.split(1)] == [CUDA1, CUDA1]


def test_arithmetic_is_bit_identical_to_cpu(sim) -> None:
    torch.manual_seed(0)
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    expected = torch.softmax(a @ b + 1, -1)
    got = torch.softmax(a.to("cuda:1") @ b.to("cuda:1") + 1, -1)
    assert got.device == CUDA1 and torch.equal(got.cpu(), expected)


@pytest.mark.parametrize(
    ("left", "right", "common", "other"),
    [
        ("cuda:1", "cuda:0", "cuda:1", "cuda:0"),
        ("cuda:0", "cuda:1", "cuda:0", "cuda:1"),
        ("cpu", "cuda:0", "cuda:0", "cpu"),
        ("cuda:0", "cpu", "cuda:0", "cpu"),
    ],
)
def test_mixing_devices_raises_pytorchs_text(sim, left: str, right: str, common: str, other: str) -> None:
    x, y = torch.ones(3, device=left), torch.ones(3, device=right)
    for op in (torch.add, torch.mul, torch.eq, torch.lt, torch.maximum, lambda a, b: torch.where(a > 0, a, b)):
        with pytest.raises(RuntimeError) as e:
            op(x, y)
        assert str(e.value) == mixed(common, other)


def test_zero_dim_cpu_tensors_combine_with_any_device(sim) -> None:
    x = torch.ones(3, device="cuda:1")
    s = torch.tensor(2.0)
    for out in (x + s, s * x, torch.where(x > 0, x, s), x.masked_fill(x > 0, s), x.add_(s)):
        assert out.device == CUDA1
    with pytest.raises(RuntimeError) as e:  # the exemption is for cpu scalars only
        torch.ones(3) + torch.tensor(1.0, device="cuda:0")
    assert str(e.value) == mixed("cuda:0", "cpu")
    with pytest.raises(RuntimeError) as e:  # and for inputs only: a cpu scalar cannot be written from cuda
        torch.tensor(1.0).add_(x)
    assert str(e.value) == mixed("cuda:1", "cpu")
    assert (x + 3).device == CUDA1  # python scalars are fine


def test_in_place_ops_check_devices(sim) -> None:
    x, y = torch.ones(3, device="cuda:0"), torch.ones(3, device="cuda:1")
    with pytest.raises(RuntimeError) as e:
        x += y
    assert str(e.value) == mixed("cuda:0", "cuda:1")
    with pytest.raises(RuntimeError):
        x.mul_(y)


def test_copy_crosses_devices_and_keeps_the_destination(sim) -> None:
    x, y = torch.zeros(3, device="cuda:0"), torch.arange(3.0, device="cuda:1")
    x.copy_(y)
    x[:2] = torch.ones(2)  # basic indexing assigns through copy_
    assert x.device == CUDA0 and x.tolist() == [1.0, 1.0, 2.0]


@pytest.mark.parametrize(
    ("op", "message"),
    [
        (lambda a, b: torch.cat([a, b]), wrapper("tensors", "cpu", "cuda:0", "cat")),
        (lambda a, b: torch.stack([a, b]), wrapper("tensors", "cpu", "cuda:0", "cat")),
        (lambda a, b: torch.mm(a.view(1, 3), b.view(3, 1)), wrapper("mat2", "cpu", "cuda:0", "mm")),
        (lambda a, b: a.view(1, 3) @ b.view(3, 1), wrapper("mat2", "cpu", "cuda:0", "mm")),
        (lambda a, b: torch.bmm(a.view(1, 1, 3), b.view(1, 3, 1)), wrapper("mat2", "cpu", "cuda:0", "bmm")),
        (lambda a, b: torch.index_select(a, 0, b.long()), wrapper("index", "cpu", "cuda:0", "_index_select")),
        (lambda a, b: torch.gather(a, 0, b.long()), wrapper("index", "cpu", "cuda:0", "gather")),
        (
            lambda a, b: torch.nn.functional.embedding(b.long(), a.view(3, 1)),
            wrapper("index", "cpu", "cuda:0", "_index_select"),
        ),
        (lambda a, b: torch.nn.functional.linear(b.view(1, 3), a.view(1, 3)), wrapper("mat2", "cuda:0", "cpu", "mm")),
        (
            lambda a, b: torch.nn.functional.linear(b.view(1, 3), a.view(1, 3), a[:1]),
            wrapper("mat1", "cpu", "cuda:0", "addmm"),
        ),
    ],
)
def test_non_elementwise_ops_raise_their_wrapper_text(sim, op, message: str) -> None:
    a, b = torch.zeros(3, device="cuda:0"), torch.zeros(3)
    with pytest.raises(RuntimeError) as e:
        op(a, b)
    assert str(e.value) == message


def test_indexing_rules(sim) -> None:
    x = torch.arange(4.0, device="cuda:1")
    assert x[torch.tensor([0, 2])].device == CUDA1  # a cpu index is fine
    assert x[torch.tensor([1], device="cuda:1")].tolist() == [1.0]
    with pytest.raises(IndexError) as e:
        x[torch.tensor([1], device="cuda:0")]
    assert str(e.value) == "indices should be either on cpu or on the same device as the indexed tensor (cuda:1)"
    with pytest.raises(IndexError, match=r"indexed tensor \(cpu\)"):
        torch.ones(3)[torch.tensor([True, False, True], device="cuda:0")]
    with pytest.raises(RuntimeError):
        x[torch.tensor([0, 1])] = torch.ones(2, device="cuda:0")
    x[torch.tensor([0])] = torch.tensor(5.0)
    assert x.tolist()[0] == 5.0


def test_host_values(sim) -> None:
    x = torch.arange(3, device="cuda:0")
    assert x.tolist() == [0, 1, 2] and x[1].item() == 1 and int(x[2]) == 2
    message = (
        "can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor to host memory first."
    )
    with pytest.raises(TypeError) as e:
        x.numpy()
    assert str(e.value) == message
    with pytest.raises(TypeError):
        np.asarray(x)
    assert x.numpy(force=True).tolist() == [0, 1, 2] and x.cpu().numpy().tolist() == [0, 1, 2]


def test_gradients_live_with_their_parameters(sim) -> None:
    lin = torch.nn.Linear(3, 1).to("cuda:1")
    lin(torch.ones(2, 3, device="cuda:1")).sum().backward()
    assert lin.weight.grad.device == CUDA1


def test_repr_names_the_device(sim) -> None:
    assert repr(torch.ones(2, device="cuda:1")) == "tensor([1., 1.], device='cuda:1')"
    assert repr(torch.ones(1, device="cuda:0", dtype=torch.float16)) == (
        "tensor([1.], device='cuda:0', dtype=torch.float16)"
    )


def test_torch_cuda_answers_inside_and_is_restored_after() -> None:
    originals = (torch.cuda.is_available, torch.cuda.device_count, torch.cuda.mem_get_info)
    real = torch.cuda.is_available()
    with simulate(3, memory=2**20) as s:
        assert torch.cuda.is_available() and torch.cuda.device_count() == 3
        assert torch.cuda.mem_get_info(2) == (2**20, 2**20)
        assert torch.cuda.get_device_properties(1).total_memory == 2**20
        torch.cuda.synchronize()
        assert s.devices == [torch.device("cuda", i) for i in range(3)]
        x = torch.ones(1, device="cuda:2")
    assert (torch.cuda.is_available, torch.cuda.device_count, torch.cuda.mem_get_info) == originals
    assert torch.cuda.is_available() == real
    assert virtual_device(x) == torch.device("cuda", 2)  # still answerable for reports


def test_restored_after_an_exception() -> None:
    before = torch.cuda.device_count
    with pytest.raises(ZeroDivisionError), simulate(2):
        raise ZeroDivisionError
    assert torch.cuda.device_count is before
    with simulate(1):  # and a new simulation can start
        assert torch.cuda.device_count() == 1


@pytest.mark.parametrize("kwargs", [{"n": 0}, {"n": 1.5}, {"kind": "tpu"}, {"memory": -1}])
def test_bad_arguments_are_refused(kwargs: dict) -> None:
    with pytest.raises(RopefixError), simulate(**kwargs):
        pass


def test_simulations_do_not_nest(sim) -> None:
    with pytest.raises(RopefixError, match="already running"), simulate(2):
        pass


def test_legacy_type_names_the_device_and_moves(sim) -> None:
    x = torch.ones(2, device="cuda:1")
    assert x.type() == "torch.cuda.FloatTensor" and torch.ones(1).type() == "torch.FloatTensor"
    assert x.type("torch.cuda.FloatTensor") is x
    d = x.type("torch.cuda.DoubleTensor")
    assert (d.device, d.dtype) == (CUDA1, torch.float64)
    assert x.type("torch.LongTensor").device == CPU
    assert torch.ones(1).type("torch.cuda.HalfTensor").device == CUDA0  # the current device
    assert x.type(torch.float16).device == CUDA1


def test_new_tensor_and_to_empty_take_a_device(sim) -> None:
    x = torch.ones(2, device="cuda:1")
    assert x.new_tensor([1, 2]).device == CUDA1
    assert x.new_tensor([1, 2], device="cuda:0").device == CUDA0
    meta = torch.nn.Linear(2, 2, device="meta")
    assert meta.weight.device == torch.device("meta")
    meta.to_empty(device="cuda:0")
    assert meta.weight.device == CUDA0


def test_tensors_placed_in_one_simulation_keep_the_fast_path_in_the_next() -> None:
    with simulate(2):
        x = torch.ones(2, device="cuda:1")
    with simulate(2) as again:
        assert x.to("cuda:1") is x  # the same device object, not a copy
        assert again.mode.device_of(x) is again.devices[1]


def test_threads_started_inside_run_in_the_simulation() -> None:
    import threading

    seen: list[object] = []
    original_run = threading.Thread.run
    with simulate(2):
        worker = threading.Thread(target=lambda: seen.append(torch.ones(1, device="cuda:1").device))
        worker.start()
        worker.join()
    assert seen == [CUDA1]
    assert threading.Thread.run is original_run


def test_older_torch_wording_of_wrapper_checks() -> None:
    devices = [("self", CUDA0), ("mat2", CPU)]
    assert rules.wrapper_error("wrapper_CUDA_mm", devices, new_wording=False) == (
        "Expected all tensors to be on the same device, but found at least two devices, cuda:0 and cpu! "
        "(when checking argument for argument mat2 in method wrapper_CUDA_mm)"
    )
    assert rules.wrapper_error("wrapper_CUDA_mm", devices[:1] * 2, new_wording=False) is None


def test_seeds_streams_and_events_work_as_on_a_gpu_box(sim) -> None:
    import transformers

    transformers.set_seed(0)  # seeds torch.cuda too
    torch.cuda.manual_seed(1)
    assert torch.cuda.get_rng_state().dtype == torch.uint8
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        x = torch.ones(2, device="cuda:0")
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    end.record(torch.cuda.current_stream())
    end.synchronize()
    stream.wait_stream(torch.cuda.current_stream())
    assert start.elapsed_time(end) >= 0 and x.device == CUDA0


def test_convolutions_compare_tensor_types_first(sim) -> None:
    conv = torch.nn.Conv2d(1, 1, 1).to("cuda:0")
    with pytest.raises(RuntimeError) as e:
        conv(torch.ones(1, 1, 2, 2))
    assert str(e.value) == (
        "Input type (torch.FloatTensor) and weight type (torch.cuda.FloatTensor) should be the same "
        "or input should be a MKLDNN tensor and weight is a dense tensor"
    )
    with pytest.raises(RuntimeError) as e:
        conv.cpu()(torch.ones(1, 1, 2, 2, device="cuda:0"))
    assert str(e.value) == "Input type (torch.cuda.FloatTensor) and weight type (torch.FloatTensor) should be the same"
    with pytest.raises(RuntimeError, match="found at least two devices"):
        conv.to("cuda:1")(torch.ones(1, 1, 2, 2, device="cuda:0"))
    assert conv(torch.ones(1, 1, 2, 2, device="cuda:1")).device == CUDA1


def test_vmap_sees_the_devices_of_the_tensors_it_batches(sim) -> None:
    # transformers builds attention masks with nested vmaps over index tensors (from 4.53 on)
    pad = torch.tensor([[True, True, False]], device="cuda:1")

    def allowed(b: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return (q >= k) & pad[b, k]

    mask = torch.vmap(torch.vmap(torch.vmap(allowed, (None, None, 0)), (None, 0, None)), (0, None, None))
    rows = torch.arange(3, device="cuda:1")
    plain = torch.vmap(
        torch.vmap(torch.vmap(lambda b, q, k: (q >= k) & plain_pad[b, k], (None, None, 0)), (None, 0, None)),
        (0, None, None),
    )
    with torch._C.DisableTorchFunction():  # torch itself, on the CPU
        plain_pad = pad.clone()
        try:
            plain(torch.arange(1), torch.arange(3), torch.arange(3))
            unsupported = None
        except RuntimeError as e:  # torch < 2.7 cannot vmap tensor indexing (.item()): nor can the simulation
            unsupported = str(e)
    if unsupported:
        with pytest.raises(RuntimeError, match=re.escape(unsupported)):
            mask(torch.arange(1, device="cuda:1"), rows, rows)
        return
    out = mask(torch.arange(1, device="cuda:1"), rows, rows)
    assert out.device == CUDA1
    assert out.cpu().tolist() == [[[True, False, False], [True, True, False], [True, True, False]]]
    with pytest.raises(IndexError, match=r"same device as the indexed tensor \(cuda:1\)"):
        mask(torch.arange(1, device="cuda:0"), rows, rows)
