"""CUDA kernels that accept dtypes the CPU kernels refuse: what a simulated CUDA device returns instead.

A simulation runs every kernel on the CPU. Where torch's CUDA kernel takes inputs its CPU kernel
refuses, running the CPU kernel would fail where hardware succeeds (transformers picks integer
``histc`` on accelerators because it is deterministic there; the CPU has no integer ``histc``).
These functions compute the CUDA kernel's result on the CPU: same dtype, same values, same errors.
They apply to tensors on a simulated CUDA device only; plain CPU tensors keep the CPU's behaviour.

Sources (torch 2.13): the op database torch tests every release against on both devices,
``torch/testing/_internal/common_methods_invocations.py`` (``OpInfo(..., dtypes=...,
dtypesIfCUDA=...)``), and the CUDA sources ``aten/src/ATen/native/cuda/SummaryOps.cu`` (histc)
and ``UpSampleBilinear2d.cu`` (antialiased bilinear and bicubic resize).
"""

from __future__ import annotations

import math
from typing import Any

import torch

# histc's CUDA kernel is dispatched over AT_DISPATCH_ALL_TYPES: floating types and these integers
HISTC_INTEGERS = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
# the antialiased resize kernels take these on CUDA and only float32/float64 (and uint8) on the CPU
AA_HALVES = (torch.float16, torch.bfloat16)
AA_MODES = ("bilinear", "bicubic")
_DTYPE_NAMES = {torch.bool: "Bool", torch.bfloat16: "BFloat16"}
_INT64 = 2**63


def histc_differs(t: torch.Tensor) -> bool:
    """Whether CUDA's ``histc`` behaves otherwise than the CPU's for ``t``'s dtype."""
    return t.dtype in HISTC_INTEGERS or t.dtype in (torch.float16, torch.bfloat16, torch.bool)


def histc(t: torch.Tensor, bins: int = 100, min: Any = 0, max: Any = 0) -> torch.Tensor:
    """``torch.histc`` as the CUDA kernel computes it, for the dtypes where it differs from the CPU's.

    Integers: the bounds are converted to int64 (truncated), the data's min and max are used when
    they are equal, then widened by one when still equal; an element ``v`` in ``[min, max]`` falls
    in bin ``(v - min) * bins // (max - min)`` (integer arithmetic; ``max`` itself in the last bin).
    The counts come back in the input's dtype. Half, BFloat16 and Bool raise CUDA's errors.
    """
    if t.dtype == torch.float16:
        raise RuntimeError("HalfTensor is not supported")
    if t.dtype not in HISTC_INTEGERS:
        raise NotImplementedError(f"\"histc\" not implemented for '{_DTYPE_NAMES.get(t.dtype, t.dtype)}'")
    if bins <= 0:
        raise RuntimeError("bins must be > 0")
    lo, hi = _int64(min), _int64(max)
    if lo == hi and t.numel() > 0:
        lo, hi = int(t.min()), int(t.max())
    if lo == hi:
        lo, hi = lo - 1, hi + 1
    if not lo < hi:
        raise RuntimeError("max must be larger than min")
    values = t.reshape(-1).to(torch.int64)
    inside = values[(values >= lo) & (values <= hi)]
    index = ((inside - lo) * bins).div(hi - lo, rounding_mode="floor").clamp(max=bins - 1)
    return torch.bincount(index, minlength=bins).to(t.dtype)


def _int64(value: Any) -> int:
    """A Scalar bound converted to int64 the way c10 does (truncated; non-finite or overflowing refused)."""
    number = value.item() if isinstance(value, torch.Tensor) else value
    if isinstance(number, float) and not math.isfinite(number) or not -_INT64 <= number < _INT64:
        raise RuntimeError("value cannot be converted to type int64_t without overflow")
    return int(number)


def interpolate_differs(t: torch.Tensor, mode: Any, antialias: Any) -> bool:
    """Whether ``F.interpolate(t, mode=mode, antialias=antialias)`` is CUDA-only for ``t``'s dtype."""
    return bool(antialias) and mode in AA_MODES and t.dtype in AA_HALVES


def interpolate(func: Any, t: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor:
    """An antialiased bilinear/bicubic resize of a half-precision tensor, as CUDA returns it.

    CUDA accumulates in float32 and writes the input's dtype; here the float32 CPU kernel runs and
    its result is rounded once to the input's dtype. CUDA also rounds its weights and the first
    pass to the input's dtype, so the last bits can differ from the hardware's (the dtype and the
    shape never do).
    """
    out = func(t.float(), *args, **kwargs)
    return out.to(t.dtype)
