"""Device layouts as users make them: device maps, how they are loaded, where the inputs go.

A model is cut into *units* (decoder layers, embeddings, final norm and rotary tables, the vision
and audio towers, ``lm_head``, leftover top-level pieces) and, finer, into the *modules* a user
names in a hand-written map (a tower's patch embedding, rotary table, blocks and merger). Kinds:

- ``one-accelerator``: the whole model on one accelerator (``device_map={"": i}``); accelerate then
  calls ``model.to()`` and adds no hooks, so the inputs go to ``model.device`` as users send them;
- ``contiguous``: units in module order, split into runs on increasing devices;
- ``vision-apart``: the towers on their own device, the language model split contiguously;
- ``ends-apart``: embeddings and ``lm_head`` on devices other than the decoder layers around them;
- ``scattered``: any device for any unit;
- ``module-apart``: a contiguous map with one or two small modules on another device than their
  neighbours (rotary table, final norm, vision merger, ``lm_head``, embeddings, audio tower, a
  vision block: what maps copied from model cards and forums do);
- ``auto``, ``balanced``, ``balanced_low_0``, ``sequential``: the ``device_map`` strings of
  ``from_pretrained``, with or without a ``max_memory`` budget, resolved the way the installed
  transformers resolves them (for ``from_pretrained``) or with accelerate's public functions as
  transformers calls them (``get_balanced_memory`` unless sequential, then ``infer_auto_device_map``
  with the model's ``_no_split_modules``) for a model dispatched by hand.

A layout is placed (``place``) either by ``accelerate.dispatch_model`` on a copy of the in-memory
model or by ``Model.from_pretrained(checkpoint, device_map=...)`` with the literal map or the
strategy string, from a checkpoint of the tiny model saved once per process. Inputs are moved as
a whole to ``cpu``, ``model.device``, ``"cuda"`` or any ``cuda:i``. A layout accelerate or
transformers cannot place raises ``NotPlaceable``. Map construction is pure; resolving a strategy
and placing need a simulated (or real) machine and run inside ``ropefix.devices.simulate``.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import math
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ropefix.errors import RopefixError

STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
KINDS = ("one-accelerator", "contiguous", "vision-apart", "ends-apart", "scattered", "module-apart", *STRATEGIES)
LOADERS = ("dispatch", "from_pretrained")
MODEL_DEVICE = "model.device"  # inputs.to(model.device): resolved per layout to the first parameter's device
TOWER_WORDS = ("visual", "vision_tower", "vision_model", "audio_tower", "audio_model")
# the budget users give the last device of a max_memory map: room for the rest of a tiny model
LAST_BUDGET = "1GiB"
# which small modules a search tries to put apart first (hypothesis shrinks towards the front)
ROLES = (
    "rotary",
    "final-norm",
    "merger",
    "lm_head",
    "embeddings",
    "audio-tower",
    "vision-block",
    "vision-rotary",
    "patch-embed",
    "vision-tower",
    "decoder-layer",
    "tower-part",
    "other",
)


@dataclass(frozen=True)
class Layout:
    """One way a user places a model, and where the inputs go.

    ``device_map`` is the map the model ends up with (module path -> accelerator index, ``""`` for
    the whole model), for strategy layouts the one accelerate or transformers computed. ``input_device``
    is what ``.to()`` receives (``model.device`` already resolved); ``inputs_to`` says how the user
    wrote it. ``problem`` is set when the layout could not be resolved: ``place`` raises it.
    """

    kind: str
    device_map: dict[str, int]
    input_device: str  # "cpu", "cuda" or "cuda:i"
    n_devices: int = 2  # accelerators on the (simulated) machine; the map may use fewer
    inputs_to: str = ""  # "model.device", "cpu", "cuda", "cuda:i"; "" = input_device as written
    loader: str = "dispatch"  # "dispatch" | "from_pretrained"
    strategy: str | None = None  # the device_map string of a strategy layout
    max_memory: dict[int, str] | None = None  # the user's budget, as written (strategy layouts)
    apart: tuple[str, ...] = ()  # module-apart: the modules moved off their neighbours' device
    problem: str = ""

    @property
    def one_accelerator(self) -> bool:
        """The whole model on one accelerator: accelerate moves it with ``model.to()`` and adds no hooks."""
        return on_one_accelerator(self.device_map)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "n_devices": self.n_devices,
            "input_device": self.input_device,
            "inputs_to": self.inputs_to or self.input_device,
            "loader": self.loader,
            "strategy": self.strategy,
            "max_memory": None if self.max_memory is None else {str(k): v for k, v in self.max_memory.items()},
            "apart": list(self.apart),
            "device_map": {k: _device_name(v) for k, v in self.device_map.items()},
            "problem": self.problem,
            "call": self.call(),
        }

    @staticmethod
    def from_json(d: dict[str, Any]) -> Layout:
        """The layout ``to_json`` wrote (device names back to accelerator indices; older JSON lacks the newer keys)."""
        mm = d.get("max_memory")
        return Layout(
            kind=d["kind"],
            device_map={k: _device_index(v) for k, v in d["device_map"].items()},
            input_device=d["input_device"],
            n_devices=d.get("n_devices", 2),
            inputs_to=d.get("inputs_to", ""),
            loader=d.get("loader", "dispatch"),
            strategy=d.get("strategy"),
            max_memory=None if mm is None else {int(k): v for k, v in mm.items()},
            apart=tuple(d.get("apart", ())),
            problem=d.get("problem", ""),
        )

    def call(self) -> str:
        """The placing call as a user writes it, on one line (literal maps in full)."""
        if self.strategy is not None:
            budget = "" if self.max_memory is None else f", max_memory={_memory_literal(self.max_memory)}"
            if self.loader == "from_pretrained":
                return f'Model.from_pretrained(path, device_map="{self.strategy}"{budget})'
            low = ", low_zero=True" if self.strategy == "balanced_low_0" else ""
            ns = "no_split_module_classes=model._no_split_modules"
            memory = (
                f"get_max_memory({_memory_literal(self.max_memory) if self.max_memory else ''})"
                if self.strategy == "sequential"
                else f"get_balanced_memory(model{budget}, {ns}{low})"
            )
            return f"dispatch_model(model, infer_auto_device_map(model, max_memory={memory}, {ns}))"
        literal = _map_literal(self.device_map)
        if self.loader == "from_pretrained":
            return f"Model.from_pretrained(path, device_map={literal})"
        return f"dispatch_model(model, device_map={literal})"

    def inputs_call(self) -> str:
        to = self.inputs_to or self.input_device
        if to == "cpu":
            return "inputs left on the CPU"
        if to == MODEL_DEVICE:
            return f"inputs.to(model.device)  # {self.input_device}"
        return f'inputs.to("{to}")'

    def short(self) -> str:
        """One line: the kind, the call (runs of the map for strategies), where the inputs go."""
        gpus = f"{self.n_devices} GPU" + ("s" if self.n_devices > 1 else "")
        if self.problem:
            return f"{self.kind} on {gpus}: {self.call()} (not placeable: {self.problem})"
        what = self.call() if self.strategy is None else f"{self.call()} -> {_runs(self.device_map)}"
        if self.strategy is None and len(self.device_map) > 4:
            verb = "Model.from_pretrained(path" if self.loader == "from_pretrained" else "dispatch_model(model"
            verb += ", device_map="
            what = f"{verb}{{{_runs(self.device_map)}}})"
        apart = f", {' and '.join(self.apart)} apart" if self.apart else ""
        return f"{self.kind} on {gpus}{apart}: {what}; {self.inputs_call()}"

    def describe(self) -> str:
        """The user's code for this layout, with the map it resolves to."""
        gpus = f"# {self.n_devices} accelerator" + ("s" if self.n_devices > 1 else "") + f", layout {self.kind}"
        lines = [gpus + (f" ({', '.join(self.apart)} apart)" if self.apart else "")]
        lines.append(f"model = {self.call()}")
        if self.strategy is not None:
            lines.append(f"# resolves to device_map={_map_literal(self.device_map)}")
        to = self.inputs_to or self.input_device
        if to == "cpu":
            lines.append("inputs = processor(...)  # left on the CPU")
        else:
            lines.append(f"inputs = processor(...).{self.inputs_call()}")
        if self.problem:
            lines.append(f"# not placeable: {self.problem}")
        return "\n".join(lines)


class NotPlaceable(RopefixError):
    """accelerate or transformers refused the layout (or placed it otherwise than it says)."""

    def __init__(self, layout: Layout, reason: str) -> None:
        super().__init__(
            f"layout not placeable: {replace(layout, problem='').short()}: {reason.rstrip('.')}. The layout is "
            "listed as not placeable; "
            "pick another map or budget."
        )
        self.layout = layout
        self.reason = reason


@dataclass(frozen=True)
class Units:
    """A model's assignable pieces in module order, and which of them are special."""

    names: tuple[str, ...]
    towers: tuple[str, ...] = ()
    layers: tuple[str, ...] = ()
    embeddings: tuple[str, ...] = ()
    head: tuple[str, ...] = ()
    extra: dict[str, str] = field(default_factory=dict)
    first: str = ""  # the first parameter's name: where transformers' ``model.device`` looks


@dataclass(frozen=True)
class ModelInfo:
    """What the strategies need to know about one model, and the model itself for resolving strategies."""

    units: Units
    modules: tuple[tuple[str, str], ...]  # (module path, role) a user may put apart, most wanted first
    no_split: tuple[str, ...]  # the model's _no_split_modules, as from_pretrained reads them
    total_bytes: int  # parameters and buffers, as accelerate sizes them
    model: Any = field(compare=False, repr=False)
    loadable: bool = True  # from_pretrained can load a checkpoint of it
    resolved: dict[tuple, tuple[dict[str, int], str]] = field(default_factory=dict, compare=False, repr=False)


# ---------------------------------------------------------------- cutting a model


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
    first = next((n for n, _ in model.named_parameters()), "")
    return Units(tuple(out), tuple(towers), tuple(layer_units), embeddings, head, first=first)


def model_info(source: Any) -> ModelInfo:
    """Units, small modules and sizes of a model (or a ``TinyModel``), for ``strategy``."""
    from accelerate.utils import compute_module_sizes

    model = getattr(source, "model", source)
    u = units(model)
    return ModelInfo(
        units=u,
        modules=tuple(small_modules(model, u)),
        no_split=no_split_modules(model),
        total_bytes=int(compute_module_sizes(model)[""]),
        model=model,
        loadable=callable(getattr(model, "save_pretrained", None))
        and callable(getattr(model, "from_pretrained", None)),
    )


def no_split_modules(model: Any) -> tuple[str, ...]:
    """The classes accelerate must keep whole, as the installed ``from_pretrained`` collects them."""
    collect = getattr(model, "_get_no_split_modules", None)  # 4.x: gathered over the submodules
    classes = collect("auto") if callable(collect) else getattr(model, "_no_split_modules", None)  # 5.x: a property
    return tuple(sorted(classes or ()))


def small_modules(model: Any, u: Units) -> list[tuple[str, str]]:
    """Module paths a hand-written map names, with their role: every unit, and inside each tower its
    children (a ModuleList's entries one by one): patch embedding, rotary table, blocks, merger, ..."""
    import torch

    named = dict(model.named_modules())
    found: list[str] = list(u.names)
    for tower in u.towers:
        for child, mod in named[tower].named_children():
            path = f"{tower}.{child}"
            if isinstance(mod, torch.nn.ModuleList):
                found.extend(f"{path}.{i}" for i, entry in enumerate(mod) if _holds_tensors(entry))
            elif _holds_tensors(mod):
                found.append(path)
    order = {name: i for i, name in enumerate(named)}
    roles = [(path, _role(path, named[path], u)) for path in found]
    return sorted(roles, key=lambda pr: (ROLES.index(pr[1]), order.get(pr[0], 0)))


def _role(path: str, mod: Any, u: Units) -> str:
    kind = type(mod).__name__
    tower = next((t for t in u.towers if path.startswith(t + ".")), None)
    unit = _unit_role(path, u)
    if unit not in ("final-norm", "other"):
        return unit
    if "Rotary" in kind:
        return "vision-rotary" if tower else "rotary"
    if tower is None:
        return "final-norm" if path.rsplit(".", 1)[-1].endswith("norm") else "other"
    inner = path[len(tower) + 1 :]
    if "merger" in inner:
        return "merger"
    if "audio" in tower:
        return "tower-part"
    if inner.split(".")[0] in ("blocks", "layers"):
        return "vision-block"
    if "embed" in inner:
        return "patch-embed"
    return "tower-part"


def _holds_tensors(mod: Any) -> bool:
    return any(True for _ in mod.parameters()) or any(True for _ in mod.buffers())


def _towers(named: dict[str, Any]) -> list[str]:
    return [n for n in named if n and _is_tower(n) and not _in_tower(_parent(n))]


def _cover(model: Any, anchors: set[str], prefix: str = "") -> list[str]:
    """Module paths covering every parameter and buffer once: the anchors, and the largest
    modules around them that hold tensors and contain no anchor (paths under ``prefix``)."""
    out: list[str] = []

    def walk(at: str, mod: Any) -> None:
        for child, sub in mod.named_children():
            name = f"{at}.{child}" if at else child
            if name in anchors:
                out.append(name)
            elif any(a.startswith(name + ".") for a in anchors):
                walk(name, sub)
            elif _holds_tensors(sub):
                out.append(name)

    walk(prefix, model)
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


def apart(device_map: dict[str, int], path: str, device: int, model: Any = None) -> dict[str, int]:
    """``device_map`` with module ``path`` on ``device`` and every other module where it was.

    A key that holds ``path`` is written out as its children (the coarsest cover, as a user
    writes a map by hand), which needs ``model``; keys inside ``path`` merge into it.
    """
    holder = holding_key(device_map, path)
    if holder == path:
        return {**device_map, path: device}
    if holder is not None:
        if model is None:
            raise ValueError(f"{path!r} lies inside the key {holder!r}: splitting it needs the model")
        pieces = _cover(model.get_submodule(holder) if holder else model, {path}, holder)
        out: dict[str, int] = {}
        for key, dev in device_map.items():
            if key != holder:
                out[key] = dev
                continue
            for piece in pieces:
                out[piece] = device if piece == path else dev
        return out
    inner = [k for k in device_map if k.startswith(path + ".")]
    if not inner:
        raise ValueError(f"no key of the device map holds or lies inside {path!r}")
    out = {}
    for key, dev in device_map.items():
        if key == inner[0]:
            out[path] = device
        elif key not in inner:
            out[key] = dev
    return out


def holding_key(device_map: dict[str, Any], name: str) -> str | None:
    """The key of ``device_map`` that places ``name`` (a module or tensor path): the longest prefix."""
    best: str | None = None
    for key in device_map:
        if (key == "" or name == key or name.startswith(key + ".")) and (best is None or len(key) > len(best)):
            best = key
    return best


def device_of(device_map: dict[str, int], name: str) -> int:
    key = holding_key(device_map, name)
    if key is None:
        raise ValueError(f"the device map places no key holding {name!r}")
    return device_map[key]


def towers_apart(model: Any) -> dict[str, int]:
    """The coarsest map with every tower on accelerator 0 and everything else on 1, by module path.

    The vision-apart layout in the fewest entries a person would write by hand (a test's literal
    ``device_map``): the prefill's inputs and the language model end up on different devices.
    """
    towers = _towers(dict(model.named_modules()))
    if not towers:
        raise ValueError(f"{type(model).__name__}: no vision or audio tower to put apart")
    return {name: 0 if name in towers else 1 for name in _cover(model, set(towers))}


def on_one_accelerator(device_map: dict[str, Any]) -> bool:
    return len(set(device_map.values())) == 1


def used_devices(device_map: dict[str, int]) -> int:
    return max(device_map.values(), default=0) + 1


def uncovered(device_map: dict[str, Any], model: Any) -> tuple[list[str], list[str]]:
    """(tensors no key places, keys nested in another key): both empty for a map covering each tensor once."""
    names = [n for n, _ in model.named_parameters()] + [n for n, _ in model.named_buffers()]
    missing = [n for n in names if holding_key(device_map, n) is None]
    nested = [k for k in device_map if any(o != k and (o == "" or k.startswith(o + ".")) for o in device_map)]
    return missing, nested


# ---------------------------------------------------------------- resolving strategies (needs a machine)


def accelerate_map(model: Any, strategy: str, max_memory: dict[int, str] | None, no_split: Sequence[str]) -> dict:
    """accelerate's map for a ``device_map`` string, called the way ``from_pretrained`` calls it (4.x):
    ``get_balanced_memory`` (``low_zero`` for balanced_low_0) unless sequential, then ``infer_auto_device_map``."""
    from accelerate import infer_auto_device_map
    from accelerate.utils import get_balanced_memory, get_max_memory

    if strategy not in STRATEGIES:
        raise ValueError(f"unknown device_map strategy {strategy!r}; one of {', '.join(STRATEGIES)}")
    budget = dict(max_memory) if max_memory else None  # accelerate converts the values in place
    if strategy == "sequential":
        budget = get_max_memory(budget)
    else:
        budget = get_balanced_memory(
            model, max_memory=budget, no_split_module_classes=list(no_split), low_zero=strategy == "balanced_low_0"
        )
    return dict(infer_auto_device_map(model, max_memory=budget, no_split_module_classes=list(no_split)))


def placement(model: Any) -> dict[str, Any]:
    """The map a placed model reports: ``hf_device_map`` where transformers set one, else the whole
    model on its first parameter's device (one-accelerator loads in 5.x keep no map)."""
    reported = getattr(model, "hf_device_map", None)
    if reported:
        return {k: _device_index(v) for k, v in reported.items()}
    first = next(iter(model.parameters()), None)
    return {"": _device_index(first.device) if first is not None else 0}


def misplaced(model: Any, device_map: dict[str, int]) -> list[str]:
    """Tensors of ``model`` not on the device ``device_map`` gives them ("name on X, map says Y")."""
    out = []
    tensors = list(model.named_parameters()) + list(model.named_buffers())
    for name, t in tensors:
        key = holding_key(device_map, name)
        want = None if key is None else _device_name(device_map[key])
        if want != str(t.device):
            out.append(f"{name} on {t.device}, the layout says {want}")
    return out


def resolve(info: ModelInfo, strategy: str, n: int, max_memory: dict[int, str] | None, loader: str) -> tuple:
    """(device map, problem) of a strategy layout on ``n`` accelerators, cached per model.

    ``dispatch``: accelerate's public functions (``accelerate_map``). ``from_pretrained``: the map the
    installed transformers gives (5.x computes it with its own copies of accelerate's functions,
    whose balanced budget differs), read from a load of the saved checkpoint. Runs in a simulation
    of ``n`` devices (the caller's, if one with ``n`` devices is running).
    """
    key = (strategy, n, None if max_memory is None else tuple(sorted(max_memory.items())), loader)
    if key not in info.resolved:
        with _machine(n):
            try:
                if loader == "dispatch":
                    dmap = accelerate_map(info.model, strategy, max_memory, info.no_split)
                else:
                    dmap = placement(_from_pretrained(info.model, strategy, max_memory))
            except Exception as e:  # noqa: BLE001 - a strategy that cannot be resolved is listed, never fatal
                info.resolved[key] = ({}, f"{type(e).__name__}: {str(e)[:300]}")
                return {}, info.resolved[key][1]
        offloaded = sorted({str(v) for v in dmap.values() if not isinstance(v, int)})
        problem = f"the map offloads to {' and '.join(offloaded)}: max_memory is too small" if offloaded else ""
        info.resolved[key] = ({k: v for k, v in dmap.items() if isinstance(v, int)}, problem)
    dmap, problem = info.resolved[key]
    return dict(dmap), problem


@contextlib.contextmanager
def _machine(n: int) -> Iterator[None]:
    """A simulation of ``n`` accelerators for the duration, or the caller's if it has ``n``."""
    import torch

    from ropefix import devices

    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(devices.simulate(n))
        except RopefixError:  # simulations do not nest: use the running one if it is that machine
            if torch.cuda.device_count() != n:
                raise
        yield


# ---------------------------------------------------------------- placing


_CHECKPOINTS: dict[int, tuple[Any, Path]] = {}


def checkpoint(model: Any) -> Path:
    """A folder holding ``model`` saved with ``save_pretrained``: once per model and process, removed at exit."""
    hit = _CHECKPOINTS.get(id(model))
    if hit is not None and hit[0] is model:
        return hit[1]
    folder = Path(tempfile.mkdtemp(prefix="ropefix-tiny-"))
    atexit.register(shutil.rmtree, folder, True)
    with _quiet():
        model.save_pretrained(folder)
    _CHECKPOINTS[id(model)] = (model, folder)  # the model is kept so its id is never reused
    return folder


def place(tiny: Any, layout: Layout, before_dispatch: Callable[[Any], Any] | None = None) -> Any:
    """A fresh model placed as ``layout`` says (``tiny``: a ``TinyModel`` or a model), no state kept from
    earlier calls. Call it inside ``ropefix.devices.simulate(layout.n_devices)``; move the inputs with
    ``.to(layout.input_device)`` (or leave them on the CPU when it says ``cpu``). ``before_dispatch``
    (dispatch loader only) gets the fresh copy before ``dispatch_model`` does: the hotfix's
    ``before-dispatch`` order (``ropefix.prove.hotfix_orders``).

    Raises ``NotPlaceable`` when accelerate or transformers refuses the layout, or when the model's
    tensors do not land where the layout says (the report would lie).
    """
    import torch

    from ropefix.prove import tinymodels

    if layout.problem:
        raise NotPlaceable(layout, layout.problem)
    seen = torch.cuda.device_count()
    # a strategy's map depends on the machine: it must be the one the layout was resolved on
    if seen < layout.n_devices or (layout.strategy is not None and seen != layout.n_devices):
        raise RopefixError(
            f"place() needs {layout.n_devices} accelerators and sees {seen}: call it inside "
            f"ropefix.devices.simulate({layout.n_devices})."
        )
    base = getattr(tiny, "model", tiny)
    try:
        if layout.loader == "from_pretrained":
            model = _from_pretrained(base, layout.strategy or dict(layout.device_map), layout.max_memory)
        elif layout.loader == "dispatch":
            model = _dispatched(base, layout, before_dispatch)
        else:
            raise ValueError(f"unknown loader {layout.loader!r}; one of {', '.join(LOADERS)}")
    except Exception as e:
        raise NotPlaceable(layout, f"{type(e).__name__}: {str(e)[:300]}") from e
    tinymodels.reset_state(model)
    wrong = misplaced(model, layout.device_map)
    if wrong:
        raise NotPlaceable(layout, f"placed otherwise than the layout says ({len(wrong)} tensors): {wrong[0]}")
    return model


def _dispatched(base: Any, layout: Layout, before: Callable[[Any], Any] | None = None) -> Any:
    from accelerate import dispatch_model

    from ropefix.prove import tinymodels

    model = copy.deepcopy(base)
    tinymodels.reset_state(model)
    if before is not None:
        before(model)
    dmap = dict(layout.device_map)
    if layout.strategy is not None:  # what the user runs: accelerate computes the map on this machine
        dmap = accelerate_map(model, layout.strategy, layout.max_memory, no_split_modules(model))
    return dispatch_model(model, device_map=dmap)


def _from_pretrained(base: Any, device_map: Any, max_memory: dict[int, str] | None) -> Any:
    path = checkpoint(base)
    kwargs: dict[str, Any] = {"device_map": device_map}
    if max_memory is not None:
        kwargs["max_memory"] = dict(max_memory)  # transformers converts the values in place
    with _quiet():
        return type(base).from_pretrained(path, **kwargs).eval()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No progress bars from transformers while the suite loads and saves tiny checkpoints."""
    from transformers.utils import logging as tf_logging

    was = tf_logging.is_progress_bar_enabled()
    tf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            tf_logging.enable_progress_bar()


# ---------------------------------------------------------------- hypothesis strategies


def strategy(
    source: Units | ModelInfo,
    max_devices: int = 4,
    kinds: Sequence[str] | None = None,
    *,
    min_devices: int = 1,
    loaders: Sequence[str] | None = None,
) -> Any:
    """Layouts over ``min_devices..max_devices`` accelerators.

    ``source``: ``Units`` (pure maps over units, loaded by ``dispatch``; ``module-apart`` moves units)
    or ``ModelInfo`` (everything: small modules, strategy strings resolved on a simulated machine,
    ``from_pretrained``). One accelerator is always the ``one-accelerator`` kind. Inputs go to
    ``model.device``, stay on the CPU, go to ``"cuda"`` or to any ``cuda:i``; with the whole model on
    one device (no hooks) they go to ``model.device``, as a user's must.
    """
    from hypothesis import strategies as st

    info = source if isinstance(source, ModelInfo) else None
    u = info.units if info is not None else source
    wanted = list(kinds or KINDS)
    unknown = [k for k in wanted if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown layout kinds {unknown}; known: {', '.join(KINDS)}")
    if info is None:
        if kinds is not None and any(k in STRATEGIES for k in wanted):
            raise ValueError("device_map strategies need a ModelInfo (layouts.model_info(model)), not Units")
        wanted = [k for k in wanted if k not in STRATEGIES]
    use_loaders = list(loaders or (LOADERS if info is not None and info.loadable else ("dispatch",)))
    if "from_pretrained" in use_loaders and (info is None or not info.loadable):
        raise ValueError("from_pretrained layouts need a ModelInfo of a model transformers can save and load")
    candidates = list(info.modules) if info is not None else [(n, _unit_role(n, u)) for n in u.names]
    total_kib = max(2, math.ceil(info.total_bytes / 1024)) if info is not None else 0

    @st.composite
    def build(draw: Any) -> Layout:
        n = draw(st.integers(min_devices, max_devices), label="n_devices")
        loader = draw(st.sampled_from(use_loaders), label="loader")
        dev = st.integers(0, n - 1)
        strategy_name: str | None = None
        max_memory: dict[int, str] | None = None
        moved: tuple[str, ...] = ()
        problem = ""
        kind = "one-accelerator" if n == 1 else draw(st.sampled_from(wanted), label="kind")
        if kind == "one-accelerator":
            dmap = {"": draw(dev, label="device") if n > 1 else 0}
        elif kind in STRATEGIES:
            strategy_name = kind
            if draw(st.booleans(), label="max_memory"):
                # every device but the last gets a budget below the model's size (shrinking: towards the size)
                max_memory = {
                    i: f"{total_kib - draw(st.integers(0, total_kib - 1), label=f'budget{i}')}KiB"
                    for i in range(n - 1)
                }
                max_memory[n - 1] = LAST_BUDGET
            assert info is not None
            dmap, problem = resolve(info, kind, n, max_memory, loader)
        else:
            cuts = draw(st.lists(st.integers(0, len(u.names)), min_size=1, max_size=n - 1), label="cuts")
            if kind == "contiguous":
                dmap = contiguous(u.names, cuts)
            elif kind == "vision-apart":
                dmap = vision_apart(u, draw(dev, label="tower_device"), cuts, n)
            elif kind == "ends-apart":
                dmap = ends_apart(u, contiguous(u.names, cuts), draw(dev, label="emb"), draw(dev, label="head"))
            elif kind == "module-apart":
                dmap = contiguous(u.names, cuts)
                picks = draw(
                    st.lists(st.sampled_from(range(len(candidates))), min_size=1, max_size=2, unique=True),
                    label="apart",
                )
                model = info.model if info is not None else None
                for i in picks:
                    path = candidates[i][0]
                    if any(path == m or path.startswith(m + ".") or m.startswith(path + ".") for m in moved):
                        continue  # one module inside another already apart: keep the first
                    here = device_of(dmap, path) if holding_key(dmap, path) is not None else 0
                    others = [d for d in range(n) if d != here]
                    dmap = apart(dmap, path, draw(st.sampled_from(others), label="apart_device"), model)
                    moved += (path,)
            else:
                dmap = {name: draw(dev) for name in u.names}
        targets = [MODEL_DEVICE, "cpu", "cuda"] + [f"cuda:{i}" for i in range(n)]
        to = draw(st.sampled_from(targets), label="input_device")
        if on_one_accelerator(dmap):
            # accelerate moves a one-accelerator map with model.to(), no hooks: inputs must be on that device,
            # as on real hardware; anything else is the caller's error, not the model's
            to = MODEL_DEVICE
        first = u.first or (u.names[0] if u.names else "")
        if to == MODEL_DEVICE:
            device = f"cuda:{device_of(dmap, first)}" if dmap else "cuda:0"
        else:
            device = to
        return Layout(kind, dmap, device, n, to, loader, strategy_name, max_memory, moved, problem)

    return build()


def _unit_role(name: str, u: Units) -> str:
    if name in u.embeddings:
        return "embeddings"
    if name in u.head:
        return "lm_head"
    if name in u.towers:
        return "audio-tower" if "audio" in name else "vision-tower"
    if name in u.layers:
        return "decoder-layer"
    return "final-norm" if name.endswith("norm") else "other"


# ---------------------------------------------------------------- rendering


def _device_name(v: Any) -> str:
    return f"cuda:{v}" if isinstance(v, int) else str(v)


def _device_index(v: Any) -> Any:
    """An accelerator index from 1, "cuda:1" or torch.device("cuda", 1); "cpu"/"disk" stay as they are."""
    if isinstance(v, int):
        return v
    text = str(v)
    if text.startswith("cuda"):
        return int(text.split(":")[1]) if ":" in text else 0
    return int(text) if text.isdigit() else text


def _map_literal(device_map: dict[str, Any]) -> str:
    return "{" + ", ".join(f'"{k}": {v!r}' for k, v in device_map.items()) + "}"


def _memory_literal(max_memory: dict[int, str]) -> str:
    return "{" + ", ".join(f'{k}: "{v}"' for k, v in max_memory.items()) + "}"


def _runs(device_map: dict[str, Any]) -> str:
    """Runs of keys per device, e.g. ``model.visual..model.language_model.layers.1->0, lm_head->1``."""
    runs: list[list[Any]] = []
    for key, dev in device_map.items():
        if runs and runs[-1][2] == dev:
            runs[-1][1] = key
        else:
            runs.append([key, key, dev])
    return ", ".join(f"{a or '*'}->{d}" if a == b else f"{a}..{b}->{d}" for a, b, d in runs)
