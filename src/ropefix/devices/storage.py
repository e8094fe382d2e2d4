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


def device_of(t: torch.Tensor) -> torch.device:
    """The virtual device of ``t``, else its real one. Call with torch functions disabled."""
    try:
        dev = getattr(t.untyped_storage(), ATTR, None)
    except (RuntimeError, NotImplementedError, TypeError):  # sparse, nested: no plain storage
        return t.device
    if dev is None:
        return CPU if t.is_cpu else t.device
    return dev


def place(t: torch.Tensor, dev: torch.device) -> None:
    """Put ``t``'s storage on ``dev`` (a fresh copy, never a storage another tensor relies on)."""
    setattr(t.untyped_storage(), ATTR, dev)


def tag(out: Any, dev: torch.device) -> None:
    """Put fresh outputs (storages without a device) on ``dev``; views already carry theirs."""
    if isinstance(out, torch.Tensor):
        st = out.untyped_storage()
        if getattr(st, ATTR, None) is None:
            setattr(st, ATTR, dev)
    elif isinstance(out, SEQ):
        for o in out:
            if isinstance(o, torch.Tensor):
                st = o.untyped_storage()
                if getattr(st, ATTR, None) is None:
                    setattr(st, ATTR, dev)
