"""The torch function mode that runs every torch call of a simulation.

Every torch call made inside the simulation passes through ``DeviceMode.__torch_function__``
(torch pops the mode while the handler runs, so the real call inside does not recurse). Calls
with their own behaviour (``.to``, ``.device``, indexing, mm, cat, ...) go to handlers from
``calls``; everything else is a generic op, the hot path: compare the tensor operands' devices
by identity (device objects are canonical), call the real CPU kernel, tag fresh outputs. Only a
mismatch takes the slow path that works out PyTorch's exact error text (``rules``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from ropefix.devices import rules
from ropefix.devices.calls import Calls
from ropefix.devices.cuda_api import CudaFacade
from ropefix.devices.storage import ATTR, CPU, SEQ, canonical, device_of, place, tag

Tensor = torch.Tensor
_MISSING = object()
_INPLACE_DUNDERS = {
    f"__i{op}__"
    for op in [
        "add",
        "sub",
        "mul",
        "truediv",
        "floordiv",
        "mod",
        "pow",
        "and",
        "or",
        "xor",
        "lshift",
        "rshift",
        "matmul",
    ]
}


def _inplace(func: Callable[..., Any]) -> bool:
    name = getattr(func, "__name__", "")
    return (name.endswith("_") and not name.startswith("__")) or name in _INPLACE_DUNDERS


class DeviceMode(Calls, TorchFunctionMode):
    def __init__(self, kind: str, n: int, facade: CudaFacade) -> None:
        super().__init__()
        self.kind = kind
        self.facade = facade
        self.devices = [canonical(kind, i) for i in range(n)]
        self.wrapper = f"wrapper_{kind.upper()}_"
        self._norm: dict[Any, torch.device] = {}
        self._inplace: dict[Any, bool] = {}
        self._table = self.table()

    device_of = staticmethod(device_of)

    def norm(self, spec: Any) -> torch.device:
        """The canonical device object for a device spec (str, int, torch.device)."""
        dev = self._norm.get(spec)
        if dev is not None:
            return dev
        dev = torch.device(self.kind, spec) if _is_int(spec) else torch.device(spec)
        if dev.type == self.kind:
            if dev.index is None:  # "cuda" means the current device, which can change: not cached
                return self.devices[self.facade.current]
            if dev.index >= len(self.devices):
                raise RuntimeError(f"{self.kind.upper()} error: invalid device ordinal")
            dev = self.devices[dev.index]
        elif dev.type == "cpu":
            dev = CPU
        self._norm[spec] = dev
        return dev

    def real(self, dev: torch.device) -> torch.device:
        """Where a tensor on ``dev`` really lives."""
        return CPU if dev.type == self.kind else dev

    # ---- dispatch ----------------------------------------------------------------------------

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        handler = self._table.get(func, _MISSING)
        if handler is _MISSING:  # the most frequent case first
            return self.op(func, args, kwargs)
        if handler is None:
            return func(*args, **kwargs) if kwargs else func(*args)
        return handler(func, args, kwargs or {})

    def handler(self, func: Any) -> Callable[[Any, tuple, dict], Any]:
        """What ``__torch_function__`` does for ``func``, as one callable ``(func, args, kwargs)``."""
        handler = self._table.get(func, _MISSING)
        if handler is _MISSING:
            return self.op
        if handler is None:
            return _passthrough
        return handler

    def alias(self, name: Any, func: Any) -> None:
        """Handle calls that reach the mode as ``name`` (a direct entry) as calls of ``func``.

        Torch passes the function it finds under the name the call was made by, which during a
        simulation is the entry itself. Generic ops need nothing: the entry, called inside the
        handler, calls ``func``.
        """
        handler = self._table.get(func, _MISSING)
        if handler is not _MISSING:
            self._table[name] = handler

    def op(self, func: Any, args: tuple, kwargs: dict | None) -> Any:
        """A generic op: element-wise device rules, results on the common device."""
        # Written out flat (no helper calls, no list unless a sequence of tensors or a mismatch
        # shows up), since it runs for nearly every op of a model.
        if kwargs:
            if kwargs.get("pin_memory"):  # staging buffers for a host-to-device copy: no pinned memory here
                kwargs = {**kwargs, "pin_memory": False}
            if kwargs.get("device") is not None:
                return self.factory(func, args, kwargs)
            operands: Any = (*args, *kwargs.values())
        else:
            operands = args
        common = None
        same = True
        for a in operands:
            if isinstance(a, Tensor):
                try:
                    d = getattr(a.untyped_storage(), ATTR, None)
                    if d is None:
                        d = CPU if a.is_cpu else a.device
                except (RuntimeError, NotImplementedError, TypeError):  # vmap's wrappers and the like
                    d = device_of(a)
                if common is None:
                    common = d
                elif d is not common:
                    same = False
            elif isinstance(a, SEQ):
                for e in a:
                    if isinstance(e, Tensor):
                        d = device_of(e)
                        if common is None:
                            common = d
                        elif d is not common:
                            same = False
        if same:
            out = func(*args, **kwargs) if kwargs else func(*args)
            if common is None or common is CPU:
                return out
            try:  # the usual single plain result, tagged inline
                st = out.untyped_storage()
                if getattr(st, ATTR, None) is None:
                    setattr(st, ATTR, common)
            except (AttributeError, RuntimeError, NotImplementedError, TypeError):
                tag(out, common)  # tuples, lists, wrapped tensors, non-tensors
            return out
        ts = [a for a in operands if isinstance(a, Tensor)]
        for a in operands:
            if isinstance(a, SEQ):  # 0-dim integers in a list are sizes (F.pad's pads, view's shape): numbers
                ts.extend(e for e in a if isinstance(e, Tensor) and not _is_size(e))
        return self._mixed(func, args, kwargs or {}, ts)

    def _mixed(self, func: Any, args: tuple, kwargs: dict, ts: list[Tensor]) -> Any:
        """Operands on several devices: allowed only for cpu scalars (element-wise rules)."""
        inplace = self._inplace.get(func)
        if inplace is None:
            inplace = self._inplace[func] = _inplace(func)
        outs = kwargs.get("out")
        outs = [outs] if isinstance(outs, Tensor) else list(outs or ())
        ops = [(device_of(t), t.dim(), True) for t in outs]
        ops += [(device_of(t), t.dim(), inplace and i == 0) for i, t in enumerate(ts) if not _contains(outs, t)]
        msg = rules.elementwise_error(ops)
        if msg:
            raise RuntimeError(msg)
        common = next((d for d, _, _ in ops if d.type != "cpu"), None)  # None: equal, not identical, cpus
        out = func(*args, **kwargs)
        if common is not None and common.type == self.kind:
            tag(out, common)
        return out

    def factory(self, func: Any, args: tuple, kwargs: dict) -> Any:
        """A call with ``device=``: made on the CPU, placed on the device asked for."""
        target = self.norm(kwargs["device"])
        out = func(*args, **{**kwargs, "device": self.real(target)})
        if target.type != self.kind:
            return out
        if isinstance(out, Tensor):
            inputs = [a.untyped_storage() for a in args if isinstance(a, Tensor)]
            if any(out.untyped_storage() is s for s in inputs):  # as_tensor handed back its input: copy
                out = out.clone()
            place(out, target)
        else:
            tag(out, target)
        return out

    def checked(
        self, func: Any, args: tuple, kwargs: dict, method: str, names: tuple[str, ...] | str, tensors: Any
    ) -> Any:
        """A kernel whose generated wrapper checks devices argument by argument, no exemption.

        ``method`` is the kernel's name (``addmm``; the error names its wrapper, ``wrapper_CUDA_addmm``),
        ``names`` the arguments' names in ``tensors``' order (one name for all: cat's ``tensors``).
        """
        common = None
        for t in tensors:
            try:  # device_of, written out: this runs for every linear, cat and embedding
                d = getattr(t.untyped_storage(), ATTR, None)
                if d is None:
                    d = CPU if t.is_cpu else t.device
            except (RuntimeError, NotImplementedError, TypeError):
                d = device_of(t)
            if common is None:
                common = d
            elif d is not common:  # the slow path only on a mismatch (or devices outside the simulation)
                named = [names] * len(tensors) if isinstance(names, str) else names
                pairs = [(name, device_of(t)) for name, t in zip(named, tensors)]
                msg = rules.wrapper_error(self.wrapper + method, pairs)
                if msg:
                    raise RuntimeError(msg)
                break
        out = func(*args, **kwargs)
        if common is not None and common.type != "cpu":
            try:  # tag, written out for the usual single fresh result
                st = out.untyped_storage()
                if getattr(st, ATTR, None) is None:
                    setattr(st, ATTR, common)
            except (AttributeError, RuntimeError, NotImplementedError, TypeError):
                tag(out, common)
        return out

    def unchecked(self, func: Any, args: tuple, kwargs: dict) -> Any:
        """A call PyTorch never checks (copies, ``*_as`` views, ``.data =``): results stay with ``self``."""
        if kwargs.get("device") is not None:  # new_tensor(data, device=...)
            return self.factory(func, args, kwargs)
        first = args[0] if args else None
        if isinstance(first, SEQ):  # broadcast_tensors(a, b) arrives as one list on some paths
            first = first[0] if first else None
        out = func(*args, **kwargs)
        if isinstance(first, Tensor):
            dev = device_of(first)
            if dev.type != "cpu":
                tag(out, dev)
        return out

    def move(
        self, t: Tensor, target: torch.device, dtype: torch.dtype | None, non_blocking: bool, copy: bool, fmt: Any
    ) -> Tensor:
        """``t`` on ``target`` (and ``dtype``): ``t`` itself when nothing changes, as torch does."""
        current = device_of(t)
        moved = target is not current and target != current
        kw: dict[str, Any] = {"device": self.real(target), "non_blocking": non_blocking, "copy": copy or moved}
        if dtype is not None:
            kw["dtype"] = dtype
        if fmt is not None:
            kw["memory_format"] = fmt
        out = Tensor.to(t, **kw)
        if moved:
            if target.type == self.kind:
                place(out, target)
        elif out is not t and current.type == self.kind:
            tag(out, current)
        return out


def _passthrough(func: Any, args: tuple, kwargs: dict) -> Any:
    return func(*args, **kwargs) if kwargs else func(*args)


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_size(t: Tensor) -> bool:
    return t.dim() == 0 and not (t.is_floating_point() or t.is_complex())


def _contains(seq: list[Tensor], t: Tensor) -> bool:
    return any(s is t for s in seq)
