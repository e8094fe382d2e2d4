"""The runtime fix, for installs whose files must not change.

``hotfix(model)`` registers forward pre-hooks (and wraps ``prepare_inputs_for_generation``) so that
the stored ``rope_deltas`` sit on ``cache_position``'s device before the code adds the two: the
same thing the file fix does, done at call time. ``hotfix_class(cls)`` does it for every instance
of the hazardous classes in ``cls``'s modeling module, by wrapping their methods.

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

# Addition of the prefill deltas to the decoding position (attribute, model.attribute or argument).
HAZARD = re.compile(r"cache_position\[0\]\s*\+\s*(?:self\.)?(?:\w+\.)*rope_deltas\b")
WRAPPED = ("forward", "prepare_inputs_for_generation")
MARK = "__ropefix_hotfix__"
HOLDERS = "__ropefix_holders__"


@dataclass
class Hotfix:
    """What a hotfix changed; ``remove()`` undoes it. Empty when nothing needed fixing."""

    patched: list[str] = field(default_factory=list)  # module paths or class names that got a guard
    _undo: list[Callable[[], None]] = field(default_factory=list, repr=False)

    @property
    def active(self) -> bool:
        return bool(self.patched)

    def remove(self) -> None:
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


def align(root: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Move every stored ``rope_deltas`` under ``root`` (and a ``rope_deltas`` argument) to cache_position's device."""
    import torch

    cache_position = kwargs.get("cache_position")
    if not isinstance(cache_position, torch.Tensor):
        return kwargs  # plain forward / training calls: nothing to align, behave exactly as before
    device = cache_position.device
    for holder in _holders(root):
        deltas = holder.__dict__["rope_deltas"]
        if isinstance(deltas, torch.Tensor) and deltas.device != device:
            holder.rope_deltas = deltas.to(device)
    passed = kwargs.get("rope_deltas")
    if isinstance(passed, torch.Tensor) and passed.device != device:
        kwargs = {**kwargs, "rope_deltas": passed.to(device)}
    return kwargs


def _holders(root: Any) -> list[Any]:
    """The modules under ``root`` that keep deltas; found once per root (a walk per decode step costs 10%)."""
    found = root.__dict__.get(HOLDERS)
    if found is None:
        modules = root.modules() if hasattr(root, "modules") else [root]
        found = [m for m in modules if "rope_deltas" in m.__dict__]
        root.__dict__[HOLDERS] = found
    return found


def hotfix(model: Any) -> Hotfix:
    """Guard one model instance; returns a handle whose ``remove()`` takes the guards off again."""
    fix = Hotfix()
    for name, module in model.named_modules():
        if not is_hazardous(type(module)) or getattr(module, MARK, False):
            continue

        def pre_hook(mod: Any, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
            return args, align(mod, kwargs)

        handle = module.register_forward_pre_hook(pre_hook, with_kwargs=True)
        fix._undo.append(handle.remove)
        original = module.__dict__.get("prepare_inputs_for_generation")
        if hasattr(module, "prepare_inputs_for_generation"):
            module.prepare_inputs_for_generation = _guarded(type(module).prepare_inputs_for_generation, module)
            fix._undo.append(functools.partial(_restore_instance, module, original))
        object.__setattr__(module, MARK, True)
        fix._undo.append(functools.partial(_unmark, module))
        fix.patched.append(name or type(module).__name__)
    return fix


def hotfix_class(cls: type) -> Hotfix:
    """Guard every hazardous class in ``cls``'s module (all their instances, present and future)."""
    module = sys.modules[cls.__module__]
    candidates = {cls, *(v for v in vars(module).values() if isinstance(v, type) and v.__module__ == module.__name__)}
    fix = Hotfix()
    for klass in sorted(candidates, key=lambda k: k.__qualname__):
        if not is_hazardous(klass) or klass.__dict__.get(MARK):
            continue
        for method in WRAPPED:
            if not hasattr(klass, method):
                continue
            had_own = method in klass.__dict__
            original = getattr(klass, method)
            setattr(klass, method, _guarded_method(original))
            fix._undo.append(functools.partial(_restore_class, klass, method, original if had_own else None))
        setattr(klass, MARK, True)
        fix._undo.append(functools.partial(delattr, klass, MARK))
        fix.patched.append(klass.__qualname__)
    return fix


def _guarded(method: Callable[..., Any], instance: Any) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        return method(instance, *args, **align(instance, kwargs))

    return call


def _guarded_method(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        return method(self, *args, **align(self, kwargs))

    return call


def _restore_instance(module: Any, original: Any) -> None:
    if original is None:
        module.__dict__.pop("prepare_inputs_for_generation", None)
    else:
        module.prepare_inputs_for_generation = original


def _restore_class(klass: type, method: str, original: Any) -> None:
    if original is None:
        delattr(klass, method)
    else:
        setattr(klass, method, original)


def _unmark(module: Any) -> None:
    module.__dict__.pop(MARK, None)
    module.__dict__.pop(HOLDERS, None)


class _CallableModule(types.ModuleType):
    """``ropefix.hotfix`` is this module and also ``hotfix()``, whichever import ran first."""

    def __call__(self, model: Any) -> Hotfix:
        return hotfix(model)


sys.modules[__name__].__class__ = _CallableModule
