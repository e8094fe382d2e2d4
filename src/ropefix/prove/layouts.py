"""Device maps for a model, as users get them: pure functions over module names, plus hypothesis strategies.

A model is cut into *units* (the pieces accelerate's ``device_map`` assigns): each decoder layer,
the embeddings, the final norm and rotary tables, the vision (and audio) towers, ``lm_head`` and any
leftover top-level piece. Layout kinds:

- ``contiguous``: units in module order, split into runs on increasing devices (accelerate's auto map);
- ``vision-apart``: the vision tower on its own device, the language model split contiguously;
- ``ends-apart``: embeddings and ``lm_head`` on devices other than the decoder layers around them;
- ``scattered``: any device for any unit (hand-written maps).

Inputs may sit on ``cpu`` or on any device, as callers pass them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

KINDS = ("contiguous", "vision-apart", "ends-apart", "scattered")
TOWER_WORDS = ("visual", "vision_tower", "vision_model", "audio_tower", "audio_model")


@dataclass(frozen=True)
class Layout:
    kind: str
    device_map: dict[str, int]  # unit -> accelerator index
    input_device: str  # "cpu" or "cuda:i"
    n_devices: int = 2

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "n_devices": self.n_devices,
            "input_device": self.input_device,
            "device_map": {k: f"cuda:{v}" for k, v in self.device_map.items()},
        }

    @staticmethod
    def from_json(d: dict[str, Any]) -> Layout:
        """The layout ``to_json`` wrote (device names back to accelerator indices)."""
        dmap = {k: int(str(v).rsplit(":", 1)[-1]) for k, v in d["device_map"].items()}
        return Layout(str(d["kind"]), dmap, str(d["input_device"]), int(d["n_devices"]))

    def short(self) -> str:
        """Runs of units per device, e.g. ``model.visual..model.language_model.layers.1 -> 0``."""
        runs: list[list[Any]] = []
        for unit, dev in self.device_map.items():
            if runs and runs[-1][2] == dev:
                runs[-1][1] = unit
            else:
                runs.append([unit, unit, dev])
        parts = [f"{a}->{d}" if a == b else f"{a}..{b}->{d}" for a, b, d in runs]
        return f"{self.kind}, inputs on {self.input_device}: " + ", ".join(parts)


@dataclass(frozen=True)
class Units:
    """A model's assignable pieces in module order, and which of them are special."""

    names: tuple[str, ...]
    towers: tuple[str, ...] = ()
    layers: tuple[str, ...] = ()
    embeddings: tuple[str, ...] = ()
    head: tuple[str, ...] = ()
    extra: dict[str, str] = field(default_factory=dict)


def units(model: Any) -> Units:
    """Cut ``model`` into units covering every parameter and buffer exactly once."""
    import torch

    named = dict(model.named_modules())
    # the decoder stack: the ModuleList with most entries outside the towers
    stacks = [
        (len(m), name)
        for name, m in named.items()
        if isinstance(m, torch.nn.ModuleList) and name.endswith("layers") and not _in_tower(name)
    ]
    if not stacks:
        raise ValueError(f"{type(model).__name__}: no decoder layer stack found")
    _, stack = max(stacks)
    layer_units = [f"{stack}.{i}" for i in range(len(named[stack]))]
    towers = _towers(named)
    out = _cover(model, set(layer_units) | set(towers))
    if any(True for _ in model.parameters(recurse=False)) or any(True for _ in model.buffers(recurse=False)):
        raise ValueError(f"{type(model).__name__} holds tensors at its root; it cannot be split by units")
    emb = model.get_input_embeddings()
    out_emb = model.get_output_embeddings()
    by_id = {id(m): n for n, m in named.items()}
    embeddings = tuple(u for u in out if u == by_id.get(id(emb)))
    head = tuple(u for u in out if out_emb is not None and u == by_id.get(id(out_emb)))
    return Units(tuple(out), tuple(towers), tuple(layer_units), embeddings, head)


def _towers(named: dict[str, Any]) -> list[str]:
    return [n for n in named if n and _is_tower(n) and not _in_tower(_parent(n))]


def _cover(model: Any, anchors: set[str]) -> list[str]:
    """Module paths covering every parameter and buffer once: the anchors, and the largest
    modules around them that hold tensors and contain no anchor."""
    out: list[str] = []

    def walk(prefix: str, mod: Any) -> None:
        for child, sub in mod.named_children():
            name = f"{prefix}.{child}" if prefix else child
            if name in anchors:
                out.append(name)
            elif any(a.startswith(name + ".") for a in anchors):
                walk(name, sub)
            elif any(True for _ in sub.parameters()) or any(True for _ in sub.buffers()):
                out.append(name)

    walk("", model)
    return out


def _parent(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else ""


def _is_tower(name: str) -> bool:
    return name.rsplit(".", 1)[-1] in TOWER_WORDS


def _in_tower(name: str) -> bool:
    return any(part in TOWER_WORDS for part in name.split("."))


# ---------------------------------------------------------------- pure constructors


def contiguous(names: Sequence[str], cuts: Sequence[int]) -> dict[str, int]:
    """Split ``names`` at the sorted ``cuts`` (indices); run i goes to device i."""
    bounds = sorted({c for c in cuts if 0 < c < len(names)})
    out: dict[str, int] = {}
    dev = 0
    for i, name in enumerate(names):
        while dev < len(bounds) and i >= bounds[dev]:
            dev += 1
        out[name] = dev
    return out


def vision_apart(u: Units, tower_device: int, cuts: Sequence[int], n: int) -> dict[str, int]:
    """Towers on ``tower_device``; everything else split contiguously over the other devices."""
    rest = [x for x in u.names if x not in u.towers]
    others = [d for d in range(n) if d != tower_device] or [tower_device]
    split = contiguous(rest, cuts)
    placed = {name: others[min(d, len(others) - 1)] for name, d in split.items()}
    return {name: tower_device if name in u.towers else placed[name] for name in u.names}


def ends_apart(u: Units, body: dict[str, int], emb_device: int, head_device: int) -> dict[str, int]:
    """``body`` with embeddings and lm_head moved to their own devices."""
    out = dict(body)
    for e in u.embeddings:
        out[e] = emb_device
    for h in u.head:
        out[h] = head_device
    return out


def towers_apart(model: Any) -> dict[str, int]:
    """The coarsest map with every tower on accelerator 0 and everything else on 1, by module path.

    The vision-apart layout in the fewest entries a person would write by hand (a test's literal
    ``device_map``): the prefill's inputs and the language model end up on different devices.
    """
    towers = _towers(dict(model.named_modules()))
    if not towers:
        raise ValueError(f"{type(model).__name__}: no vision or audio tower to put apart")
    return {name: 0 if name in towers else 1 for name in _cover(model, set(towers))}


def used_devices(device_map: dict[str, int]) -> int:
    return max(device_map.values(), default=0) + 1


# ---------------------------------------------------------------- hypothesis strategies


def strategy(u: Units, max_devices: int = 3, kinds: Sequence[str] = KINDS) -> Any:
    """Layouts of ``u`` over 2..max_devices accelerators, inputs on cpu or any of them."""
    from hypothesis import strategies as st

    @st.composite
    def build(draw: Any) -> Layout:
        n = draw(st.integers(2, max_devices), label="n_devices")
        kind = draw(st.sampled_from(list(kinds)), label="kind")
        idx = st.integers(0, len(u.names))
        cuts = draw(st.lists(idx, min_size=1, max_size=n - 1), label="cuts")
        dev = st.integers(0, n - 1)
        if kind == "contiguous":
            dmap = contiguous(u.names, cuts)
        elif kind == "vision-apart":
            dmap = vision_apart(u, draw(dev, label="tower_device"), cuts, n)
        elif kind == "ends-apart":
            dmap = ends_apart(u, contiguous(u.names, cuts), draw(dev, label="emb"), draw(dev, label="head"))
        else:
            dmap = {name: draw(dev) for name in u.names}
        devices = ["cpu"] + [f"cuda:{i}" for i in range(n)]
        inp = draw(st.sampled_from(devices), label="input_device")
        if len(set(dmap.values())) == 1:
            # accelerate moves a one-device map with model.to(), no hooks: inputs must be on that device,
            # as on real hardware; anything else is the caller's error, not the model's
            inp = f"cuda:{next(iter(dmap.values()))}"
        return Layout(kind, dmap, inp, n)

    return build()
