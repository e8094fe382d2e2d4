"""accelerate's hook moves, answered by the simulator in one step instead of one interception per tensor.

accelerate's ``AlignDevicesHook`` calls ``send_to_device`` on every hooked module's arguments and
keyword arguments before each forward, and on the model's output after it: about eighty
``tensor.to(device)`` calls per forward of a small split model, nearly all of them no-ops. Each
one crossing the torch function mode costs several microseconds (torch builds the call for
Python, pops and pushes the mode), more than the move itself. During a simulation the name
``send_to_device`` in ``accelerate.hooks`` points at ``send``, which walks the same containers
the same way and moves plain tensors with the simulator's own ``move`` while torch functions are
disabled; anything else (tensor subclasses, objects with their own ``.to``, namedtuples, other
mappings) goes to accelerate's function unchanged. The result is what accelerate's function
returns under the simulation: the same tensors where nothing moves, copies on the target where
it does. ``accelerate.utils.send_to_device`` itself, which users call, is not touched.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch

from ropefix.devices.storage import ATTR, CPU, device_of

if TYPE_CHECKING:
    from ropefix.devices.mode import DeviceMode

Tensor = torch.Tensor
_PLAIN = (Tensor, torch.nn.Parameter)  # exact types: a subclass may define its own .to
_ATOMS = (type(None), bool, int, float, str)  # returned as they are (no .to)
# the signature of the function we stand in for (accelerate 0.2x to 1.x); another one is left alone
_SIGNATURE = ["tensor", "device", "non_blocking", "skip_keys"]
# what ``send`` asks torch about the mode stack (private, present from torch 2.1 on): without them, no patch
_TORCH_NEEDS = ("_len_torch_function_stack", "_get_function_stack_at", "_is_torch_function_all_disabled")


def _known(fn: Callable[..., Any]) -> bool:
    try:
        return list(inspect.signature(fn).parameters) == _SIGNATURE
    except (TypeError, ValueError):
        return False


@contextlib.contextmanager
def patched(mode: DeviceMode) -> Iterator[None]:
    """Route accelerate's hook moves through ``mode`` for the duration of the context.

    Only when ``accelerate.hooks`` is already imported (a model is dispatched after ``import
    accelerate``) and its ``send_to_device`` has the known signature; otherwise nothing changes.
    """
    hooks = sys.modules.get("accelerate.hooks")
    original = getattr(hooks, "send_to_device", None)
    if (
        hooks is None
        or original is None
        or not _known(original)
        or not all(hasattr(torch._C, n) for n in _TORCH_NEEDS)
    ):
        yield
        return
    sender = Sender(mode, original)
    hooks.send_to_device = sender.send  # type: ignore[attr-defined]
    try:
        yield
    finally:
        hooks.send_to_device = original  # type: ignore[attr-defined]


class _Foreign(Exception):
    """A leaf ``send`` leaves to accelerate: the whole call goes to accelerate's function instead."""


class Sender:
    """``send_to_device`` for the simulation: containers walked here, plain tensors moved by ``mode``.

    The walk runs with torch functions disabled (one switch per call, not one interception per
    tensor), so reading a tensor's device and moving it cost what the mode's handler costs. It
    builds new containers and moves tensors, nothing else; a leaf it does not handle (a tensor
    subclass, an object with its own ``.to``, a namedtuple, another mapping) abandons it, and the
    call goes to accelerate's own function, with the mode, unchanged.
    """

    def __init__(self, mode: DeviceMode, original: Callable[..., Any]) -> None:
        self.mode = mode
        self.original = original

    def send(self, tensor: Any, device: Any, non_blocking: bool = False, skip_keys: Any = None) -> Any:
        kind = type(tensor)
        if (kind is dict or kind is tuple) and not tensor:  # a module called without keywords: half the calls
            return kind()  # what accelerate builds: a new empty one of the same type
        mode = self.mode
        stack = torch._C._len_torch_function_stack()
        # a thread outside the simulation, torch functions disabled, another mode on top: accelerate's own
        if (
            not stack
            or torch._C._get_function_stack_at(stack - 1) is not mode
            or torch._C._is_torch_function_all_disabled()
        ):
            return self.original(tensor, device, non_blocking=non_blocking, skip_keys=skip_keys)
        try:
            with torch._C.DisableTorchFunction():
                target = mode.norm(device)
                if target.type != mode.kind and target.type != "cpu":  # meta and the like: accelerate's way
                    raise _Foreign
                skip = [skip_keys] if isinstance(skip_keys, str) else (skip_keys or ())
                return self._walk(tensor, target, bool(non_blocking), skip)
        except _Foreign:
            return self.original(tensor, device, non_blocking=non_blocking, skip_keys=skip_keys)

    def _walk(self, obj: Any, target: torch.device, non_blocking: bool, skip: Any) -> Any:
        kind = type(obj)
        if kind in _PLAIN:
            return self._move(obj, target, non_blocking)
        if kind is tuple or kind is list:
            items = [
                self._move(o, target, non_blocking) if type(o) in _PLAIN else self._walk(o, target, non_blocking, skip)
                for o in obj
            ]
            return items if kind is list else tuple(items)
        if kind is dict:
            out = {}
            for k, v in obj.items():
                if k in skip:
                    out[k] = v
                elif type(v) in _PLAIN:
                    out[k] = self._move(v, target, non_blocking)
                else:
                    out[k] = self._walk(v, target, non_blocking, skip)
            return out
        if kind in _ATOMS:
            return obj
        if hasattr(obj, "to") or isinstance(obj, (tuple, list, Mapping)):
            raise _Foreign
        return obj  # accelerate hands back what it cannot move

    def _move(self, t: Tensor, target: torch.device, non_blocking: bool) -> Tensor:
        """``t.to(target, non_blocking=...)`` as the mode's handler answers it; torch functions are off."""
        try:
            current = getattr(t.untyped_storage(), ATTR, None)
            if current is None:
                current = CPU if t.is_cpu else t.device
        except (RuntimeError, NotImplementedError, TypeError):
            current = device_of(t)
        if current is target:
            return t
        return self.mode.move(t, target, None, non_blocking, False, None)
