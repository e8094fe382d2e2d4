"""CUDA kernels that take dtypes the CPU refuses: on a simulated CUDA device they give CUDA's result.

What CUDA gives is taken from torch's own op database (``torch/testing/_internal/
common_methods_invocations.py``: ``OpInfo("histc", dtypes=floating, dtypesIfCUDA=floating +
integers)``, ``OpInfo("_upsample_bilinear2d_aa", dtypesIfCUDA=... + float16, bfloat16)``) and the
CUDA sources (``SummaryOps.cu``: integer bins in int64 arithmetic, counts in the input's dtype;
``UpSampleBilinear2d.cu``: float32 accumulation). ``test_devices_fidelity.py`` runs the same calls
on a real GPU when one is present.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from ropefix.devices import kernels, simulate, virtual_device

CUDA0 = torch.device("cuda", 0)
INTEGERS = [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64]


@pytest.fixture
def sim():
    with simulate(1) as s:
        yield s


# (values, bins, min, max) -> CUDA's counts: bin = (v - min) * bins // (max - min), max in the last bin
HISTC_CASES = [
    ([3, 1, 2, 0, 1, 3, 4, 9], 4, 0, 3, [1, 2, 1, 2]),  # 4 and 9 are out of range; 3 == max: last bin
    ([0, 1, 2, 3, 0, 1], 4, 0, 4, [2, 2, 1, 1]),  # the router's call: histc(ids, bins=E, min=0, max=E)
    ([0, 1, 2, 3, 0, 1], 4, 0, 3, [2, 2, 1, 1]),  # and the grouped_mm one: min=0, max=E-1
    ([3, 1, 2, 0, 1, 3, 4, 9], 3, 0, 0, [4, 3, 1]),  # min == max: the data's range, [0, 9]
    ([5, 5, 5], 2, 0, 0, [0, 3]),  # all equal: widened to [4, 6]
    ([1, 2, 3], 2, 0.9, 3.7, [1, 2]),  # float bounds are truncated to int64: [0, 3]
    ([7, 8, 9, 10], 3, 0.2, 0.7, [1, 1, 2]),  # both truncate to 0: equal, so the data's range [7, 10]
]


@pytest.mark.parametrize("dtype", INTEGERS)
@pytest.mark.parametrize(("values", "bins", "lo", "hi", "counts"), HISTC_CASES)
def test_histc_on_integers_gives_cudas_counts_in_the_input_dtype(sim, dtype, values, bins, lo, hi, counts) -> None:
    x = torch.tensor(values, device="cuda:0").to(dtype)
    out = torch.histc(x, bins=bins, min=lo, max=hi)
    assert (out.device, out.dtype) == (CUDA0, dtype)
    assert out.cpu().tolist() == counts
    assert x.histc(bins, lo, hi).cpu().tolist() == counts  # the method, positional arguments
    # where the bin edges are exact, CPU's floating-point histc counts the same
    if isinstance(lo, int) and isinstance(hi, int) and lo != hi:
        assert torch.histc(x.cpu().float(), bins=bins, min=lo, max=hi).tolist() == counts


def test_histc_out_and_empty_input(sim) -> None:
    out = torch.empty(0, dtype=torch.int32, device="cuda:0")
    x = torch.tensor([0, 1, 1], dtype=torch.int32, device="cuda:0")
    assert torch.histc(x, bins=2, min=0, max=1, out=out) is out
    assert out.cpu().tolist() == [1, 2] and out.device == CUDA0
    empty = torch.histc(torch.empty(0, dtype=torch.int64, device="cuda:0"), bins=3)
    assert empty.cpu().tolist() == [0, 0, 0] and empty.dtype == torch.int64


@pytest.mark.parametrize(
    ("dtype", "error", "text"),
    [
        (torch.float16, RuntimeError, "HalfTensor is not supported"),
        (torch.bfloat16, NotImplementedError, "\"histc\" not implemented for 'BFloat16'"),
        (torch.bool, NotImplementedError, "\"histc\" not implemented for 'Bool'"),
    ],
)
def test_histc_refuses_what_cuda_refuses(sim, dtype, error, text) -> None:
    with pytest.raises(error) as e:
        torch.histc(torch.ones(3, device="cuda:0").to(dtype), bins=2)
    assert str(e.value) == text


def test_histc_argument_errors_are_cudas(sim) -> None:
    x = torch.tensor([1, 2], device="cuda:0")
    with pytest.raises(RuntimeError, match=r"^bins must be > 0$"):
        torch.histc(x, bins=0)
    with pytest.raises(RuntimeError, match=r"^max must be larger than min$"):
        torch.histc(x, bins=2, min=3, max=1)


def test_histc_on_plain_cpu_tensors_keeps_the_cpu_kernel(sim) -> None:
    with pytest.raises(NotImplementedError, match="\"histogram_cpu\" not implemented for 'Long'"):
        torch.histc(torch.tensor([1, 2]), bins=2)
    x = torch.tensor([0.5, 1.5], device="cuda:0")  # floating types: both kernels take them, the CPU's runs
    assert torch.histc(x, bins=2, min=0, max=2).cpu().tolist() == [1.0, 1.0]


def test_histc_of_a_cpu_int_tensor_fails_outside_the_simulation_too() -> None:
    # the plain CPU behaviour the simulator must not change for cpu tensors
    with pytest.raises(NotImplementedError):
        torch.histc(torch.tensor([1, 2], dtype=torch.int32), bins=2)


def test_the_moe_routers_offsets_on_a_simulated_device(sim) -> None:
    # transformers' grouped_mm experts (integrations/moe.py, 5.x): histc of int32 expert ids, then offsets
    expert_ids = torch.tensor([[2, 0], [1, 2], [3, 2]], device="cuda:0").reshape(-1)
    sorted_ids, _ = torch.sort(expert_ids)
    counts = torch.histc(sorted_ids.int(), bins=4, min=0, max=3)
    offsets = torch.cumsum(counts, dim=0, dtype=torch.int32)
    assert counts.dtype == torch.int32 and offsets.device == CUDA0
    assert offsets.cpu().tolist() == [1, 2, 5, 6]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_antialiased_resize_of_half_tensors_runs_as_on_cuda(sim, dtype, mode) -> None:
    torch.manual_seed(0)
    x = torch.rand(1, 3, 12, 10)
    out = F.interpolate(x.to("cuda:0", dtype), size=(5, 7), mode=mode, antialias=True, align_corners=False)
    assert (out.device, out.dtype, tuple(out.shape)) == (CUDA0, dtype, (1, 3, 5, 7))
    # CUDA accumulates in float32 and writes the input's dtype: within the dtype's resolution of the
    # exact result computed from the same (rounded) input
    exact = F.interpolate(x.to(dtype).double(), size=(5, 7), mode=mode, antialias=True, align_corners=False)
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(out.cpu().double(), exact, atol=4 * eps, rtol=2 * eps)
    with pytest.raises(NotImplementedError, match="compute_index_ranges_weights"):  # plain cpu: the CPU's kernel
        F.interpolate(x.to(dtype), size=(5, 7), mode=mode, antialias=True)


def test_kernel_rules_are_limited_to_the_differing_dtypes() -> None:
    assert kernels.histc_differs(torch.ones(1, dtype=torch.int32))
    assert not kernels.histc_differs(torch.ones(1))
    assert kernels.interpolate_differs(torch.ones(1, dtype=torch.float16), "bilinear", True)
    assert not kernels.interpolate_differs(torch.ones(1, dtype=torch.float16), "bilinear", False)
    assert not kernels.interpolate_differs(torch.ones(1, dtype=torch.float16), "nearest", True)
    assert not kernels.interpolate_differs(torch.ones(1), "bilinear", True)


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("transformers.models.qwen3_omni_moe") is None, reason="no qwen3_omni_moe here"
)
def test_qwen3_omni_moe_runs_its_router_on_one_simulated_device() -> None:
    # 5.24.0 routes through integer histc on accelerators; before kernels.py every call path failed here
    from ropefix.prove import tinymodels

    tiny = tinymodels.fresh("qwen3_omni_moe")
    batch = tinymodels.inputs(tiny, tinymodels.Prompt(kind="text"))
    with torch.no_grad():
        reference = tiny.model(**batch).logits
        with simulate(1):
            model = tiny.model.to("cuda:0")
            logits = model(**{k: v.to("cuda:0") for k, v in batch.items()}).logits
    assert virtual_device(logits) == CUDA0
    assert torch.equal(logits, reference)
