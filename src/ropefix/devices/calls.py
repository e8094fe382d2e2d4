"""The torch calls with behaviour of their own in a simulation, as a mixin of ``DeviceMode``.

Device queries (``.device``, ``.is_cuda``, ``.get_device()``), moves (``.to`` in every form,
``.cuda()``, ``.cpu()``, ``.type(...)``), kernels whose generated wrappers check devices
argument by argument (mm, addmm, bmm, matmul, linear, index_select, embedding, gather, cat,
stack), indexing, ``.numpy()``, ``repr``, gradients, and the CUDA kernels that take dtypes the
CPU's refuse (``histc``, antialiased ``interpolate``: ``kernels``). Metadata reads and views pass
straight through: a view shares its base's storage, where the device is kept.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from ropefix.devices import kernels, rules
from ropefix.devices.storage import ATTR, CPU, SEQ, device_of, tag

if TYPE_CHECKING:
    from ropefix.devices.cuda_api import CudaFacade

Tensor = torch.Tensor
Handler = Callable[[Any, tuple, dict], Any]
_SUFFIX = re.compile(r",\s+(?:dtype|grad_fn|requires_grad)=")

# Calls that only read metadata or host values: no device rule applies and nothing needs a tag.
_PROPERTIES = "shape dtype ndim layout requires_grad is_leaf grad_fn _version is_meta is_sparse is_quantized is_nested"
_METHODS = (
    "size dim numel nelement stride is_contiguous is_floating_point is_complex element_size data_ptr "
    "storage_offset untyped_storage __len__ __hash__ __bool__ __index__ __int__ __float__ item tolist "
    "requires_grad_ is_inference __format__ record_stream is_pinned register_hook is_same_size"
)
PASSTHROUGH = [
    *(getattr(Tensor, p).__get__ for p in _PROPERTIES.split()),
    Tensor.requires_grad.__set__,
    *(getattr(Tensor, m) for m in _METHODS.split()),
    torch._has_compatible_shallow_copy_type,  # asked by Module._apply before it assigns .data
    torch.is_floating_point,
    torch.is_complex,
    torch.numel,
    torch.is_same_size,
]

# Factories: without ``device=`` their result is on the default (cpu) device, whatever device a
# tensor argument is on (``torch.arange(n)`` with a 0-dim cuda ``n`` reads its value as a number).
FACTORIES = [
    getattr(torch, name)
    for name in [
        "arange",
        "range",
        "linspace",
        "logspace",
        "full",
        "zeros",
        "ones",
        "empty",
        "eye",
        "rand",
        "randn",
        "randint",
        "randperm",
        "tril_indices",
        "triu_indices",
        "scalar_tensor",
    ]
]

# Shape calls: ``self`` is their only tensor parameter; sizes, dims and counts are integers, so a
# 0-dim tensor passed there is read as a number (``x.expand(-1, w)`` with a cuda ``w``) and never
# compared with ``self``'s device. Views among them share ``self``'s storage, where the device is
# kept, so they pass straight through (no check, no tag); the others may copy and are tagged.
_VIEWS = [
    "view",
    "view_as",
    "expand",
    "expand_as",
    "transpose",
    "t",
    "permute",
    "select",
    "narrow",
    "unsqueeze",
    "squeeze",
    "split",
    "chunk",
    "unflatten",
    "movedim",
    "unbind",
    "detach",
    "diagonal",
    "swapaxes",
    "as_strided",
]
_SHAPE_COPIES = ["reshape", "repeat", "tile", "flatten", "roll", "new_zeros", "new_ones", "new_empty", "new_full"]


def _methods_and_functions(names: list[str]) -> list[Any]:
    return [getattr(Tensor, m) for m in names] + [getattr(torch, m) for m in names if hasattr(torch, m)]


VIEWS = [*_methods_and_functions(_VIEWS), Tensor.data.__get__, Tensor.T.__get__, Tensor.mT.__get__]

UNCHECKED = [
    *(getattr(Tensor, m) for m in ["copy_", "reshape_as", "new_tensor", "set_"]),
    *_methods_and_functions(_SHAPE_COPIES),
    Tensor.data.__set__,
    Tensor.grad.__set__,
    torch.broadcast_tensors,
]


_SELF_MAT2 = ("self", "mat2")
_SELF_INDEX = ("self", "index")
_ADDMM = ("self", "mat1", "mat2")
# Index parts of basic indexing: the result is a view of the indexed tensor, so where it is.
_BASIC_INDEX = frozenset({int, bool, slice, type(None), type(Ellipsis)})


class Calls:
    if TYPE_CHECKING:  # provided by DeviceMode
        kind: str
        facade: CudaFacade
        devices: list[torch.device]
        wrapper: str
        norm: Callable[[Any], torch.device]
        op: Callable[[Any, tuple, dict | None], Any]
        factory: Handler
        unchecked: Handler
        checked: Callable[[Any, tuple, dict, str, tuple[str, ...] | str, Any], Any]
        move: Callable[..., Tensor]

    def table(self) -> dict[Any, Handler | None]:
        """func -> handler; ``None`` for a plain pass-through."""

        def checked(method: str, *names: str) -> Handler:
            def handler(func: Any, args: tuple, kwargs: dict) -> Any:
                operands = (*args, *kwargs.values()) if kwargs else args
                ts = [a for a in operands if isinstance(a, Tensor)]
                return self.checked(func, args, kwargs, method, names, ts)

            return handler

        table: dict[Any, Handler | None] = dict.fromkeys(PASSTHROUGH + VIEWS, None)
        table.update(
            {
                Tensor.device.__get__: self._device,
                Tensor.is_cuda.__get__: lambda f, a, k: device_of(a[0]).type == "cuda",
                Tensor.is_cpu.__get__: lambda f, a, k: device_of(a[0]).type == "cpu",
                Tensor.get_device: lambda f, a, k: _index(device_of(a[0])),
                torch.device: self._device_ctor,
                torch._C._nn._parse_to: self._parse_to,
                Tensor.to: self._to,
                Tensor.cuda: self._cuda,
                Tensor.cpu: lambda f, a, k: self.move(a[0], CPU, None, False, False, k.get("memory_format")),
                Tensor.type_as: lambda f, a, k: self.move(a[0], device_of(a[1]), a[1].dtype, False, False, None),
                Tensor.type: self._type,
                Tensor.numpy: self._numpy,
                Tensor.__array__: self._numpy,
                Tensor.__getitem__: self._getitem,
                Tensor.__setitem__: self._setitem,
                Tensor.__repr__: self._repr,
                Tensor.grad.__get__: self._grad,
                Tensor.pin_memory: lambda f, a, k: a[0].clone(),  # no pinned memory without CUDA
                torch.mm: checked("mm", "self", "mat2"),
                Tensor.mm: checked("mm", "self", "mat2"),
                torch.bmm: checked("bmm", "self", "mat2"),
                Tensor.bmm: checked("bmm", "self", "mat2"),
                torch.addmm: checked("addmm", "self", "mat1", "mat2"),
                Tensor.addmm: checked("addmm", "self", "mat1", "mat2"),
                torch.index_select: checked("_index_select", "self", "index"),
                Tensor.index_select: checked("_index_select", "self", "index"),
                torch.gather: checked("gather", "self", "index"),
                Tensor.gather: checked("gather", "self", "index"),
                torch.cat: self._cat,
                torch.concat: self._cat,
                torch.concatenate: self._cat,
                torch.stack: self._cat,  # stack is unsqueeze + cat: cat's check and text
                torch.nn.functional.embedding: self._embedding,
                torch.nn.functional.linear: self._linear,
                torch.nn.functional.conv1d: self._conv,
                torch.nn.functional.conv2d: self._conv,
                torch.nn.functional.conv3d: self._conv,
                torch.matmul: self._matmul,
                Tensor.matmul: self._matmul,
                Tensor.__matmul__: self._matmul,
                # CUDA kernels that take dtypes the CPU kernels refuse (kernels.py)
                torch.histc: self._histc,
                Tensor.histc: self._histc,
                torch.nn.functional.interpolate: self._interpolate,
            }
        )
        # No device check at all in PyTorch: cross-device copies, views shaped like another
        # tensor, shape calls, and assigning .data. The result lives where ``self`` does.
        table.update(dict.fromkeys(UNCHECKED, self.unchecked))
        table.update(dict.fromkeys(FACTORIES, self._factory))
        return table

    def _factory(self, func: Any, args: tuple, kwargs: dict) -> Any:
        if kwargs.get("pin_memory"):  # no pinned memory without CUDA (as in ``op``)
            kwargs = {**kwargs, "pin_memory": False}
        if kwargs.get("device") is not None:
            return self.factory(func, args, kwargs)
        if kwargs.get("out") is not None:  # written into ``out``: where ``out`` is
            return self.op(func, args, kwargs)
        return func(*args, **kwargs)

    # ---- device queries ----------------------------------------------------------------------

    def _device(self, func: Any, args: tuple, kwargs: dict) -> torch.device:
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
        args = tuple(torch.device(self.kind, a) if _is_int(a) else a for a in args)
        if _is_int(kwargs.get("device")):
            kwargs = {**kwargs, "device": torch.device(self.kind, kwargs["device"])}
        return func(*args, **kwargs)

    # ---- moves ---------------------------------------------------------------------------------

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
            if target is device_of(t):
                return t
            return self.move(t, target, None, bool(kwargs.get("non_blocking", False)), False, None)
        if len(args) == 2 and not kwargs and isinstance(args[1], torch.dtype):
            # x.to(dtype) (norms upcast and back): never moves; a converted copy stays where x is
            t = args[0]
            out = func(t, args[1])
            if out is not t:
                dev = device_of(t)
                if dev.type == self.kind:
                    tag(out, dev)
            return out
        # to(dtype, ...), to(device=None, dtype=None, ...), to(other, ...); then non_blocking, copy
        t, rest = args[0], args[1:]
        device: Any = None
        dtype: torch.dtype | None = None
        flags: tuple = ()
        if rest:
            first = rest[0]
            if isinstance(first, Tensor):
                device, dtype, flags = device_of(first), first.dtype, rest[1:]
            elif isinstance(first, torch.dtype):
                dtype, flags = first, rest[1:]
            else:
                device, flags = first, rest[1:]
                if flags and (flags[0] is None or isinstance(flags[0], torch.dtype)):
                    dtype, flags = flags[0], flags[1:]
        non_blocking = kwargs.get("non_blocking", bool(flags[0]) if flags else False)
        copy = kwargs.get("copy", bool(flags[1]) if len(flags) > 1 else False)
        device = kwargs.get("device", device)
        dtype = kwargs.get("dtype", dtype)
        target = device_of(t) if device is None else self.norm(device)
        return self.move(t, target, dtype, non_blocking, copy, kwargs.get("memory_format"))

    def _cuda(self, func: Any, args: tuple, kwargs: dict) -> Any:
        device = args[1] if len(args) > 1 else kwargs.get("device")
        target = self.devices[self.facade.current] if device is None else self.norm(device)
        if target.type != self.kind:
            raise RuntimeError(f"Invalid device, must be {self.kind} device")
        return self.move(args[0], target, None, kwargs.get("non_blocking", False), False, kwargs.get("memory_format"))

    def _type(self, func: Any, args: tuple, kwargs: dict) -> Any:
        """``x.type()`` names the device (``torch.cuda.FloatTensor``); ``x.type(name)`` may move."""
        t = args[0]
        target = args[1] if len(args) > 1 else kwargs.get("dtype")
        dev = device_of(t)
        prefix = f"torch.{self.kind}."
        if target is None:
            name = func(t)
            return f"{prefix}{name[len('torch.') :]}" if dev.type == self.kind else name
        if not isinstance(target, str):
            return self.op(func, args, kwargs)  # a dtype: same device
        on_device = target.startswith(prefix)
        host = func(t, "torch." + target[len(prefix) :] if on_device else target)
        to = (dev if dev.type == self.kind else self.devices[self.facade.current]) if on_device else CPU
        if to is dev and host is t:
            return t
        return self.move(host, to, None, bool(kwargs.get("non_blocking", False)), host is t, None)

    # ---- kernels with per-argument device checks ----------------------------------------------

    def _cat(self, func: Any, args: tuple, kwargs: dict) -> Any:
        seq = args[0] if args else kwargs.get("tensors", ())
        return self.checked(func, args, kwargs, "cat", "tensors", seq)

    def _embedding(self, func: Any, args: tuple, kwargs: dict) -> Any:
        # embedding is index_select(weight, 0, input) on accelerators
        idx = args[0] if args else kwargs["input"]
        weight = args[1] if len(args) > 1 else kwargs["weight"]
        return self.checked(func, args, kwargs, "_index_select", _SELF_INDEX, (weight, idx))

    def _linear(self, func: Any, args: tuple, kwargs: dict) -> Any:
        # with a bias linear is addmm(bias, input, weight.t()); without one, a matmul -> mm
        x = args[0] if args else kwargs["input"]
        w = args[1] if len(args) > 1 else kwargs["weight"]
        b = args[2] if len(args) > 2 else kwargs.get("bias")
        if not isinstance(b, Tensor):
            return self.checked(func, args, kwargs, "mm", _SELF_MAT2, (x, w))
        return self.checked(func, args, kwargs, "addmm", _ADDMM, (b, x, w))

    def _matmul(self, func: Any, args: tuple, kwargs: dict) -> Any:
        a, b = (*args, *kwargs.values())[:2]
        if not (isinstance(a, Tensor) and isinstance(b, Tensor)) or a.dim() < 2 or b.dim() < 2:
            return self.op(func, args, kwargs)  # dot / mv: element-wise rule, approximate text
        method = "bmm" if b.dim() >= 3 else "mm"
        return self.checked(func, args, kwargs, method, _SELF_MAT2, (a, b))

    def _conv(self, func: Any, args: tuple, kwargs: dict) -> Any:
        # convolutions compare tensor *types* (backend and dtype) before any device check
        x = args[0] if args else kwargs["input"]
        w = args[1] if len(args) > 1 else kwargs["weight"]
        b = args[2] if len(args) > 2 else kwargs.get("bias")
        dx, dw = device_of(x), device_of(w)
        db = device_of(b) if isinstance(b, Tensor) else dx
        if dx.type != dw.type or dx.type != db.type:
            other, name, od = (w, "weight", dw) if dx.type != dw.type else (b, "bias", db)
            tail = " or input should be a MKLDNN tensor and weight is a dense tensor" if dx.type == "cpu" else ""
            raise RuntimeError(
                f"Input type ({self._type_name(x, dx)}) and {name} type ({self._type_name(other, od)}) "
                f"should be the same{tail}"
            )
        return self.op(func, args, kwargs)  # same backend, other index: the generic rule and text

    def _type_name(self, t: Tensor, dev: torch.device) -> str:
        name = Tensor.type(t)  # the real (cpu) name: torch.FloatTensor
        return f"torch.{self.kind}.{name[len('torch.') :]}" if dev.type == self.kind else name

    # ---- CUDA kernels with dtypes the CPU lacks ------------------------------------------------

    def _histc(self, func: Any, args: tuple, kwargs: dict) -> Any:
        t = args[0] if args else kwargs["input"]
        dev = device_of(t)
        if dev.type != self.kind or not kernels.histc_differs(t):
            return self.op(func, args, kwargs)  # the CPU's kernel: plain cpu tensors, floating types
        params = dict(zip(("bins", "min", "max"), args[1:]))
        params.update((k, v) for k, v in kwargs.items() if k in ("bins", "min", "max"))
        out = kwargs.get("out")
        if out is not None:
            msg = rules.elementwise_error([(device_of(out), out.dim(), True), (dev, t.dim(), False)])
            if msg:
                raise RuntimeError(msg)
        result = kernels.histc(t, **params)
        if out is None:
            tag(result, dev)
            return result
        out.resize_(result.shape)  # the CUDA kernel's out= variant: computed, then copied into out
        return out.copy_(result)

    def _interpolate(self, func: Any, args: tuple, kwargs: dict) -> Any:
        t = args[0] if args else kwargs.get("input")
        mode = args[3] if len(args) > 3 else kwargs.get("mode", "nearest")
        antialias = args[6] if len(args) > 6 else kwargs.get("antialias", False)
        if isinstance(t, Tensor) and kernels.interpolate_differs(t, mode, antialias):
            dev = device_of(t)
            if dev.type == self.kind:
                rest = {k: v for k, v in kwargs.items() if k != "input"}
                out = kernels.interpolate(func, t, args[1:], rest)
                tag(out, dev)
                return out
        return self.op(func, args, kwargs)

    # ---- indexing, host values, display, gradients ---------------------------------------------

    def _getitem(self, func: Any, args: tuple, kwargs: dict) -> Any:
        t, index = args[0], args[1]
        # basic indexing (ints, slices, None, ...) gives a view: no index tensor to check, nothing to tag
        kind = type(index)
        if kind is tuple:
            for i in index:
                if type(i) not in _BASIC_INDEX:
                    break
            else:
                return func(t, index)
        elif kind in _BASIC_INDEX:
            return func(t, index)
        dev = device_of(t)
        for i in index if isinstance(index, SEQ) else (index,):
            if isinstance(i, Tensor):
                msg = rules.index_error(dev, device_of(i))
                if msg:
                    raise IndexError(msg)
        out = func(*args, **kwargs)
        if dev.type != "cpu":
            tag(out, dev)
        return out

    def _setitem(self, func: Any, args: tuple, kwargs: dict) -> Any:
        t, index, value = args[0], args[1], args[2]
        dev = device_of(t)
        advanced = False
        for i in index if isinstance(index, SEQ) else (index,):
            if isinstance(i, Tensor):
                advanced = True
                msg = rules.index_error(dev, device_of(i))
                if msg:
                    raise IndexError(msg)
        # basic indexing then copy_ crosses devices freely; index_put_ moves 0-dim values only
        if advanced and isinstance(value, Tensor) and value.dim() > 0:
            msg = rules.elementwise_error([(dev, t.dim(), True), (device_of(value), value.dim(), False)])
            if msg:
                raise RuntimeError(msg)
        return func(*args, **kwargs)

    def _numpy(self, func: Any, args: tuple, kwargs: dict) -> Any:
        if not kwargs.get("force"):
            msg = rules.numpy_error(device_of(args[0]))
            if msg:
                raise TypeError(msg)
        return func(*args, **kwargs)

    def _repr(self, func: Any, args: tuple, kwargs: dict) -> str:
        text = func(*args, **kwargs)
        dev = device_of(args[0])
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
            dev = device_of(args[0])
            if dev.type != "cpu":
                tag(grad, dev)
        return grad


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _index(dev: torch.device) -> int:
    return -1 if dev.type == "cpu" else (dev.index if dev.index is not None else 0)
