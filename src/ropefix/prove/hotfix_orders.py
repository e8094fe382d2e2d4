"""The orders in which a user meets the hotfix and accelerate, as one placement function.

A split model reaches its devices through ``dispatch_model`` or ``from_pretrained(device_map=...)``
and the hotfix can come before or after: the four orders the hotfix supports are

- ``before-dispatch``: ``hotfix(model)``, then ``dispatch_model(model, device_map)``;
- ``after-dispatch``: ``dispatch_model`` first, ``hotfix(model)`` on the dispatched model;
- ``after-load``: ``from_pretrained(path, device_map=...)``, then ``hotfix(model)``;
- ``class-before-load``: ``hotfix_class(cls)``, then ``from_pretrained(path, device_map=...)``.

``place`` runs one of them (or none, the unpatched arm) inside a device context the caller opened
(``ropefix.devices.simulate`` or real devices). The tests and the release probe place models
through it, and so can the regression suite's hotfix arm, so each proves the same orders.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ropefix import hotfix as hf
from ropefix.errors import RopefixError

ORDERS = ("before-dispatch", "after-dispatch", "after-load", "class-before-load")
LOADED = ("after-load", "class-before-load")  # orders that need a saved checkpoint


@dataclass(frozen=True)
class Checkpoint:
    """A model saved with ``save_pretrained``, and the class that loads it."""

    cls: type
    path: Path


def save(model: Any, folder: Path) -> Checkpoint:
    """Save ``model`` (weights and config) for the loading orders."""
    model.save_pretrained(folder)
    return Checkpoint(type(model), Path(folder))


def place(
    order: str | None, device_map: dict[str, int], model: Any = None, checkpoint: Checkpoint | None = None
) -> tuple[Any, hf.Hotfix]:
    """The placed model and its hotfix (empty for ``order=None``); ``remove()`` it when done.

    Without ``order`` the model is placed unpatched: dispatched when ``model`` is given, loaded
    from ``checkpoint`` otherwise. ``model`` is dispatched in place; pass a copy to keep the original.
    """
    from accelerate import dispatch_model

    if order is not None and order not in ORDERS:
        raise RopefixError(f"Unknown hotfix order {order!r}. Use one of: {', '.join(ORDERS)}.")
    loading = order in LOADED or (order is None and model is None)
    if loading and checkpoint is None:
        raise RopefixError(
            f"Hotfix order {order!r} loads a saved model with from_pretrained: pass checkpoint=save(model, folder)."
        )
    if not loading and model is None:
        raise RopefixError(f"Hotfix order {order!r} dispatches a model in memory: pass model=.")
    fix = hf.Hotfix()
    if order == "class-before-load":
        fix = hf.hotfix_class(checkpoint.cls)
    if loading:
        try:
            placed = checkpoint.cls.from_pretrained(checkpoint.path, device_map=dict(device_map)).eval()
        except BaseException:
            fix.remove()  # a class guard must not outlive a failed load
            raise
    else:
        if order == "before-dispatch":
            fix = hf.hotfix(model)
        placed = dispatch_model(model, device_map=dict(device_map))
    if order in ("after-dispatch", "after-load"):
        fix = hf.hotfix(placed)
    return placed, fix
