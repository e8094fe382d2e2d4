"""The orders in which a user meets the hotfix and accelerate, on top of ``layouts.place``.

A split model reaches its devices through ``dispatch_model`` or ``from_pretrained(device_map=...)``
(a layout's ``loader``) and the hotfix can come before or after: the orders the hotfix supports are

- ``before-dispatch``: ``hotfix(model)``, then ``dispatch_model(model, device_map)``;
- ``after-dispatch``: ``dispatch_model`` first, ``hotfix(model)`` on the dispatched model;
- ``after-load``: ``from_pretrained(path, device_map=...)``, then ``hotfix(model)``;
- ``class-before-load``: ``hotfix_class(cls)``, then either loader.

``place(order, tiny, layout)`` places as ``layouts.place`` does (same checks, same ``NotPlaceable``)
with the hotfix in that order; ``orders_for(layout)`` are the orders that apply to the layout's
loader. The tests, the release probe and the regression suite's hotfix arm place through it.
"""

from __future__ import annotations

from typing import Any

from ropefix import hotfix as hf
from ropefix.errors import RopefixError
from ropefix.prove import layouts

ORDERS = ("before-dispatch", "after-dispatch", "after-load", "class-before-load")
BY_LOADER = {
    "dispatch": ("before-dispatch", "after-dispatch", "class-before-load"),
    "from_pretrained": ("after-load", "class-before-load"),
}


def orders_for(layout: layouts.Layout) -> tuple[str, ...]:
    """The hotfix orders a user of this layout's loader can write."""
    return BY_LOADER.get(layout.loader, ())


def place(order: str, tiny: Any, layout: layouts.Layout) -> tuple[Any, hf.Hotfix]:
    """The placed model and its hotfix; ``remove()`` the hotfix when done (``hotfix_class`` is global).

    Call it inside ``ropefix.devices.simulate(layout.n_devices)``, as ``layouts.place``.
    """
    if order not in orders_for(layout):
        raise RopefixError(
            f"Hotfix order {order!r} does not apply to a layout loaded with {layout.loader!r}. "
            f"Use one of: {', '.join(orders_for(layout)) or 'none'} (ropefix.prove.hotfix_orders.orders_for)."
        )
    base = getattr(tiny, "model", tiny)
    fix = hf.hotfix_class(type(base)) if order == "class-before-load" else hf.Hotfix()
    made: list[hf.Hotfix] = []
    before = (lambda model: made.append(hf.hotfix(model))) if order == "before-dispatch" else None
    try:
        model = layouts.place(tiny, layout, before_dispatch=before)
    except BaseException:
        fix.remove()  # a class guard must not outlive a failed placement
        raise
    if made:
        fix = made[0]
    elif order in ("after-dispatch", "after-load"):
        fix = hf.hotfix(model)
    return model, fix
