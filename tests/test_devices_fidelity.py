"""Fidelity: over random op sequences and placements, the simulator raises exactly where PyTorch would.

The oracle below is written from PyTorch's rules, independently of ``ropefix.devices.rules``:

* element-wise ops: the operands that are not 0-dim cpu *inputs* must all share one device;
  the text names the first non-cpu device and then the first operand that differs;
* cat/stack and mm: every tensor must share the first tensor's device, no exemption;
* indexing: an index tensor may be on cpu or on the indexed tensor's device;
* copy_ and .to cross devices freely.

Each step's result joins the pool, so devices flow through the sequence. Values are compared with
a plain CPU run (all arithmetic is on the CPU, so they must be bit-identical). Where a real GPU is
present, the same programs run on real cpu/cuda:0 tensors and must fail identically.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from ropefix.devices import simulate

DEVICES = ["cpu", "cuda:0", "cuda:1"]
SHAPES = [(), (3,), (2, 3)]
ELEMENTWISE = ["add", "mul", "sub", "maximum", "eq", "where"]
OPS = [*ELEMENTWISE, "add_", "cat", "mm", "index", "copy_", "to"]


@dataclass(frozen=True)
class Value:
    device: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Step:
    op: str
    operands: tuple[int, ...]  # indices into the pool, taken modulo its size
    device: str = "cpu"  # for "to"
    copy: bool = False  # for "to": the one-device reference copies where the device run moves


def _broadcast(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(torch.broadcast_shapes(*shapes))


def _elementwise_expectation(ops: list[tuple[Value, bool]]) -> str | None:
    """ops: (value, is_output) in operand order. The message PyTorch raises, or None."""
    accelerators = [v.device for v, _ in ops if v.device != "cpu"]
    if not accelerators:
        return None  # all on cpu
    common = accelerators[0]
    for v, out in ops:
        cpu_scalar_input = v.device == "cpu" and v.shape == () and not out
        if v.device != common and not cpu_scalar_input:
            return f"Expected all tensors to be on the same device, but found at least two devices, {common} and {v.device}!"
    return None


# torch 2.8 reworded the generated wrappers' device check
_OLD_WRAPPER_TEXT = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]) < (2, 8)


def _wrapper_expectation(named: list[tuple[str, Value]], method: str) -> str | None:
    first = named[0][1].device
    for name, v in named[1:]:
        if v.device != first and _OLD_WRAPPER_TEXT:
            return (
                f"Expected all tensors to be on the same device, but found at least two devices, {first} and "
                f"{v.device}! (when checking argument for argument {name} in method wrapper_CUDA_{method})"
            )
        if v.device != first:
            return (
                f"Expected all tensors to be on the same device, but got {name} is on {v.device}, "
                f"different from other tensors on {first} (when checking argument in method wrapper_CUDA_{method})"
            )
    return None


def expect(step: Step, pool: list[Value]) -> tuple[str, str | None, Value | None]:
    """(error type or "", message, result) for one step under PyTorch's rules."""
    vals = [pool[i % len(pool)] for i in step.operands]
    a, b, c = vals
    if step.op in ELEMENTWISE:
        operands = [a, b, c] if step.op == "where" else [a, b]
        msg = _elementwise_expectation([(v, False) for v in operands])
        shape = _broadcast(*(v.shape for v in operands))
        devices = [v.device for v in operands if v.device != "cpu"]
        return ("RuntimeError", msg, None) if msg else ("", None, Value(devices[0] if devices else "cpu", shape))
    if step.op == "add_":
        msg = _elementwise_expectation([(a, True), (b, False)])
        return ("RuntimeError", msg, None) if msg else ("", None, a)
    if step.op == "cat":
        msg = _wrapper_expectation([("tensors", a), ("tensors", b)], "cat")
        return ("RuntimeError", msg, None) if msg else ("", None, Value(a.device, (3,)))
    if step.op == "mm":
        msg = _wrapper_expectation([("self", a), ("mat2", b)], "mm")
        return ("RuntimeError", msg, None) if msg else ("", None, Value(a.device, (1, 1)))
    if step.op == "index":
        if b.device not in ("cpu", a.device):
            msg = f"indices should be either on cpu or on the same device as the indexed tensor ({a.device})"
            return ("IndexError", msg, None)
        return ("", None, Value(a.device, (1,)))
    if step.op == "copy_":
        return ("", None, a)
    return ("", None, Value(step.device, a.shape))  # to


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def apply(step: Step, pool: list[torch.Tensor]) -> torch.Tensor:
    a, b, c = (pool[i % len(pool)] for i in step.operands)
    if step.op == "where":
        return torch.where(a > 0, b, c)
    if step.op in ELEMENTWISE:
        return getattr(torch, step.op)(a, b).float()  # float, so a comparison can feed any later op
    if step.op == "add_":
        return a.add_(b)
    if step.op == "cat":
        # shape (3,): every result stays broadcastable with the pool (shape errors are not the subject)
        return torch.cat([a.reshape(-1)[:1], b.reshape(-1)[:1].expand(2)])
    if step.op == "mm":
        return torch.mm(a.reshape(1, -1)[:, :1], b.reshape(-1, 1)[:1])
    if step.op == "index":
        return a.reshape(-1)[b.reshape(-1)[:1].long().clamp(0, 0)]
    if step.op == "copy_":
        return a.copy_(b.float())
    return a.to(step.device, copy=step.copy)


def start_values(placements: list[tuple[str, tuple[int, ...]]]) -> list[torch.Tensor]:
    values = []
    for i, (device, shape) in enumerate(placements):
        base = (torch.arange(_numel(shape), dtype=torch.float32) - i).reshape(shape)
        values.append(base.to(device) if device != "cpu" else base)
    return values


def run(placements: list[tuple[str, tuple[int, ...]]], steps: list[Step]) -> list[tuple]:
    """Execute the program; one record per step, ending at the first error."""
    pool = start_values(placements)
    trace: list[tuple] = []
    for step in steps:
        try:
            out = apply(step, pool)
        except (RuntimeError, IndexError) as e:
            trace.append((type(e).__name__, str(e)))
            break
        pool.append(out)
        trace.append(("", str(out.device), tuple(out.shape), out.detach().cpu().flatten().tolist()))
    return trace


placements_st = st.lists(st.tuples(st.sampled_from(DEVICES), st.sampled_from(SHAPES)), min_size=2, max_size=4)
step_st = st.builds(
    Step,
    op=st.sampled_from(OPS),
    operands=st.tuples(*[st.integers(0, 7)] * 3),
    device=st.sampled_from(DEVICES),
)


def _valid(step: Step, pool: list[Value]) -> bool:
    """Shape-legal programs only: device errors are the subject, not shape errors."""
    a, b, _ = (pool[i % len(pool)] for i in step.operands)
    if step.op == "add_":
        return _broadcast(a.shape, b.shape) == a.shape
    if step.op == "copy_":
        return _broadcast(a.shape, b.shape) == a.shape
    return True


# the corners of the rules, always run on top of the random search
@example(placements=[("cpu", ()), ("cuda:0", ())], steps=[Step("add_", (0, 1, 0))])  # no exemption for outputs
@example(placements=[("cuda:0", ()), ("cpu", (3,))], steps=[Step("add", (0, 1, 0))])  # cuda scalars are no exemption
@example(placements=[("cpu", ()), ("cuda:1", (2, 3))], steps=[Step("where", (1, 0, 1))])  # cpu scalars combine
@example(placements=[("cuda:1", (3,)), ("cuda:0", (3,))], steps=[Step("cat", (0, 1, 0))])
@example(placements=[("cpu", (3,)), ("cuda:0", ())], steps=[Step("index", (0, 1, 0))])
@example(placements=[("cuda:0", (3,)), ("cpu", ())], steps=[Step("mm", (0, 1, 0))])
@given(placements=placements_st, steps=st.lists(step_st, min_size=1, max_size=6))
def test_simulator_raises_exactly_where_pytorch_rules_say(placements, steps) -> None:
    pool = [Value(d, s) for d, s in placements]
    expected: list[tuple] = []
    reference: list[Step] = []  # the same program on one device; a move there is a copy
    for step in steps:
        if not _valid(step, pool):
            break
        moves = step.op == "to" and pool[step.operands[0] % len(pool)].device != step.device
        reference.append(Step(step.op, step.operands, "cpu", copy=moves))
        kind, msg, result = expect(step, pool)
        if kind:
            expected.append((kind, msg))
            break
        expected.append(result)
        pool.append(result)
    steps = steps[: len(expected)]
    with simulate(2):
        got = run(placements, steps)
    with simulate(2, direct_entries=False):  # every call routed by torch through the mode: the same answers
        assert run(placements, steps) == got
    # the same program on one device: the values every simulated step must reproduce bit for bit
    cpu = run([("cpu", s) for _, s in placements], reference)
    assert len(got) == len(expected)
    for g, e, c in zip(got, expected, cpu):
        if isinstance(e, tuple):
            assert g == e
        else:
            assert g[0] == "" and (g[1], g[2]) == (e.device, e.shape)
            assert g[3] == c[3]  # bit-identical values


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a real CUDA device for the differential run")
@given(
    placements=st.lists(
        st.tuples(st.sampled_from(["cpu", "cuda:0"]), st.sampled_from(SHAPES)), min_size=2, max_size=4
    ),
    steps=st.lists(step_st.filter(lambda s: s.device != "cuda:1"), min_size=1, max_size=6),
)
def test_simulator_matches_a_real_gpu(placements, steps) -> None:
    pool = [Value(d, s) for d, s in placements]
    kept = []
    for step in steps:
        if not _valid(step, pool):
            break
        kept.append(step)
        kind, _, result = expect(step, pool)
        if kind:
            break
        pool.append(result)
    real = run(placements, kept)
    real_n = torch.cuda.device_count()
    try:
        with simulate(real_n):
            simulated = run(placements, kept)
    finally:
        torch.cuda.synchronize()
    assert simulated == real


# Kernels whose CUDA version takes dtypes the CPU's refuses (ropefix.devices.kernels): each call runs
# on the real cuda:0 and on the simulated one; dtype, values (or the error) must agree.
HISTC_CALLS = [
    (values, dtype, bins, lo, hi)
    for dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
    for values, bins, lo, hi in [
        ([3, 1, 2, 0, 1, 3, 4, 9], 4, 0, 3),
        ([0, 1, 2, 3, 0, 1], 4, 0, 4),
        ([3, 1, 2, 0, 1, 3, 4, 9], 3, 0, 0),
        ([5, 5, 5], 2, 0, 0),
        ([1, 2, 3], 2, 0.9, 3.7),
        ([7, 8, 9, 10], 3, 0.2, 0.7),
        ([1, 2, 3], 0, 0, 3),
        ([1, 2, 3], 2, 3, 1),
        ([100] * 300, 2, 0, 0),  # more counts than uint8 and int8 hold
    ]
] + [([1, 2, 3], dtype, 2, 0, 3) for dtype in (torch.float16, torch.bfloat16, torch.bool, torch.float32)]


def _outcome(call):
    try:
        out = call()
    except (RuntimeError, NotImplementedError) as e:
        return (type(e).__name__, str(e).split("\n")[0])
    return (str(out.device), out.dtype, out.cpu())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a real CUDA device for the differential run")
@pytest.mark.parametrize(("values", "dtype", "bins", "lo", "hi"), HISTC_CALLS)
def test_histc_matches_a_real_gpu(values, dtype, bins, lo, hi) -> None:
    def call():
        return torch.histc(torch.tensor(values, device="cuda:0").to(dtype), bins=bins, min=lo, max=hi)

    real = _outcome(call)
    with simulate(torch.cuda.device_count()):
        simulated = _outcome(call)
    assert simulated[:2] == real[:2]
    if len(real) == 3:
        assert torch.equal(simulated[2], real[2])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a real CUDA device for the differential run")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_antialiased_resize_of_half_tensors_matches_a_real_gpu(dtype, mode) -> None:
    x = torch.rand(2, 3, 17, 11, generator=torch.Generator().manual_seed(0))

    def call():
        return torch.nn.functional.interpolate(x.to("cuda:0", dtype), size=(6, 9), mode=mode, antialias=True)

    real = _outcome(call)
    with simulate(torch.cuda.device_count()):
        simulated = _outcome(call)
    assert simulated[:2] == real[:2]
    # CUDA rounds its weights and first pass to the dtype; the simulator rounds once: last bits may differ
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(simulated[2].double(), real[2].double(), atol=4 * eps, rtol=4 * eps)
