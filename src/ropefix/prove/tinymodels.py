"""Tiny mRoPE vision-language models: random weights, tiny configs, valid prompts, no downloads.

Families are discovered in whatever ``transformers`` is importable: every model folder whose
modeling file keeps ``rope_deltas`` on the model is a candidate, and its
``*ForConditionalGeneration`` classes whose config carries a ``vision_config`` are built. Config
fields are shrunk by name where present (the names moved between releases: flat text fields in
4.4x, ``text_config`` later, ``rope_scaling`` then ``rope_parameters``), so nothing here lists
releases. A family that cannot be built tiny is reported with the reason, never silently dropped.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil
import re
from dataclasses import dataclass, field
from typing import Any

VOCAB = 320  # tiny vocabulary; special tokens are remapped to its top
SPARE_IDS = VOCAB - 64  # ids from here up are reserved for special tokens
HEAD_DIM = 16
MROPE_SECTION = [2, 3, 3]  # sums to HEAD_DIM // 2, as every mRoPE implementation requires
TEXT_LAYERS = 4  # enough decoder layers to split across two or three devices
KINDS = ("text", "image", "video")

# Shrunk sizes by field name; applied to a (sub)config only where the field already exists.
_TEXT = {
    "hidden_size": 64,
    "intermediate_size": 64,
    "num_hidden_layers": TEXT_LAYERS,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": HEAD_DIM,
    "max_window_layers": TEXT_LAYERS,
    "max_position_embeddings": 512,
    "moe_intermediate_size": 32,
    "num_experts": 4,
    "num_experts_per_tok": 2,
    "n_routed_experts": 4,
    "first_k_dense_replace": 1,
    "shared_expert_intermediate_size": 32,
}
_VISION = {
    "depth": 2,
    "embed_dim": 32,
    "num_heads": 2,
    "intermediate_size": 64,
    "fullatt_block_indexes": [1],
    "deepstack_visual_indexes": [0],
    "num_position_embeddings": 64,
}
_AUDIO = {
    "encoder_layers": 1,
    "encoder_attention_heads": 2,
    "encoder_ffn_dim": 32,
    "d_model": 16,
    "output_dim": 64,
}


@dataclass(frozen=True)
class Family:
    """One buildable model: where it lives and which classes build it."""

    name: str  # the transformers model folder, e.g. "qwen2_vl"
    model_class: str
    config_class: str
    module: str

    def __str__(self) -> str:
        return f"{self.name}:{self.model_class}"


@dataclass(frozen=True)
class Skipped:
    name: str
    reason: str


@dataclass
class TinyModel:
    family: Family
    model: Any  # a torch.nn.Module in eval mode
    config: Any
    specials: dict[str, int]  # role -> token id: image, video, start, end
    patch_dim: int  # width of one row of pixel_values
    merge: int  # spatial merge size
    video_layout: str | None = None  # "block" or "per-frame"; None: video prompts unsupported
    takes_token_types: bool = False  # forward accepts mm_token_type_ids
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Prompt:
    """Shape of one batch of prompts; `inputs()` turns it into tensors."""

    kind: str = "text"  # text | image | video
    batch: int = 1
    length: int = 6  # text tokens per row before padding
    pad: int = 0  # pad tokens added to every row but the last
    padding_side: str = "left"
    grid: tuple[int, int, int] = (1, 4, 4)  # (t, h, w) in patches; h, w multiples of merge
    seed: int = 0


def _text_module(name: str) -> str:
    return f"transformers.models.{name}.modeling_{name}"


def discover() -> tuple[list[Family], list[Skipped]]:
    """Families in the importable transformers whose models store rope_deltas on themselves."""
    import transformers.models as tm

    found: list[Family] = []
    skipped: list[Skipped] = []
    for info in sorted(pkgutil.iter_modules(tm.__path__), key=lambda i: i.name):
        spec = importlib.util.find_spec(_text_module(info.name))
        if spec is None or spec.origin is None:
            continue
        try:
            with open(spec.origin, encoding="utf-8") as fh:
                src = fh.read()
        except OSError:
            continue
        if "rope_deltas" not in src or "self.rope_deltas = " not in src and ".rope_deltas = rope_deltas" not in src:
            continue
        try:
            mod = importlib.import_module(_text_module(info.name))
        except Exception as e:  # noqa: BLE001 - a model needing an optional dependency is skipped, with why
            skipped.append(Skipped(info.name, f"import failed: {type(e).__name__}: {e}"))
            continue
        picked = _pick_classes(info.name, mod)
        if picked:
            found.extend(picked)
        else:
            skipped.append(Skipped(info.name, "no *ForConditionalGeneration class with a vision_config"))
    return found, skipped


def _pick_classes(name: str, mod: Any) -> list[Family]:
    out = []
    for cls_name, cls in inspect.getmembers(mod, inspect.isclass):
        if cls.__module__ != mod.__name__ or not cls_name.endswith("ForConditionalGeneration"):
            continue
        cfg_cls = getattr(cls, "config_class", None)
        if cfg_cls is None:
            continue
        try:
            has_vision = "vision_config" in cfg_cls().to_dict()
        except Exception:  # noqa: BLE001, S112 - a config that cannot be built has no vision tower to test
            continue
        if has_vision:
            out.append(Family(name, cls_name, cfg_cls.__name__, mod.__name__))
    return out


def family(name: str) -> Family:
    """The family for a model folder name (``qwen2_vl``) or ``folder:Class``."""
    families, skipped = discover()
    for f in families:
        if name in (f.name, str(f), f.model_class):
            return f
    why = next((s.reason for s in skipped if s.name == name), None)
    from ropefix.errors import RopefixError

    known = ", ".join(sorted({f.name for f in families})) or "none"
    raise RopefixError(
        f"No tiny model for {name!r} in this transformers" + (f" ({why})" if why else "") + f". Known here: {known}."
    )


# ---------------------------------------------------------------- configs


def _shrink(node: dict[str, Any], role: str) -> dict[str, Any]:
    """Shrink one config dict in place by field name; recurse into sub-configs."""
    table = {"text": _TEXT, "vision": _VISION, "audio": _AUDIO}.get(role, {})
    if role == "text" or "vocab_size" in node and "num_hidden_layers" in node:
        table = _TEXT
        node["vocab_size"] = VOCAB
        node.pop("layer_types", None)  # derived from num_hidden_layers on construction
        node.pop("mlp_only_layers", None)
        for key in ("rope_parameters", "rope_scaling"):
            if key in node or (key == "rope_parameters" and "rope_scaling" not in node):
                rope = dict(node.get(key) or {})
                rope.setdefault("rope_type", "default")
                if "type" in rope:
                    rope["type"] = "default" if rope["type"] == "mrope" else rope["type"]
                rope["mrope_section"] = list(MROPE_SECTION)
                node[key] = rope
    for k, v in table.items():
        if k in node:
            node[k] = list(v) if isinstance(v, list) else v
    if role == "vision":
        # the vision output feeds the text model: both widths must be the text hidden size
        if "out_hidden_size" in node:
            node["hidden_size"] = 32
            node["out_hidden_size"] = _TEXT["hidden_size"]
        elif "embed_dim" in node:
            node["hidden_size"] = _TEXT["hidden_size"]
        else:
            node["hidden_size"] = 32
    for k, v in list(node.items()):
        if isinstance(k, str) and isinstance(v, dict) and k.endswith("_config"):
            sub = "vision" if "vision" in k else "audio" if "audio" in k else "text" if "text" in k else ""
            _shrink(v, sub)
    return node


def _remap_tokens(node: dict[str, Any], mapping: dict[int, int]) -> None:
    """Move every special token id outside the tiny vocabulary to its top, consistently."""
    for k, v in list(node.items()):
        if not isinstance(k, str) or k in ("id2label", "label2id"):
            continue
        if isinstance(v, dict):
            _remap_tokens(v, mapping)
        elif (k.endswith(("_token_id", "_token_index"))) and isinstance(v, int) and v >= VOCAB:
            node[k] = mapping.setdefault(v, VOCAB - 1 - len(mapping))
        elif k.endswith("_token_id") and isinstance(v, list):
            node[k] = [mapping.setdefault(x, VOCAB - 1 - len(mapping)) if x >= VOCAB else x for x in v]


def tiny_config(fam: Family) -> Any:
    mod = importlib.import_module(fam.module)
    cfg_cls = getattr(mod, fam.config_class, None) or getattr(
        importlib.import_module(fam.module.replace(".modeling_", ".configuration_")), fam.config_class
    )
    d = cfg_cls().to_dict()
    for k in ("transformers_version", "architectures", "_name_or_path"):
        d.pop(k, None)
    _shrink(d, "text" if "text_config" not in d and "vocab_size" in d else "")
    _remap_tokens(d, {})
    d["tie_word_embeddings"] = False
    cfg = cfg_cls(**{k: v for k, v in d.items() if k != "model_type"})
    return cfg


def _fill_token_ids(cfg: Any, fam: Family) -> None:
    """Give the config every ``*_token_id`` its modeling code reads but it lacks.

    Some releases and sub-models (4.49's Qwen2-VL, omni thinkers) read token ids that only the
    hub's config.json or a parent config sets; each gets its own spare id of the tiny vocabulary.
    """
    src = inspect.getsource(importlib.import_module(fam.module))
    used = sorted(set(re.findall(r"config\.(\w+_token_(?:id|index))\b", src)))
    spare = iter(range(SPARE_IDS, VOCAB))
    taken = {v for v in _token_values(cfg)}
    for name in used:
        if _get(cfg, name) is None:
            free = next(i for i in spare if i not in taken)
            setattr(cfg, name, free)
            taken.add(free)


def _token_values(cfg: Any) -> list[int]:
    out = []
    for holder in (cfg, getattr(cfg, "text_config", None), getattr(cfg, "vision_config", None)):
        for k, v in vars(holder).items() if holder is not None else ():
            if (k.endswith(("_token_id", "_token_index"))) and isinstance(v, int):
                out.append(v)
    return out


def _get(cfg: Any, *names: str) -> Any:
    """The first of ``names`` set on the config or its text/vision sub-configs."""
    for holder in (cfg, getattr(cfg, "text_config", None), getattr(cfg, "vision_config", None)):
        for n in names:
            v = getattr(holder, n, None) if holder is not None else None
            if v is not None:
                return v
    return None


@functools.cache
def _build_cached(fam: Family, seed: int) -> TinyModel:
    import torch

    cfg = tiny_config(fam)
    cls = getattr(importlib.import_module(fam.module), fam.model_class)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(cfg).eval()
    vc = cfg.vision_config
    _fill_token_ids(cfg, fam)
    specials = {
        "image": _get(cfg, "image_token_id", "image_token_index"),
        "video": _get(cfg, "video_token_id", "video_token_index"),
        "start": _get(cfg, "vision_start_token_id", "image_start_token_id"),
        "end": _get(cfg, "vision_end_token_id", "image_end_token_id"),
        "video_start": _get(cfg, "vision_start_token_id", "video_start_token_id"),
        "video_end": _get(cfg, "vision_end_token_id", "video_end_token_id"),
    }
    for i, role in enumerate(("start", "end", "video_start", "video_end")):
        if specials[role] is None:  # a marker this release's model never reads: any plain spare id does
            specials[role] = SPARE_IDS + 32 + i
    chans = getattr(vc, "in_channels", None) or getattr(vc, "in_chans", 3)
    patch_dim = chans * vc.temporal_patch_size * vc.patch_size**2
    tiny = TinyModel(fam, model, cfg, specials, patch_dim, vc.spatial_merge_size)
    tiny.takes_token_types = "mm_token_type_ids" in inspect.signature(type(model).forward).parameters
    tiny.video_layout = _probe_video(tiny)
    return tiny


def build(fam: Family | str, seed: int = 0) -> TinyModel:
    """A tiny model of the family with seeded random weights (cached per process: treat as read-only)."""
    return _build_cached(family(fam) if isinstance(fam, str) else fam, seed)


def fresh(fam: Family | str, seed: int = 0) -> TinyModel:
    """A new copy of the tiny model (for placing on devices without touching the cached one)."""
    import copy

    base = build(fam, seed)
    out = copy.copy(base)
    out.model = copy.deepcopy(base.model)
    out.model.rope_deltas = None  # top-level attribute in older releases
    reset_state(out.model)
    return out


def reset_state(model: Any) -> None:
    """Forget rope_deltas kept from an earlier call (every module that stores them)."""
    for m in model.modules():
        if "rope_deltas" in vars(m):
            m.rope_deltas = None


# ---------------------------------------------------------------- inputs


def _vision_block(tiny: TinyModel, role: str, n: int) -> list[int]:
    s = tiny.specials
    start = s["start"] if role == "image" else s["video_start"]
    end = s["end"] if role == "image" else s["video_end"]
    return [start] + [s[role]] * n + [end]


def inputs(tiny: TinyModel, p: Prompt, video_layout: str | None = None) -> dict[str, Any]:
    """Tensors for one batch of prompts: input_ids, attention_mask and the vision inputs."""
    import torch

    g = torch.Generator().manual_seed(p.seed)
    low = 1  # id 0 doubles as padding
    high = SPARE_IDS  # plain text never hits a special token
    t, h, w = p.grid
    per_frame = h * w // tiny.merge**2
    extra: dict[str, Any] = {}
    rows = []
    for _ in range(p.batch):
        text = torch.randint(low, high, (p.length,), generator=g).tolist()
        cut = max(1, p.length // 2)
        if p.kind == "image":
            block = _vision_block(tiny, "image", per_frame)
        elif p.kind == "video":
            layout = video_layout or tiny.video_layout
            if layout is None:
                raise ValueError(f"{tiny.family}: video prompts are not supported by this build")
            if layout == "block":
                block = _vision_block(tiny, "video", t * per_frame)
            else:
                block = [tok for _ in range(t) for tok in _vision_block(tiny, "video", per_frame)]
        else:
            block = []
        rows.append(text[:cut] + block + text[cut:])
    if p.kind in ("image", "video"):
        frames = 1 if p.kind == "image" else t
        grid = torch.tensor([[frames, h, w]] * p.batch, dtype=torch.long)
        pixels = torch.randn(p.batch * frames * h * w, tiny.patch_dim, generator=g)
        key = "pixel_values" if p.kind == "image" else "pixel_values_videos"
        extra[key] = pixels
        extra["image_grid_thw" if p.kind == "image" else "video_grid_thw"] = grid
    # every row but the last is padded by p.pad; the last gets p.pad more real tokens instead
    rows[-1] = rows[-1] + torch.randint(low, high, (p.pad,), generator=g).tolist()
    width = len(rows[-1])
    ids = torch.zeros(p.batch, width, dtype=torch.long)
    types = torch.zeros(p.batch, width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        begin = width - len(row) if p.padding_side == "left" else 0
        ids[i, begin : begin + len(row)] = torch.tensor(row)
        mask[i, begin : begin + len(row)] = 1
        for j, tok in enumerate(row):
            types[i, begin + j] = 1 if tok == tiny.specials["image"] else 2 if tok == tiny.specials["video"] else 0
    if tiny.takes_token_types:  # newer releases need the processor's modality map for M-RoPE
        extra["mm_token_type_ids"] = types
    return {"input_ids": ids, "attention_mask": mask, **extra}


def _probe_video(tiny: TinyModel) -> str | None:
    """Which video placeholder layout the model accepts: one block, or a block per frame."""
    import torch

    p = Prompt(kind="video", grid=(2, 2 * tiny.merge, 2 * tiny.merge))
    for layout in ("block", "per-frame"):
        reset_state(tiny.model)
        try:
            with torch.no_grad():
                tiny.model(**inputs(tiny, p, video_layout=layout))
        except Exception as e:  # noqa: BLE001 - the wrong layout fails the model's own token/feature count check
            tiny.notes.append(f"video layout {layout}: {type(e).__name__}: {str(e)[:120]}")
            continue
        finally:
            reset_state(tiny.model)
        return layout
    return None
