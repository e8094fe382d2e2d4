"""PyTorch's device rules and error texts, as pure functions of devices (no tensors, no torch state).

Three families of checks exist in PyTorch, each with its own text (read from torch 2.13's binary):

* element-wise ops (TensorIterator): every operand must share the *common device*, the first
  non-cpu device among the operands, outputs first; 0-dim cpu *inputs* are exempt (they are
  read as scalars). Text: ``Expected all tensors to be on the same device, but found at least
  two devices, {common} and {other}!``
* generated wrappers of non-element-wise kernels (mm, addmm, bmm, index_select, gather, cat):
  the first tensor argument fixes the device, no 0-dim exemption. Text: ``Expected all tensors
  to be on the same device, but got {arg} is on {other}, different from other tensors on
  {common} (when checking argument in method {wrapper})``; releases before 2.8 (our best
  reading of when the wording changed) said ``..., but found at least two devices, {common}
  and {other}! (when checking argument for argument {arg} in method {wrapper})``.
* advanced indexing: index tensors may be on cpu or on the indexed tensor's device
  (``IndexError``), and ``Tensor.numpy()`` refuses non-cpu tensors (``TypeError``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from packaging.version import Version

CPU = torch.device("cpu")
# torch 2.13's binary holds the "but got ... different from other tensors on" wording
NEW_WRAPPER_WORDING = Version(torch.__version__.split("+")[0]).release[:2] >= (2, 8)


def elementwise_error(operands: Sequence[tuple[torch.device, int, bool]]) -> str | None:
    """The message a TensorIterator op raises for ``operands`` = (device, ndim, is_output), in order.

    ``None`` when the op is allowed.
    """
    common = CPU
    for dev, _ndim, _out in operands:
        if dev.type != "cpu":
            common = dev
            break
    if common.type == "cpu":
        return None
    for dev, ndim, is_out in operands:
        if dev == common or (dev.type == "cpu" and ndim == 0 and not is_out):
            continue
        return f"Expected all tensors to be on the same device, but found at least two devices, {common} and {dev}!"
    return None


def wrapper_error(
    method: str, arguments: Iterable[tuple[str, torch.device]], new_wording: bool = NEW_WRAPPER_WORDING
) -> str | None:
    """The message a generated device check raises for (argument name, device) pairs in order."""
    common: torch.device | None = None
    for name, dev in arguments:
        if common is None:
            common = dev
        elif dev != common:
            if not new_wording:
                return (
                    f"Expected all tensors to be on the same device, but found at least two devices, {common} and "
                    f"{dev}! (when checking argument for argument {name} in method {method})"
                )
            return (
                f"Expected all tensors to be on the same device, but got {name} is on {dev}, "
                f"different from other tensors on {common} (when checking argument in method {method})"
            )
    return None


def index_error(indexed: torch.device, index: torch.device) -> str | None:
    """The IndexError text when an index tensor lives on neither cpu nor the indexed tensor's device."""
    if index.type == "cpu" or index == indexed:
        return None
    return f"indices should be either on cpu or on the same device as the indexed tensor ({indexed})"


def numpy_error(dev: torch.device) -> str | None:
    if dev.type == "cpu":
        return None
    return (
        f"can't convert {dev} device type tensor to numpy. Use Tensor.cpu() to copy the tensor to host memory first."
    )
