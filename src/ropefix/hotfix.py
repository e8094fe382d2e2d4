"""The runtime fix, for installs whose files must not change.

``hotfix(model)`` guards the ``forward`` (and ``prepare_inputs_for_generation``) of every module
whose code adds ``cache_position[0]`` to stored deltas, so that the stored ``rope_deltas`` sit on
``cache_position``'s device when the code adds the two: what the file fix does, done at call time.
``hotfix_class(cls)`` does it for every instance of the hazardous classes in ``cls``'s module.

Where the guard sits is the point. accelerate's hooks replace ``module.forward`` by a wrapper that
moves the arguments to the module's execution device and then calls ``module._old_forward``; a
forward pre-hook runs before that move and aligns the deltas to where ``cache_position`` *was*.
So the guard wraps the innermost forward, the one that runs after every move:

- a module accelerate already dispatched: its ``_old_forward``;
- a module not (yet) dispatched: an instance-level ``forward``, which a later ``dispatch_model`` or
  ``from_pretrained(device_map=...)`` captures as ``_old_forward`` in its turn;
- ``hotfix_class``: the class's own methods, which accelerate captures (bound) when it dispatches.

``remove()`` puts the originals back wherever it finds its guards; a guard something else still
holds (accelerate captured a class guard in an instance's ``_old_forward``) becomes a pass-through.

A class is hazardous when its source (or an ancestor's) adds ``cache_position[0]`` to stored
deltas; releases that compute positions from the cache length instead (5.x) are left alone, so
the hotfix is a no-op wherever it is not needed, and a no-op on calls without ``cache_position``.
"""

from __future__ import annotations

import functools
import inspect
import re
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Addition of the prefill deltas to the decoding position (attribute, model.attribute or argument), or the
# stored deltas reshaped where prefill left them and added, unmoved, to positions on the next line (5.2.0's
# ernie4_5_vl_moe; from 5.3 the delta is moved first and nothing matches).
HAZARD = re.compile(
    r"cache_position\[0\]\s*\+\s*(?:self\.)?(?:\w+\.)*rope_deltas\b"
    r"|=\s*self\.(?:\w+\.)*rope_deltas\.repeat_interleave\([^\n]*\n[ \t]*\w+\s*=\s*\(?\s*\w+\s*\+\s*delta\b(?!\.to\()"
)
WRAPPED = ("forward", "prepare_inputs_for_generation")
SWITCH = "__ropefix_switch__"  # on a guard: the _Switch that turns it into a pass-through
HOLDERS = "__ropefix_holders__"
HOOKED = "_old_forward"  # where accelerate keeps the forward its hook calls after moving the inputs


@dataclass
class _Switch:
    """Shared by the guards of one hotfix; off once it is removed."""

    on: bool = True


@dataclass
class Hotfix:
    """What a hotfix changed; ``remove()`` undoes it. Empty when nothing needed fixing."""

    patched: list[str] = field(default_factory=list)  # module paths or class names that got a guard
    _undo: list[Callable[[], None]] = field(default_factory=list, repr=False)
    _switch: _Switch = field(default_factory=_Switch, repr=False)

    @property
    def active(self) -> bool:
        return bool(self.patched)

    def remove(self) -> None:
        self._switch.on = False  # guards still held elsewhere pass calls through from now on
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()
        self.patched.clear()


@functools.cache
def is_hazardous(cls: type) -> bool:
    """Whether ``cls`` (or a class it inherits from, outside torch) adds cache_position[0] to stored deltas."""
    for klass in cls.__mro__:
        if klass.__module__.startswith(("torch", "builtins")):
            continue
        try:
            if HAZARD.search(inspect.getsource(klass)):
                return True
        except (OSError, TypeError):  # classes built at run time have no source to read
            continue
    return False


_ON_IDS = re.compile(r"arange\([^()]*device=input_ids\.device")


@functools.cache
def builds_on_input_ids(cls: type) -> bool:
    """Whether ``cls.forward`` builds the positions it shifts by the delta on the input ids' device
    (``torch.arange(seq_length, device=input_ids.device)``: the omni thinkers of 4.52-4.56), rather than
    on the embeddings' (Qwen2-VL and most others)."""
    for klass in cls.__mro__:
        method = klass.__dict__.get("forward")
        if method is None or klass.__module__.startswith(("torch", "builtins")):
            continue
        try:
            return bool(_ON_IDS.search(inspect.getsource(method)))
        except (OSError, TypeError):
            return False
    return False


def align(root: Any, kwargs: dict[str, Any], args: tuple = (), method: str = "forward") -> dict[str, Any]:
    """Put the stored ``rope_deltas`` under ``root`` (and a ``rope_deltas`` argument) and ``cache_position``
    on the device the positions they are added to are built on.

    That device is where the method builds its position ids: the embeddings' (``inputs_embeds``, or the
    input embedding module's weight) in a ``forward``, the input ids' in ``prepare_inputs_for_generation``
    and in a ``forward`` whose code builds them there (``builds_on_input_ids``).
    Aligning to ``cache_position`` alone is not enough where the code shifts positions built on the
    embeddings' device by the delta (4.45-4.48: ``position_ids.add(delta)``). Unsplit models have one
    device and nothing moves; calls without ``cache_position`` are left exactly as they were.
    """
    import torch

    cache_position = kwargs.get("cache_position")
    if not isinstance(cache_position, torch.Tensor):
        return kwargs  # plain forward / training calls: nothing to align, behave exactly as before
    device = _positions_device(root, args, kwargs, method) or cache_position.device
    if cache_position.device != device:
        kwargs = {**kwargs, "cache_position": cache_position.to(device)}
    for holder in _holders(root):
        deltas = holder.__dict__["rope_deltas"]
        if isinstance(deltas, torch.Tensor) and deltas.device != device:
            holder.rope_deltas = deltas.to(device)
    passed = kwargs.get("rope_deltas")
    if isinstance(passed, torch.Tensor) and passed.device != device:
        kwargs = {**kwargs, "rope_deltas": passed.to(device)}
    return kwargs


def _positions_device(root: Any, args: tuple, kwargs: dict[str, Any], method: str) -> Any:
    """The device this call builds its position ids on, or None when it cannot tell."""
    import torch

    embeds = kwargs.get("inputs_embeds")
    ids = args[0] if args else kwargs.get("input_ids")
    if method == "prepare_inputs_for_generation":
        if isinstance(ids, torch.Tensor) and ids.numel():
            return ids.device
        return embeds.device if isinstance(embeds, torch.Tensor) else None
    if isinstance(ids, torch.Tensor) and ids.numel() and builds_on_input_ids(type(root)):
        return ids.device
    if isinstance(embeds, torch.Tensor):
        return embeds.device
    get = getattr(root, "get_input_embeddings", None)
    if isinstance(ids, torch.Tensor) and get is not None:
        try:
            weight = getattr(get(), "weight", None)
        except (NotImplementedError, AttributeError):
            return None
        if isinstance(weight, torch.Tensor) and weight.device.type != "meta":
            return weight.device
    return None


def _holders(root: Any) -> list[Any]:
    """The modules under ``root`` that keep deltas; found once per root (a walk per decode step costs 10%)."""
    found = root.__dict__.get(HOLDERS)
    if found is None:
        modules = root.modules() if hasattr(root, "modules") else [root]
        found = [m for m in modules if "rope_deltas" in m.__dict__]
        root.__dict__[HOLDERS] = found
    return found


class Guard:
    """Stands in for one instance's method: aligns the deltas, then calls the method it replaced.

    An object rather than a closure so that ``copy.deepcopy(model)`` rebinds it to the copy
    (a function is copied by reference and would keep calling the original model). Its own fields
    are slots: accelerate copies a wrapped forward's ``__dict__`` onto its wrapper, and they stay out.
    """

    __slots__ = ("inner", "root", "method", SWITCH, "__dict__")

    def __init__(self, inner: Callable[..., Any], root: Any, switch: _Switch, method: str = "forward") -> None:
        functools.update_wrapper(self, inner)  # name, doc and __wrapped__: inspect.signature sees the original
        self.inner = inner
        self.root = root
        self.method = method
        self.__ropefix_switch__ = switch

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.__ropefix_switch__.on:
            kwargs = align(self.root, kwargs, args, self.method)
        return self.inner(*args, **kwargs)


def hotfix(model: Any) -> Hotfix:
    """Guard one model instance; returns a handle whose ``remove()`` takes the guards off again.

    Safe in any order with accelerate: before ``dispatch_model``, after it, or on a model that
    ``from_pretrained(..., device_map=...)`` loaded. Calling it again adds nothing.
    """
    fix = Hotfix()
    for name, module in model.named_modules():
        if not is_hazardous(type(module)) or _is_guarded(_innermost_forward(module)):
            continue
        fix._undo.append(_guard_instance(module, _forward_slot(module), fix._switch))
        if hasattr(module, "prepare_inputs_for_generation"):  # generate never goes through accelerate's hooks
            fix._undo.append(_guard_instance(module, "prepare_inputs_for_generation", fix._switch))
        fix._undo.append(functools.partial(_forget_holders, module))
        fix.patched.append(name or type(module).__name__)
    return fix


def hotfix_class(cls: type) -> Hotfix:
    """Guard every hazardous class in ``cls``'s module (all their instances, present and future).

    Apply it before the model is loaded or dispatched: accelerate captures the (guarded) method
    when it dispatches. A model dispatched before this call keeps the method it captured; guard
    that one with ``hotfix(model)``.
    """
    module = sys.modules[cls.__module__]
    candidates = {cls, *(v for v in vars(module).values() if isinstance(v, type) and v.__module__ == module.__name__)}
    fix = Hotfix()
    for klass in sorted(candidates, key=lambda k: k.__qualname__):
        if not is_hazardous(klass) or _is_guarded(klass.__dict__.get("forward")):
            continue
        for method in WRAPPED:
            if not hasattr(klass, method):
                continue
            had_own = method in klass.__dict__
            original = getattr(klass, method)
            setattr(klass, method, _guarded_method(original, fix._switch))
            fix._undo.append(functools.partial(_restore_class, klass, method, original if had_own else None))
        fix.patched.append(klass.__qualname__)
    return fix


def _forward_slot(module: Any) -> str:
    """Where the forward that runs after every device move is kept on this instance."""
    return HOOKED if HOOKED in module.__dict__ and hasattr(module, "_hf_hook") else "forward"


def _innermost_forward(module: Any) -> Any:
    return getattr(module, _forward_slot(module), None)


def _is_guarded(method: Any) -> bool:
    """Whether ``method`` is a live guard (a bound method reads the attribute of its function)."""
    switch = getattr(method, SWITCH, None)
    return isinstance(switch, _Switch) and switch.on


def _guard_instance(module: Any, slot: str, switch: _Switch) -> Callable[[], None]:
    """Put a guard in ``module.<slot>``; returns the undo."""
    had_own = slot in module.__dict__
    method = "prepare_inputs_for_generation" if slot == "prepare_inputs_for_generation" else "forward"
    guard = Guard(getattr(module, slot), module, switch, method)
    module.__dict__[slot] = guard  # plain attribute: nn.Module keeps functions in __dict__ too
    return functools.partial(_unguard_instance, module, guard, had_own)


def _unguard_instance(module: Any, guard: Guard, had_own: bool) -> None:
    """Put back what ``guard`` replaced, in whichever slot it sits now.

    accelerate moves an instance-level forward around: ``dispatch_model`` captures it as
    ``_old_forward``, ``remove_hook_from_module`` puts ``_old_forward`` back as ``forward``.
    """
    for slot in ("forward", HOOKED, "prepare_inputs_for_generation"):
        if module.__dict__.get(slot) is not guard:
            continue  # not here, or replaced by someone else since: the switch makes it a pass-through
        if slot == HOOKED or had_own:
            module.__dict__[slot] = guard.inner
        else:  # the class's method showed through before the guard: let it show through again
            del module.__dict__[slot]


def _guarded_method(method: Callable[..., Any], switch: _Switch) -> Callable[..., Any]:
    name = "prepare_inputs_for_generation" if method.__name__ == "prepare_inputs_for_generation" else "forward"

    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        if switch.on:
            kwargs = align(self, kwargs, args, name)
        return method(self, *args, **kwargs)

    setattr(call, SWITCH, switch)
    return call


def _restore_class(klass: type, method: str, original: Any) -> None:
    if original is None:
        delattr(klass, method)
    else:
        setattr(klass, method, original)


def _forget_holders(module: Any) -> None:
    module.__dict__.pop(HOLDERS, None)


class _CallableModule(types.ModuleType):
    """``ropefix.hotfix`` is this module and also ``hotfix()``, whichever import ran first."""

    def __call__(self, model: Any) -> Hotfix:
        return hotfix(model)


sys.modules[__name__].__class__ = _CallableModule
