"""Direct entries: the hottest torch calls reach the simulation's handler without torch's round trip.

Under a torch function mode, torch routes every call through Python: it parses the call, sees
the mode, builds the arguments again for ``__torch_function__``, pops the mode, calls the
handler, and the handler calls the real function, which parses the arguments a second time.
That round trip costs about a microsecond per call before the simulator does anything, more
than many of the calls themselves (``x.shape``, ``x * y`` on small tensors); a model's decode
step makes thousands of them.

During a simulation, the names the hottest calls are looked up by (``torch.Tensor.mul``,
``Tensor.__mul__``, ``Tensor.shape``, ``torch.cat``, ``torch.nn.functional.linear``, ...) point
at an *entry*: when the simulation's mode is the innermost active mode on the calling thread,
the entry pops it and calls the mode's own handler for the function torch would have passed,
exactly as torch does; otherwise it calls the original. The handler is the same code either way
(``DeviceMode`` maps each entry to the original's handler, so a call that still reaches the mode,
with the entry as its function, is handled the same), so results and errors do not change; the
differential tests compare whole generates with and without entries. Operators keep torch's
rule that a ``TypeError`` becomes ``NotImplemented``. Everything is restored when the simulation
ends; code that kept a reference to an original (``from torch import cat``) still goes through
the mode, only more slowly.
"""

from __future__ import annotations

import contextlib
import operator
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

if TYPE_CHECKING:
    from ropefix.devices.mode import DeviceMode

Tensor = torch.Tensor
_C = torch._C
# what an entry asks torch about the mode stack (private, present from torch 2.1 on): without them, no entries
_TORCH_NEEDS = ("_is_torch_function_mode_enabled", "_pop_torch_function_stack", "_push_on_torch_function_stack")

# The calls a tiny model's generate makes most often (benchmarks/simulator.py prints the share
# they serve). Tensor methods: torch passes ``torch.Tensor.<name>`` itself.
METHODS = [
    "mul",
    "add",
    "sub",
    "div",
    "to",
    "view",
    "reshape",
    "transpose",
    "unsqueeze",
    "squeeze",
    "contiguous",
    "pow",
    "mean",
    "neg",
    "float",
    "clone",
    "expand",
    "permute",
    "size",
    "dim",
    "numel",
    "matmul",
    "softmax",
    "flatten",
    "type_as",
    "masked_fill",
    "sum",
    "max",
    "argmax",
    "cumsum",
    "long",
    "int",
    "bool",
]
# Properties: torch passes the getter, ``torch.Tensor.<name>.__get__``.
GETTERS = ("shape", "dtype", "device")
# Module functions: torch passes the function itself.
FUNCTIONS: tuple[tuple[Any, str], ...] = (
    *(
        (torch, name)
        for name in ["cat", "stack", "rsqrt", "cos", "sin", "exp", "where", "arange", "full", "zeros", "ones"]
    ),
    *(
        (F, name)
        for name in ["linear", "embedding", "silu", "gelu", "scaled_dot_product_attention", "softmax", "dropout"]
    ),
)


# Operators: torch passes the method the operator is bound to; a probe call finds which.
BINARY: tuple[tuple[str, Callable[[Tensor], Any]], ...] = (
    ("__mul__", lambda x: operator.mul(x, x)),
    ("__rmul__", lambda x: operator.mul(2, x)),
    ("__add__", lambda x: operator.add(x, x)),
    ("__radd__", lambda x: operator.add(2, x)),
    ("__sub__", lambda x: operator.sub(x, x)),
    ("__truediv__", lambda x: operator.truediv(x, x)),
    ("__matmul__", lambda x: operator.matmul(x, x)),
)
UNARY: tuple[tuple[str, Callable[[Tensor], Any]], ...] = (("__neg__", operator.neg),)


@dataclass(frozen=True)
class Entry:
    """One name pointed at an entry: where it lives, the function torch passes, how to call it."""

    owner: Any  # torch.Tensor or a module
    name: str
    func: Any  # what torch passes to __torch_function__ for a call made through this name
    original: Any  # what the name held (the C method, slot wrapper, getset descriptor, function)
    kind: str = "call"  # "getter": a property; "binary" / "unary": an operator slot
    inherited: bool = True  # the name was TensorBase's (restored by deleting), not the owner's own


class _Recorder(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.funcs: list[Any] = []

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        self.funcs.append(func)
        return func(*args, **(kwargs or {}))


_ENTRIES: list[Entry] | None = None


def entries() -> list[Entry]:
    """The entries this torch supports, found once per process (operators by a probe call each)."""
    global _ENTRIES
    if _ENTRIES is None:
        _ENTRIES = _find()
    return _ENTRIES


def _find() -> list[Entry]:
    if not all(hasattr(_C, name) for name in _TORCH_NEEDS):
        return []
    # torch's tables of overridable functions are built once, from whatever the names hold then:
    # built now, they hold the originals, never an entry (10 ms, once per process)
    for table in ("_get_overridable_functions", "_get_tensor_methods"):
        getattr(torch.overrides, table, lambda: None)()
    found: list[Entry] = []
    own = Tensor.__dict__
    for name in METHODS:
        if _c_level(name):
            method = getattr(Tensor, name)
            found.append(Entry(Tensor, name, method, method, inherited=name not in own))
    for name in GETTERS:
        descriptor = getattr(Tensor, name, None)
        if name not in own and descriptor is not None and hasattr(descriptor, "__get__"):
            found.append(Entry(Tensor, name, descriptor.__get__, descriptor, kind="getter"))
    for module, name in FUNCTIONS:
        function = getattr(module, name, None)
        if function is not None:
            found.append(Entry(module, name, function, function))
    sample = torch.ones(2, 2)
    for kind, operators in (("binary", BINARY), ("unary", UNARY)):
        for name, probe in operators:
            if not _c_level(name):
                continue
            slot = getattr(Tensor, name)
            recorder = _Recorder()
            with recorder:
                probe(sample)
            if len(recorder.funcs) != 1:  # the operator is not one call here: left to torch
                continue
            # the rule the binary entry keeps: the slot turns a TypeError into NotImplemented
            if kind == "binary" and slot(sample, object()) is not NotImplemented:
                continue
            found.append(Entry(Tensor, name, recorder.funcs[0], slot, kind=kind, inherited=name not in own))
    return found


def _c_level(name: str) -> bool:
    """``torch.Tensor.<name>`` is one of torch's C methods (possibly re-exported under another name).

    A Python function torch defines there checks for torch functions itself; it is left alone. So
    are C type slots (``__getitem__``, a wrapper descriptor): assigning and deleting one leaves
    CPython's slot table changed (tensors would pass as sequences afterwards), so names that are
    slots in C are never entries.
    """
    return isinstance(getattr(Tensor, name, None), types.MethodDescriptorType)


@contextlib.contextmanager
def patched(mode: DeviceMode) -> Iterator[list[Entry]]:
    """Point every entry's name at an entry into ``mode`` for the duration of the context."""
    done: list[Entry] = []
    try:
        for entry in entries():
            made = _make(mode, entry)
            mode.alias(made.__get__ if entry.kind == "getter" else made, entry.func)
            setattr(entry.owner, entry.name, made)
            done.append(entry)
        yield list(done)
    finally:
        for entry in reversed(done):
            if entry.owner is Tensor and entry.inherited:  # deleting uncovers TensorBase's again
                delattr(Tensor, entry.name)
            else:
                setattr(entry.owner, entry.name, entry.original)


def _make(mode: DeviceMode, entry: Entry) -> Any:
    func, original = entry.func, entry.original
    handler = mode.handler(func)
    enabled = _C._is_torch_function_mode_enabled
    pop, push = _C._pop_torch_function_stack, _C._push_on_torch_function_stack

    if entry.kind in ("getter", "unary"):  # one tensor, ``self``
        fallback = original.__get__ if entry.kind == "getter" else original

        def one(self: Any) -> Any:
            if enabled():
                top = pop()
                try:
                    if top is mode:
                        return handler(func, (self,), {})
                finally:
                    push(top)
            return fallback(self)

        return property(one, doc=original.__doc__) if entry.kind == "getter" else one

    if entry.kind == "binary":

        def binary(self: Any, other: Any) -> Any:
            if enabled():
                top = pop()
                try:
                    if top is mode:
                        return handler(func, (self, other), {})
                except TypeError:
                    return NotImplemented
                finally:
                    push(top)
            return original(self, other)

        return binary

    def call(*args: Any, **kwargs: Any) -> Any:
        if enabled():
            top = pop()
            try:
                if top is mode:
                    return handler(func, args, kwargs)
            finally:
                push(top)
        return original(*args, **kwargs)

    call.__name__ = getattr(original, "__name__", entry.name)
    call.__doc__ = getattr(original, "__doc__", None)
    return call
