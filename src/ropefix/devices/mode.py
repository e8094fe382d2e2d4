"""The torch function mode that gives tensors a virtual device.

A virtual device is a property of a tensor's *storage*, as on real hardware: the canonical
``torch.device`` object is kept as an attribute of the (preserved) ``UntypedStorage`` Python
object. Views, ``detach``, ``nn.Parameter(t)``, ``param.data = t`` and ``set_`` therefore carry
the device without any bookkeeping, and a storage without the attribute is a real one (cpu, or
meta for accelerate's empty weights).

Every torch call made inside the simulation passes through ``DeviceMode.__torch_function__``
(torch pops the mode while the handler runs, so the real call inside does not recurse). The
hot path is the generic op: collect tensor operands, compare their devices by identity (device
objects are canonical), call the real CPU kernel, tag fresh outputs. Only a mismatch takes the
slow path that works out PyTorch's exact error text (``ropefix.devices.rules``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from ropefix.devices import rules
from ropefix.devices.cuda_api import CudaFacade

ATTR = "_ropefix_device"
CPU = rules.CPU
Tensor = torch.Tensor
_SEQ = (list, tuple)
_MISSING = object()
_SUFFIX = re.compile(r",\s+(?:dtype|grad_fn|requires_grad)=")

# Calls that only read metadata or host values: no device rule applies and nothing needs a tag.
_PASSTHROUGH = [
    Tensor.shape.__get__,
    Tensor.dtype.__get__,
    Tensor.ndim.__get__,
    Tensor.layout.__get__,
    Tensor.requires_grad.__get__,
    Tensor.requires_grad.__set__,
    Tensor.is_leaf.__get__,
    Tensor.grad_fn.__get__,
    Tensor._version.__get__,
    Tensor.is_meta.__get__,
    Tensor.is_sparse.__get__,
    Tensor.is_quantized.__get__,
    Tensor.is_nested.__get__,
    Tensor.size,
    Tensor.dim,
    Tensor.numel,
    Tensor.stride,
    Tensor.is_contiguous,
    Tensor.is_floating_point,
    Tensor.is_complex,
    Tensor.element_size,
    Tensor.data_ptr,
    Tensor.storage_offset,
    Tensor.untyped_storage,
    Tensor.__len__,
    Tensor.__hash__,
    Tensor.__bool__,
    Tensor.__index__,
    Tensor.__int__,
    Tensor.__float__,
    Tensor.item,
    Tensor.tolist,
    Tensor.nelement,
    Tensor.requires_grad_,
    Tensor.is_inference,
    Tensor.__format__,
    Tensor.record_stream,
    Tensor.is_pinned,
    Tensor.register_hook,
    torch._has_compatible_shallow_copy_type,
    torch.is_floating_point,
    torch.is_complex,
    torch.numel,
    torch.is_same_size,
    Tensor.is_same_size,
]


_CANONICAL: dict[tuple[str, int], torch.device] = {}


def canonical(kind: str, index: int) -> torch.device:
    """One device object per device for the whole process, shared by every simulation.

    The hot path compares devices by identity; tensors tagged in one simulation and used in
    the next (a model dispatched once, run many times) must still compare equal that way.
    """
    return _CANONICAL.setdefault((kind, index), torch.device(kind, index))


def _inplace(func: Callable[..., Any]) -> bool:
    name = getattr(func, "__name__", "")
    return (name.endswith("_") and not name.startswith("__")) or name in {
        "__iadd__",
        "__isub__",
        "__imul__",
        "__itruediv__",
        "__ifloordiv__",
        "__imod__",
        "__ipow__",
        "__iand__",
        "__ior__",
        "__ixor__",
        "__ilshift__",
        "__irshift__",
        "__imatmul__",
    }


class DeviceMode(TorchFunctionMode):
    def __init__(self, kind: str, n: int, facade: CudaFacade) -> None:
        super().__init__()
        self.kind = kind
        self.facade = facade
        self.devices = [canonical(kind, i) for i in range(n)]
        self.wrapper = f"wrapper_{kind.upper()}_"
        self._norm: dict[Any, torch.device] = {}
        self._inplace: dict[Any, bool] = {}
        self._table: dict[Any, Any] = dict.fromkeys(_PASSTHROUGH, None)
        self._table.update(self._special())

    # ---- devices ---------------------------------------------------------------------------

    def device_of(self, t: Tensor) -> torch.device:
        try:
            dev = getattr(t.untyped_storage(), ATTR, None)
        except (RuntimeError, NotImplementedError, TypeError):  # sparse, nested: no plain storage
            return t.device
        if dev is None:
            return CPU if t.is_cpu else t.device
        return dev

    def norm(self, spec: Any) -> torch.device:
        """The canonical device object for a device spec (str, int, torch.device)."""
        dev = self._norm.get(spec)
        if dev is not None:
            return dev
        if _is_int(spec):
            dev = torch.device(self.kind, spec)
        else:
            dev = torch.device(spec)
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

    def _real(self, dev: torch.device) -> torch.device:
        """Where a tensor on ``dev`` really lives."""
        return CPU if dev.type == self.kind else dev

    @staticmethod
    def _tag(out: Any, dev: torch.device) -> None:
        """Put fresh outputs (storages without a device) on ``dev``; views already carry theirs."""
        if isinstance(out, Tensor):
            st = out.untyped_storage()
            if getattr(st, ATTR, None) is None:
                setattr(st, ATTR, dev)
        elif isinstance(out, _SEQ):
            for o in out:
                if isinstance(o, Tensor):
                    st = o.untyped_storage()
                    if getattr(st, ATTR, None) is None:
                        setattr(st, ATTR, dev)

    # ---- dispatch ----------------------------------------------------------------------------

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        handler = self._table.get(func, _MISSING)
        if handler is None:
            return func(*args, **(kwargs or {}))
        if handler is not _MISSING:
            return handler(func, args, kwargs or {})
        return self._op(func, args, kwargs)

    def _op(self, func: Any, args: tuple, kwargs: dict | None) -> Any:
        # The hot path: written out flat (no helper calls, no list unless a sequence of tensors
        # or a mismatch shows up), since it runs for nearly every op of a model.
        if kwargs:
            if kwargs.get("device") is not None:
                return self._factory(func, args, kwargs)
            operands: Any = (*args, *kwargs.values())
        else:
            kwargs = {}
            operands = args
        common = None
        same = True
        for a in operands:
            if isinstance(a, Tensor):
                try:
                    d = getattr(a.untyped_storage(), ATTR, None)
                except (RuntimeError, NotImplementedError, TypeError):
                    d = a.device
                if d is None:
                    d = CPU if a.is_cpu else a.device
                if common is None:
                    common = d
                elif d is not common:
                    same = False
            elif isinstance(a, _SEQ):
                for e in a:
                    if isinstance(e, Tensor):
                        d = self.device_of(e)
                        if common is None:
                            common = d
                        elif d is not common:
                            same = False
        if same:
            if common is None or common is CPU:
                return func(*args, **kwargs)
            out = func(*args, **kwargs)
            if type(out) is Tensor:  # the usual single result, tagged inline
                st = out.untyped_storage()
                if getattr(st, ATTR, None) is None:
                    setattr(st, ATTR, common)
            else:
                self._tag(out, common)
            return out
        ts = [a for a in operands if isinstance(a, Tensor)]
        for a in operands:
            if isinstance(a, _SEQ):
                ts.extend(e for e in a if isinstance(e, Tensor))
        return self._mixed(func, args, kwargs, ts)

    def _mixed(self, func: Any, args: tuple, kwargs: dict, ts: list[Tensor]) -> Any:
        """Operands on several devices: allowed only for cpu scalars (element-wise rules)."""
        inplace = self._inplace.get(func)
        if inplace is None:
            inplace = self._inplace[func] = _inplace(func)
        outs = kwargs.get("out")
        outs = [outs] if isinstance(outs, Tensor) else list(outs or ())
        ops = [(self.device_of(t), t.dim(), True) for t in outs]
        ops += [(self.device_of(t), t.dim(), inplace and i == 0) for i, t in enumerate(ts) if not _contains(outs, t)]
        msg = rules.elementwise_error(ops)
        if msg:
            raise RuntimeError(msg)
        common = next(d for d, _, _ in ops if d.type != "cpu")
        out = func(*args, **kwargs)
        self._tag(out, common)
        return out

    def _factory(self, func: Any, args: tuple, kwargs: dict) -> Any:
        target = self.norm(kwargs["device"])
        kw = dict(kwargs)
        kw["device"] = self._real(target)
        out = func(*args, **kw)
        if target.type != self.kind:
            return out
        inputs = [a.untyped_storage() for a in args if isinstance(a, Tensor)]
        if isinstance(out, Tensor):
            if any(out.untyped_storage() is s for s in inputs):  # as_tensor handed back its input: copy
                out = out.clone()
            setattr(out.untyped_storage(), ATTR, target)
        else:
            self._tag(out, target)
        return out

    # ---- special calls -------------------------------------------------------------------------

    def _special(self) -> dict[Any, Callable[[Any, tuple, dict], Any]]:
        wrap = self.wrapper

        def checked(method: str, *names: str) -> Callable[[Any, tuple, dict], Any]:
            def handler(func: Any, args: tuple, kwargs: dict) -> Any:
                ts = [a for a in args if isinstance(a, Tensor)] + [a for a in kwargs.values() if isinstance(a, Tensor)]
                return self._checked(func, args, kwargs, method, list(zip(names, ts)))

            return handler

        def cat(func: Any, args: tuple, kwargs: dict) -> Any:
            seq = args[0] if args else kwargs.get("tensors", ())
            return self._checked(func, args, kwargs, wrap + "cat", [("tensors", t) for t in seq])

        def embedding(func: Any, args: tuple, kwargs: dict) -> Any:
            idx = args[0] if args else kwargs["input"]
            weight = args[1] if len(args) > 1 else kwargs["weight"]
            return self._checked(func, args, kwargs, wrap + "_index_select", [("self", weight), ("index", idx)])

        def linear(func: Any, args: tuple, kwargs: dict) -> Any:
            x = args[0] if args else kwargs["input"]
            w = args[1] if len(args) > 1 else kwargs["weight"]
            b = args[2] if len(args) > 2 else kwargs.get("bias")
            if b is None or not isinstance(b, Tensor):
                pairs = [("self", x), ("mat2", w)]
                return self._checked(func, args, kwargs, wrap + "mm", pairs)
            return self._checked(func, args, kwargs, wrap + "addmm", [("self", b), ("mat1", x), ("mat2", w)])

        def matmul(func: Any, args: tuple, kwargs: dict) -> Any:
            a, b = (args + tuple(kwargs.values()))[:2]
            if not (isinstance(a, Tensor) and isinstance(b, Tensor)) or a.dim() < 2 or b.dim() < 2:
                return self._op(func, args, kwargs)
            method = "bmm" if b.dim() >= 3 else "mm"
            return self._checked(func, args, kwargs, wrap + method, [("self", a), ("mat2", b)])

        table: dict[Any, Callable[[Any, tuple, dict], Any]] = {
            Tensor.device.__get__: self._device_get,
            Tensor.is_cuda.__get__: lambda f, a, k: self.device_of(a[0]).type == "cuda",
            Tensor.is_cpu.__get__: lambda f, a, k: self.device_of(a[0]).type == "cpu",
            Tensor.get_device: lambda f, a, k: _index(self.device_of(a[0])),
            torch.device: self._device_ctor,
            torch._C._nn._parse_to: self._parse_to,
            Tensor.to: self._to,
            Tensor.cuda: self._cuda,
            Tensor.cpu: lambda f, a, k: self._move(a[0], CPU, None, False, False, k.get("memory_format")),
            Tensor.type_as: lambda f, a, k: self._move(a[0], self.device_of(a[1]), a[1].dtype, False, False, None),
            Tensor.type: self._type,
            Tensor.numpy: self._numpy,
            Tensor.__array__: self._numpy,
            Tensor.__getitem__: self._getitem,
            Tensor.__setitem__: self._setitem,
            Tensor.__repr__: self._repr,
            Tensor.grad.__get__: self._grad,
            Tensor.pin_memory: lambda f, a, k: a[0].clone(),
            torch.mm: checked(wrap + "mm", "self", "mat2"),
            Tensor.mm: checked(wrap + "mm", "self", "mat2"),
            torch.bmm: checked(wrap + "bmm", "self", "mat2"),
            Tensor.bmm: checked(wrap + "bmm", "self", "mat2"),
            torch.addmm: checked(wrap + "addmm", "self", "mat1", "mat2"),
            Tensor.addmm: checked(wrap + "addmm", "self", "mat1", "mat2"),
            torch.index_select: checked(wrap + "_index_select", "self", "index"),
            Tensor.index_select: checked(wrap + "_index_select", "self", "index"),
            torch.gather: checked(wrap + "gather", "self", "index"),
            Tensor.gather: checked(wrap + "gather", "self", "index"),
            torch.cat: cat,
            torch.concat: cat,
            torch.concatenate: cat,
            torch.stack: cat,
            torch.nn.functional.embedding: embedding,
            torch.nn.functional.linear: linear,
            torch.matmul: matmul,
            Tensor.matmul: matmul,
            Tensor.__matmul__: matmul,
        }
        # No device check at all in PyTorch: cross-device copies, views shaped like another
        # tensor, and assigning .data. The result lives where ``self`` does.
        for f in (
            Tensor.copy_,
            Tensor.expand_as,
            Tensor.view_as,
            Tensor.reshape_as,
            Tensor.new_tensor,
            Tensor.data.__set__,
            Tensor.grad.__set__,
            Tensor.set_,
            torch.broadcast_tensors,
        ):
            table[f] = self._unchecked
        return table

    def _checked(self, func: Any, args: tuple, kwargs: dict, method: str, pairs: list[tuple[str, Tensor]]) -> Any:
        device_of = self.device_of
        devices = [device_of(t) for _, t in pairs]
        common = devices[0] if devices else CPU
        for d in devices:
            if d is not common:  # the slow path only on a mismatch (or devices outside the simulation)
                msg = rules.wrapper_error(method, [(name, dev) for (name, _), dev in zip(pairs, devices)])
                if msg:
                    raise RuntimeError(msg)
                break
        out = func(*args, **kwargs)
        if common.type != "cpu":
            self._tag(out, common)
        return out

    def _unchecked(self, func: Any, args: tuple, kwargs: dict) -> Any:
        if kwargs.get("device") is not None:  # new_tensor(data, device=...)
            return self._factory(func, args, kwargs)
        first = args[0] if args else None
        if isinstance(first, _SEQ):  # broadcast_tensors(a, b) arrives as one list on some paths
            first = first[0] if first else None
        out = func(*args, **kwargs)
        if isinstance(first, Tensor):
            dev = self.device_of(first)
            if dev.type != "cpu":
                self._tag(out, dev)
        return out

    def _to(self, func: Any, args: tuple, kwargs: dict) -> Any:
        if (
            len(args) == 2
            and (not kwargs or (len(kwargs) == 1 and "non_blocking" in kwargs))
            and args[1] is not None
            and not isinstance(args[1], (Tensor, torch.dtype))
        ):
            # the most frequent call, from accelerate's hooks: x.to(device[, non_blocking=...])
            t = args[0]
            target = self.norm(args[1])
            if target is self.device_of(t):
                return t
            return self._move(t, target, None, bool(kwargs.get("non_blocking", False)), False, None)
        t, rest = args[0], args[1:]
        device: Any = None
        dtype: torch.dtype | None = None
        flags: tuple = ()
        if rest:
            first = rest[0]
            if isinstance(first, Tensor):
                device, dtype, flags = self.device_of(first), first.dtype, rest[1:]
            elif isinstance(first, torch.dtype):
                dtype, flags = first, rest[1:]
            else:
                device, flags = first, rest[1:]
                if flags and (flags[0] is None or isinstance(flags[0], torch.dtype)):
                    dtype, flags = flags[0], flags[1:]
        non_blocking = bool(flags[0]) if flags else False
        copy = bool(flags[1]) if len(flags) > 1 else False
        device = kwargs.get("device", device)
        dtype = kwargs.get("dtype", dtype)
        non_blocking = kwargs.get("non_blocking", non_blocking)
        copy = kwargs.get("copy", copy)
        target = self.device_of(t) if device is None else self.norm(device)
        return self._move(t, target, dtype, non_blocking, copy, kwargs.get("memory_format"))

    def _device_get(self, func: Any, args: tuple, kwargs: dict) -> torch.device:
        t = args[0]
        try:
            d = getattr(t.untyped_storage(), ATTR, None)
        except (RuntimeError, NotImplementedError, TypeError):
            return t.device
        return d if d is not None else t.device

    def _device_ctor(self, func: Any, args: tuple, kwargs: dict) -> torch.device:
        # torch.device(0) means "accelerator 0", which torch resolves only where one exists
        if len(args) == 1 and not kwargs and _is_int(args[0]):
            return torch.device(self.kind, args[0])
        return func(*args, **kwargs)

    def _parse_to(self, func: Any, args: tuple, kwargs: dict) -> Any:
        # Module.to(0) parses its arguments first; an int device means accelerator 0 here too
        args = tuple(self._device_ctor(torch.device, (a,), {}) if _is_int(a) else a for a in args)
        if _is_int(kwargs.get("device")):
            kwargs = {**kwargs, "device": torch.device(self.kind, kwargs["device"])}
        return func(*args, **kwargs)

    def _cuda(self, func: Any, args: tuple, kwargs: dict) -> Any:
        device = args[1] if len(args) > 1 else kwargs.get("device")
        target = self.devices[self.facade.current] if device is None else self.norm(device)
        if target.type != self.kind:
            raise RuntimeError(f"Invalid device, must be {self.kind} device")
        return self._move(args[0], target, None, kwargs.get("non_blocking", False), False, kwargs.get("memory_format"))

    def _move(
        self, t: Tensor, target: torch.device, dtype: torch.dtype | None, non_blocking: bool, copy: bool, fmt: Any
    ) -> Tensor:
        current = self.device_of(t)
        moved = target is not current and target != current
        kw: dict[str, Any] = {"device": self._real(target), "non_blocking": non_blocking, "copy": copy or moved}
        if dtype is not None:
            kw["dtype"] = dtype
        if fmt is not None:
            kw["memory_format"] = fmt
        out = Tensor.to(t, **kw)
        if moved:
            if target.type == self.kind:
                setattr(out.untyped_storage(), ATTR, target)
        elif out is not t and current.type == self.kind:
            self._tag(out, current)
        return out

    def _type(self, func: Any, args: tuple, kwargs: dict) -> Any:
        """``x.type()`` names the device (``torch.cuda.FloatTensor``); ``x.type(name)`` may move."""
        t = args[0]
        target = args[1] if len(args) > 1 else kwargs.get("dtype")
        dev = self.device_of(t)
        prefix = f"torch.{self.kind}."
        if target is None:
            name = func(t)
            return f"{prefix}{name[len('torch.') :]}" if dev.type == self.kind else name
        if not isinstance(target, str):
            return self._op(func, args, kwargs)  # a dtype: same device
        on_device = target.startswith(prefix)
        host = func(t, "torch." + target[len(prefix) :] if on_device else target)
        to = (dev if dev.type == self.kind else self.devices[self.facade.current]) if on_device else CPU
        if to is dev and host is t:
            return t
        return self._move(host, to, None, bool(kwargs.get("non_blocking", False)), host is t, None)

    def _numpy(self, func: Any, args: tuple, kwargs: dict) -> Any:
        if not kwargs.get("force"):
            msg = rules.numpy_error(self.device_of(args[0]))
            if msg:
                raise TypeError(msg)
        return func(*args, **kwargs)

    def _getitem(self, func: Any, args: tuple, kwargs: dict) -> Any:
        t, index = args[0], args[1]
        dev = self.device_of(t)
        for i in index if isinstance(index, _SEQ) else (index,):
            if isinstance(i, Tensor):
                msg = rules.index_error(dev, self.device_of(i))
                if msg:
                    raise IndexError(msg)
        out = func(*args, **kwargs)
        if dev.type != "cpu":
            self._tag(out, dev)
        return out

    def _setitem(self, func: Any, args: tuple, kwargs: dict) -> Any:
        t, index, value = args[0], args[1], args[2]
        dev = self.device_of(t)
        advanced = False
        for i in index if isinstance(index, _SEQ) else (index,):
            if isinstance(i, Tensor):
                advanced = True
                msg = rules.index_error(dev, self.device_of(i))
                if msg:
                    raise IndexError(msg)
        # basic indexing then copy_ crosses devices freely; index_put_ moves 0-dim values only
        if advanced and isinstance(value, Tensor) and value.dim() > 0:
            msg = rules.elementwise_error([(dev, t.dim(), True), (self.device_of(value), value.dim(), False)])
            if msg:
                raise RuntimeError(msg)
        return func(*args, **kwargs)

    def _repr(self, func: Any, args: tuple, kwargs: dict) -> str:
        text = func(*args, **kwargs)
        dev = self.device_of(args[0])
        if dev.type == "cpu" or not text.endswith(")"):
            return text
        # torch writes device= first among the suffixes (dtype, grad_fn, requires_grad)
        found = _SUFFIX.search(text)
        cut = found.start() if found else len(text) - 1
        return f"{text[:cut]}, device='{dev}'{text[cut:]}"

    def _grad(self, func: Any, args: tuple, kwargs: dict) -> Any:
        # autograd makes gradients in C++, out of our sight: they belong where their tensor is
        grad = func(*args, **kwargs)
        if grad is not None:
            dev = self.device_of(args[0])
            if dev.type != "cpu":
                self._tag(grad, dev)
        return grad


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _index(dev: torch.device) -> int:
    return -1 if dev.type == "cpu" else (dev.index if dev.index is not None else 0)


def _contains(seq: list[Tensor], t: Tensor) -> bool:
    return any(s is t for s in seq)
