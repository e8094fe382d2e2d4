"""Where a tensor is: its virtual device, kept on its storage.

A virtual device is a property of a tensor's *storage*, as on real hardware: the canonical
``torch.device`` object is an attribute of the (preserved) ``UntypedStorage`` Python object.
Views, ``detach``, ``nn.Parameter(t)``, ``param.data = t`` and ``set_`` therefore carry the
device without bookkeeping; a storage without the attribute is a real one (cpu, or meta for
accelerate's empty weights).
"""

from __future__ import annotations

from typing import Any

import torch

ATTR = "_ropefix_device"
CPU = torch.device("cpu")
SEQ = (list, tuple)
_CANONICAL: dict[tuple[str, int], torch.device] = {}


def canonical(kind: str, index: int) -> torch.device:
    """One device object per device for the whole process, shared by every simulation.

    The hot path compares devices by identity; tensors tagged in one simulation and used in
    the next (a model dispatched once, run many times) must still compare equal that way.
    """
    return _CANONICAL.setdefault((kind, index), torch.device(kind, index))


def _inner(t: torch.Tensor) -> torch.Tensor | None:
    """The plain tensor inside functorch wrappers (``torch.vmap``'s batched tensors), if ``t`` is one.

    Wrappers have no storage of their own; the tensor they wrap carries the device.
    """
    functorch = torch._C._functorch
    if not functorch.is_functorch_wrapped_tensor(t):
        return None
    while functorch.is_functorch_wrapped_tensor(t):
        t = functorch.get_unwrapped(t)
    return t


def device_of(t: torch.Tensor) -> torch.device:
    """The virtual device of ``t``, else its real one. Call with torch functions disabled."""
    try:
        dev = getattr(t.untyped_storage(), ATTR, None)
    except (RuntimeError, NotImplementedError, TypeError):  # no plain storage: vmap, sparse, nested
        inner = _inner(t)
        return device_of(inner) if inner is not None else t.device
    if dev is None:
        return CPU if t.is_cpu else t.device
    return dev


def _storage(t: torch.Tensor) -> Any:
    try:
        return t.untyped_storage()
    except (RuntimeError, NotImplementedError, TypeError):
        inner = _inner(t)
        return _storage(inner) if inner is not None else None


def place(t: torch.Tensor, dev: torch.device) -> None:
    """Put ``t``'s storage on ``dev`` (a fresh copy, never a storage another tensor relies on)."""
    st = _storage(t)
    if st is not None:
        setattr(st, ATTR, dev)


def tag(out: Any, dev: torch.device) -> None:
    """Put fresh outputs (storages without a device) on ``dev``; views already carry theirs."""
    for o in out if isinstance(out, SEQ) else (out,):
        if isinstance(o, torch.Tensor):
            st = _storage(o)
            if st is not None and getattr(st, ATTR, None) is None:
                setattr(st, ATTR, dev)
