"""Tiny mRoPE vision-language models: random weights, tiny configs, valid prompts, no downloads.

Families are discovered in whatever ``transformers`` is importable: every model folder whose
modeling file mentions ``rope_deltas`` (stored on the model, or carried in the generation kwargs
as 4.45-4.46 do) is a candidate, and its ``*ForConditionalGeneration`` class whose config carries a
``vision_config`` is built (for omni models: the thinker). Config fields are shrunk by name where
present, keeping each field's type (a per-modality list stays a list, per-layer lists are cut to
the new depth), so nothing here lists releases. What a build accepts is probed on the model
itself: pixel layouts, placeholder layouts, timing and token-type arguments; ``TinyModel.kinds``
holds the prompt kinds that ran. A family that cannot be built tiny raises a ``RopefixError``
saying why, never a silent skip. Prompts and their tensors live in ``ropefix.prove.prompts``.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil
import re
from dataclasses import dataclass, field
from typing import Any

from ropefix.errors import RopefixError
from ropefix.prove.prompts import IO, KINDS, SPARE_IDS, VOCAB, Prompt, batch_to, inputs  # noqa: F401 - re-exported

HEAD_DIM = 24  # rotary width: its half (12), or a partial factor's share of it, splits evenly in 3 mRoPE sections
TEXT_LAYERS = 4  # enough decoder layers to split across two or three devices
VISION_LAYERS = 2

# Shrunk sizes by field name; applied to a (sub)config only where the field already exists (and is set).
_TEXT = {
    "hidden_size": 4 * HEAD_DIM,  # head_dim derived as hidden / heads is HEAD_DIM too
    "intermediate_size": 64,
    "num_hidden_layers": TEXT_LAYERS,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": HEAD_DIM,
    "max_window_layers": TEXT_LAYERS,
    "max_position_embeddings": 512,
    "moe_intermediate_size": 32,
    "shared_expert_intermediate_size": 32,
    "num_experts": 4,
    "num_experts_per_tok": 2,
    "n_routed_experts": 4,
    "n_shared_experts": 1,
    "moe_num_experts": 4,
    "moe_k": 2,
    "moe_num_shared_experts": 1,
    "first_k_dense_replace": 1,
    "n_group": 1,
    "topk_group": 1,
    "q_lora_rank": 32,
    "kv_lora_rank": 16,
    "qk_nope_head_dim": 16,
    "qk_rope_head_dim": HEAD_DIM,
    "qk_head_dim": 16 + HEAD_DIM,
    "v_head_dim": 16,
    "linear_key_head_dim": 16,
    "linear_value_head_dim": 16,
    "linear_num_key_heads": 2,
    "linear_num_value_heads": 4,
    "index_topk": 16,
    "index_head_dim": 2 * HEAD_DIM,  # holds a rotary slice of HEAD_DIM and a plain part
    "index_n_heads": 2,
    "hc_lowrank": 16,
    "ple_embed_dim": 64,
    "heads_per_ngram": 2,
    "ngram_vocab_size_base": 997,
    "split_ngram_parts": 4,
    "vision_vocab_size": 64,
}
# fields a default config leaves None that the model needs (the hub's config.json sets them)
_TEXT_IF_NONE = {
    "head_dim": HEAD_DIM,
    "indexer_n_heads": 2,
    "indexer_kv_heads": 1,
    "indexer_head_dim": 2 * HEAD_DIM,
    "indexer_budget": 16,
    "indexer_compress_ratio": 4,
}
_VISION = {
    "depth": VISION_LAYERS,
    "num_hidden_layers": VISION_LAYERS,
    "embed_dim": 32,
    "num_heads": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "intermediate_size": 64,
    "fullatt_block_indexes": [1],
    "deepstack_visual_indexes": [0],
    "num_position_embeddings": 64,
    "insert_layer_id": 0,
}
_AUDIO = {
    "encoder_layers": 1,
    "num_hidden_layers": 1,
    "encoder_attention_heads": 2,
    "encoder_ffn_dim": 32,
    "d_model": 16,
    "output_dim": 4 * HEAD_DIM,  # audio features feed the text model: its hidden size
    "downsample_hidden_size": 16,
}
_VQ = {"embed_dim": 32, "num_embeddings": 64, "latent_channels": 32, "hidden_size": 32}
_TABLES = {"text": _TEXT, "vision": _VISION, "audio": _AUDIO, "vq": _VQ}
# config reads of special-token ids (`config.image_token_id`, `config.im_start_id`, ...)
_TOKEN_READ = re.compile(r"config\.(\w+_token_(?:id|index)|\w+_start_id|\w+_end_id|\w*newline_id)\b")
# roles of special tokens -> config names, first found wins
_ROLES = {
    "image": ("image_token_id", "image_token_index"),
    "video": ("video_token_id", "video_token_index"),
    "audio": ("audio_token_id", "audio_token_index"),
    "image_start": ("vision_start_token_id", "image_start_token_id", "im_start_id", "image_start_id"),
    "image_end": ("vision_end_token_id", "image_end_token_id", "im_end_id", "image_end_id"),
    "video_start": ("video_start_token_id", "vision_start_token_id", "im_start_id", "image_start_id"),
    "video_end": ("video_end_token_id", "vision_end_token_id", "im_end_id", "image_end_id"),
    "audio_start": ("audio_start_token_id", "audio_bos_token_id"),
    "audio_end": ("audio_end_token_id", "audio_eos_token_id"),
}
# video placeholder layouts; the processor's source says which one its release writes
_VIDEO_LAYOUTS = ("block", "per-frame")
# each frame's placeholders written apart ("for frame_idx in range(num_frames)", tokens counted per frame)
_FRAME_LOOP = re.compile(r"for \w*frame\w* in |tokens_per_frame|frame_seqlen")
# each frame written as an image block inside the video ("<|begin_of_image|>{self.image_token}...")
_FRAMES_AS_IMAGES = re.compile(r"frame\w*\s*\+?=\s*f[\"'][^\n]*\{self\.image_token\b|def replace_frame_token_id")
_PIXEL_FORMATS = ("flat", "patches", "navit")


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
    specials: dict[str, int]  # role -> token id: image, video, audio, <kind>_start, <kind>_end (start/end: image's)
    patch_dim: int  # width of one row of flat pixel_values
    merge: int  # spatial merge size: grid heights and widths are multiples of it
    video_layout: str | None = None  # block | per-frame | frames-as-images; None: video prompts unsupported
    takes_token_types: bool = False  # forward accepts mm_token_type_ids
    notes: list[str] = field(default_factory=list)  # why a kind is missing, what the probes tried
    kinds: tuple[str, ...] = ("text",)  # prompt kinds this build accepts (subset of KINDS, probed)
    io: IO = field(default_factory=IO)
    frames: int = 1  # video grids' t is a multiple of this (temporal merge)
    max_batch: int | None = None  # rows a prompt may have (None: any); 1 where the release refuses batches

    def count_features(self, kind: str, grid: tuple[int, ...]) -> int:
        """Rows the model's own encoder yields for one item: the placeholder count a processor writes."""
        return _count_features(self, kind, grid)


def _modeling(name: str) -> str:
    return f"transformers.models.{name}.modeling_{name}"


def _source(module: str) -> str:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return ""
    try:
        with open(spec.origin, encoding="utf-8") as fh:
            return fh.read()
    except OSError:
        return ""


def discover() -> tuple[list[Family], list[Skipped]]:
    """Families in the importable transformers whose modeling code handles rope_deltas (one class each)."""
    import transformers.models as tm

    found: list[Family] = []
    skipped: list[Skipped] = []
    for info in sorted(pkgutil.iter_modules(tm.__path__), key=lambda i: i.name):
        if "rope_deltas" not in _source(_modeling(info.name)):
            continue
        try:
            mod = importlib.import_module(_modeling(info.name))
        except Exception as e:  # noqa: BLE001 - a model needing an optional dependency is reported, with why
            skipped.append(Skipped(info.name, f"import failed: {type(e).__name__}: {e}"))
            continue
        picked = _pick_class(info.name, mod)
        if isinstance(picked, Family):
            found.append(picked)
        else:
            skipped.append(Skipped(info.name, picked))
    return found, skipped


def _pick_class(name: str, mod: Any) -> Family | str:
    """The module's own ``*ForConditionalGeneration`` with a vision config; aliases and subclasses dropped.

    Returns the reason instead when there is none (a config class that refuses its own defaults says so).
    """
    out = []
    refused = []
    for cls_name, cls in inspect.getmembers(mod, inspect.isclass):
        if cls.__module__ != mod.__name__ or not cls_name.endswith("ForConditionalGeneration"):
            continue
        cfg_cls = getattr(cls, "config_class", None)
        if cfg_cls is None:
            continue
        try:
            has_vision = "vision_config" in cfg_cls().to_dict()
        except Exception as e:  # noqa: BLE001 - a config that cannot be built: said in the reason
            refused.append(f"{cfg_cls.__name__}() fails: {type(e).__name__}: {_short(e)}")
            continue
        if has_vision and cls not in out:
            out.append(cls)
    # a deprecated alias subclasses the real class: keep the base
    out = [c for c in out if not any(o is not c and issubclass(c, o) for o in out)]
    if not out:
        if refused:
            return "the config class refuses its own defaults, so no model can be built: " + refused[0]
        return "no *ForConditionalGeneration class with a vision_config"
    cls = min(out, key=lambda c: c.__name__)
    return Family(name, cls.__name__, cls.config_class.__name__, mod.__name__)


def family(name: str) -> Family:
    """The family for a model folder name (``qwen2_vl``) or ``folder:Class``."""
    families, skipped = _discovered()
    for f in families:
        if name in (f.name, str(f), f.model_class):
            return f
    why = next((s.reason for s in skipped if s.name == name), None)
    known = ", ".join(sorted({f.name for f in families})) or "none"
    raise RopefixError(
        f"No tiny model for {name!r} in this transformers" + (f" ({why})" if why else "") + f". Known here: {known}."
    )


@functools.cache
def _discovered() -> tuple[list[Family], list[Skipped]]:
    return discover()


# ---------------------------------------------------------------- configs


def _role(key: str) -> str:
    for role in ("vision", "audio", "text", "vq"):
        if role in key:
            return role
    return ""


def _set(node: dict[str, Any], key: str, value: Any) -> None:
    """Shrink one field, keeping its type: a list of per-modality sizes stays a list of that length."""
    old = node[key]
    if old is None:
        return
    if isinstance(old, list) and not isinstance(value, list):
        value = [value] * len(old)
    node[key] = list(value) if isinstance(value, list) else value


def _cut_per_layer(node: dict[str, Any], old_depth: Any, new_depth: int) -> None:
    """Per-layer lists follow the new depth; lists of layer indexes keep only indexes that still exist."""
    for k, v in list(node.items()):
        if not isinstance(v, list) or not v:
            continue
        if isinstance(old_depth, int) and len(v) == old_depth and old_depth > new_depth:
            node[k] = v[:new_depth]
        elif k.endswith(("_layers", "_indexes", "_indices", "_layer_ids")) and all(isinstance(x, int) for x in v):
            node[k] = [x for x in v if x < new_depth]


def _rotary_half(node: dict[str, Any]) -> int:
    """Half the rotary width the text model will use: its rope head width times the partial factor, over 2."""
    width = node.get("qk_rope_head_dim") or node.get("head_dim")
    if not isinstance(width, int):
        width = node.get("hidden_size", 0) // max(1, node.get("num_attention_heads") or 1)
    factor = node.get("partial_rotary_factor")
    for rope in _rope_dicts(node):
        factor = rope.get("partial_rotary_factor", factor)
    if isinstance(factor, float) and 0 < factor < 1 and not node.get("qk_rope_head_dim"):
        width = int(width * factor)
    return width // 2


def _rope_dicts(node: dict[str, Any]) -> list[dict[str, Any]]:
    """The rope parameter dicts of a text node (one, or one per layer type)."""
    out = []
    for key in ("rope_parameters", "rope_scaling"):
        rope = node.get(key)
        if isinstance(rope, dict):
            nested = [v for v in rope.values() if isinstance(v, dict)]
            out.extend(nested if nested and all(isinstance(v, dict) for v in rope.values()) else [rope])
    return out


def _shrink_rope(node: dict[str, Any], per_layer_type: bool) -> None:
    """Every mrope_section splits the tiny rotary half-width evenly (valid whatever order a model reads
    its sections in, and for ernie, which needs h and w equal); a missing one is added, since models fall
    back to sections sized for their real head width (hub configs always set them)."""
    rope_key = "rope_parameters" if "rope_parameters" in node else "rope_scaling" if "rope_scaling" in node else None
    if per_layer_type and rope_key and not node.get(rope_key) and node.get("layer_types"):
        node[rope_key] = {
            lt: {"rope_type": "default", "rope_theta": 10000.0} for lt in dict.fromkeys(node["layer_types"])
        }
    if rope_key and not _rope_dicts(node):  # 4.4x: rope_theta is a field of its own, "type" the legacy key
        node[rope_key] = (
            {"rope_type": "default", "rope_theta": 10000.0}
            if rope_key == "rope_parameters"
            else {"rope_type": "default", "type": "default"}
        )
    half = _rotary_half(node)
    for rope in _rope_dicts(node):
        old = rope.get("mrope_section")
        n = len(old) if isinstance(old, list) and old else 3
        rope["mrope_section"] = [half // n] * n


def _shrink(node: dict[str, Any], role: str, source: str) -> dict[str, Any]:
    """Shrink one config dict in place by field name; recurse into sub-configs."""
    if role == "" and "vocab_size" in node and "num_hidden_layers" in node:
        role = "text"  # a flat config (4.4x): the text fields live at the top
    table = _TABLES.get(role, {})
    depth_key = "depth" if role == "vision" and "depth" in node else "num_hidden_layers"
    old_depth = node.get(depth_key)
    if role == "text":
        node["vocab_size"] = VOCAB
    for k, v in table.items():
        if k in node:
            _set(node, k, v)
    if role == "text":
        for k, v in _TEXT_IF_NONE.items():
            if k in node and node[k] is None:
                node[k] = v
    if role in ("text", "vision") and depth_key in node:
        _cut_per_layer(node, old_depth, node[depth_key])
    if role == "text":
        _shrink_rope(node, "rope_parameters[layer_type]" in source)
    if role == "vision":
        # the vision output feeds the text model: its output width must be the text hidden size
        if "out_hidden_size" in node:
            node["hidden_size"] = 32
            node["out_hidden_size"] = _TEXT["hidden_size"]
        elif "embed_dim" in node:
            node["hidden_size"] = _TEXT["hidden_size"]
        elif "hidden_size" in node:
            node["hidden_size"] = 32
    for k, v in list(node.items()):
        if isinstance(k, str) and isinstance(v, dict) and k.endswith("_config"):
            _shrink(v, _role(k), source)
    return node


def _remap_tokens(node: dict[str, Any], mapping: dict[int, int]) -> None:
    """Move special token ids to the top of the tiny vocabulary, consistently.

    Multimodal markers always move there (a small id such as 67 would collide with the random text);
    pad/bos/eos-like ids move only when they fall outside the vocabulary.
    """
    for k, v in list(node.items()):
        if not isinstance(k, str) or k in ("id2label", "label2id"):
            continue
        if isinstance(v, dict):
            _remap_tokens(v, mapping)
        elif _is_token_key(k) and isinstance(v, int) and not isinstance(v, bool) and _moves(k, v):
            node[k] = mapping.setdefault(v, VOCAB - 1 - len(mapping))
        elif k.endswith("_token_id") and isinstance(v, list):
            node[k] = [mapping.setdefault(x, VOCAB - 1 - len(mapping)) if _moves(k, x) else x for x in v]


def _moves(key: str, value: int) -> bool:
    if value >= VOCAB:
        return True
    plain = key.startswith(("pad_", "bos_", "eos_", "sep_", "eod_", "decoder_start_", "forced_", "unk_"))
    return not plain and not SPARE_IDS <= value < VOCAB


def _is_token_key(k: str) -> bool:
    return k.endswith(("_token_id", "_token_index")) or bool(re.fullmatch(r"\w+_(start|end)_id|\w*newline_id", k))


def _config_class(fam: Family) -> Any:
    mod = importlib.import_module(fam.module)
    return getattr(mod, fam.config_class, None) or getattr(
        importlib.import_module(fam.module.replace(".modeling_", ".configuration_")), fam.config_class
    )


def tiny_config(fam: Family) -> Any:
    """The family's default config, shrunk; every special-token id the modeling code reads is set."""
    cfg_cls = _config_class(fam)
    source = _source(fam.module)
    d = cfg_cls().to_dict()
    for k in ("transformers_version", "architectures", "_name_or_path"):
        d.pop(k, None)
    _shrink(d, "text" if "text_config" not in d and "vocab_size" in d else "", source)
    _remap_tokens(d, {})
    d["tie_word_embeddings"] = False
    try:
        cfg = cfg_cls(**{k: v for k, v in d.items() if k != "model_type"})
    except Exception as e:
        raise RopefixError(f"{fam}: the shrunk config is refused: {type(e).__name__}: {_short(e)}") from e
    # sub-models may come from other folders (glm46v's text model is glm4v's): their reads count too
    modules = dict.fromkeys(type(c).__module__.replace(".configuration_", ".modeling_") for c in _subconfigs(cfg))
    _fill_token_ids(cfg, source + "".join(_source(m) for m in modules if m != fam.module))
    return cfg


def _subconfigs(cfg: Any) -> list[Any]:
    out = [cfg]
    for k, v in list(vars(cfg).items()):
        if k.endswith("_config") and v is not None and hasattr(v, "to_dict"):
            out.append(v)
    return out


def _fill_token_ids(cfg: Any, source: str) -> None:
    """Give the config every special-token id its modeling code reads but it lacks.

    Some releases and sub-models (4.49's Qwen2-VL, omni thinkers) read token ids that only the
    hub's config.json or a parent config sets; each gets its own spare id of the tiny vocabulary.
    A sub-config lacking an attribute its parent has gets the parent's value.
    """
    used = sorted(set(_TOKEN_READ.findall(source)))
    spare = iter(range(SPARE_IDS, VOCAB))
    taken = set(_token_values(cfg))
    for name in used:
        if _get(cfg, name) is None and not (name == "pad_token_id" and hasattr(cfg, name)):
            free = next(i for i in spare if i not in taken)
            setattr(cfg, name, free)
            taken.add(free)
        for sub in _subconfigs(cfg)[1:]:
            if not hasattr(sub, name):
                setattr(sub, name, getattr(cfg, name, None))


def _token_values(cfg: Any) -> list[int]:
    out = []
    for holder in _subconfigs(cfg):
        for k, v in vars(holder).items():
            if isinstance(k, str) and _is_token_key(k) and isinstance(v, int):
                out.append(v)
    return out


def _get(cfg: Any, *names: str) -> Any:
    """The first of ``names`` set on the config or its sub-configs."""
    for holder in _subconfigs(cfg):
        for n in names:
            v = getattr(holder, n, None)
            if v is not None:
                return v
    return None


# ---------------------------------------------------------------- building and probing


def _short(e: BaseException, n: int = 200) -> str:
    return " ".join(str(e).split())[:n]


@functools.cache
def _build_cached(fam: Family, seed: int) -> TinyModel:
    import torch

    cfg = tiny_config(fam)
    cls = getattr(importlib.import_module(fam.module), fam.model_class)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model = cls(cfg).eval()
        except Exception as e:
            raise RopefixError(
                f"{fam}: the model cannot be built from its tiny config: {type(e).__name__}: {_short(e)}"
            ) from e
    specials = {role: _get(cfg, *names) for role, names in _ROLES.items()}
    for i, role in enumerate(("image_start", "image_end", "video_start", "video_end", "audio_start", "audio_end")):
        if specials[role] is None:  # a marker this release's model never reads: any plain spare id does
            specials[role] = SPARE_IDS + 32 + i
    specials["start"], specials["end"] = specials["image_start"], specials["image_end"]
    vc = cfg.vision_config
    merge = getattr(vc, "spatial_merge_size", None) or 1
    params = frozenset(inspect.signature(type(model).forward).parameters)
    tiny = TinyModel(fam, model, cfg, specials, 0, merge, io=IO(params=params))
    tiny.takes_token_types = "mm_token_type_ids" in params
    tiny.frames = getattr(vc, "temporal_merge_size", None) or 1
    _probe(tiny)
    return tiny


def build(fam: Family | str, seed: int = 0) -> TinyModel:
    """A tiny model of the family with seeded random weights (cached per process: treat as read-only).

    Raises ``RopefixError`` with the reason when the family cannot be built or cannot run a text prompt.
    """
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


def _run(tiny: TinyModel, p: Prompt) -> str | None:
    """The error a forward on ``p`` raises, or None when it runs and reads the prompt's features.

    Releases without a placeholder-count check run any layout (``masked_scatter`` takes what fits), so a
    multimodal prompt must also change the logits when only its pixels or audio features change.
    """
    import torch

    reset_state(tiny.model)
    try:
        with torch.no_grad():
            x = inputs(tiny, p)
            a = _logits(tiny, x)
            if p.kind != "text":
                g = torch.Generator().manual_seed(p.seed + 1)
                other = {k: torch.randn(v.shape, generator=g) if _is_feature(k, v) else v for k, v in x.items()}
                reset_state(tiny.model)
                if torch.equal(a, _logits(tiny, other)):
                    return f"the model ignores the {p.kind} features in this layout"
    except Exception as e:  # noqa: BLE001 - a probe's failure is the answer it gives
        return f"{type(e).__name__}: {_short(e, 160)}"
    finally:
        reset_state(tiny.model)
    return None


def _logits(tiny: TinyModel, x: dict[str, Any]) -> Any:
    """A forward's logits; where the plain forward (no cache_position, as in training) fails but a
    prefill with cache_position runs, the prefill's: the model is still buildable (a patched tree may
    break the plain path, which the suite must then see fail per path), and the failure is noted."""
    import torch

    try:
        return tiny.model(**x).logits
    except Exception as plain:  # retried as generation's prefill, re-raised if that fails too
        params = inspect.signature(type(tiny.model).forward).parameters
        if "cache_position" not in params and not any(q.kind is q.VAR_KEYWORD for q in params.values()):
            raise
        reset_state(tiny.model)
        try:
            out = tiny.model(**x, cache_position=torch.arange(x["input_ids"].shape[1])).logits
        except Exception:  # noqa: BLE001 - the plain forward's error is the one to report
            raise plain from None
        note = f"forward without cache_position fails: {type(plain).__name__}: {_short(plain, 120)}"
        if note not in tiny.notes:
            tiny.notes.append(note)
        return out


def _is_feature(key: str, value: Any) -> bool:
    return key in ("pixel_values", "pixel_values_videos", "input_features") and value.is_floating_point()


def _probe(tiny: TinyModel) -> None:
    """Find what the model accepts: text, then each modality with the pixel/placeholder layouts that run."""
    io = tiny.io
    io.timing_key = next((k for k in sorted(io.params) if "second_per_grid" in k), None)
    io.timing_list = io.timing_key is not None and _returns_lists(_processor_source(tiny))
    io.temporal_patch = getattr(tiny.config.vision_config, "temporal_patch_size", None) or 1
    ac = getattr(tiny.config, "audio_config", None)
    io.mel_bins = getattr(ac, "num_mel_bins", None) or 128
    tiny.kinds = KINDS  # let inputs() write every kind while probing
    _probe_text(tiny)
    kinds = ["text"]
    if "pixel_values" in io.params:
        if _probe_pixels(tiny):
            kinds.append("image")
    else:
        tiny.notes.append("image: the forward takes no pixel_values")
    if "pixel_values_videos" in io.params:
        if _probe_video(tiny, keep_format="image" in kinds):
            kinds.append("video")
    else:
        tiny.notes.append("video: the forward takes no pixel_values_videos")
    if "image" in kinds and "video" in kinds:
        err = _run(
            tiny, Prompt("image+video", batch=_rows(tiny), pad=_rows(tiny) - 1, grid=(1, tiny.merge, tiny.merge))
        )
        if err is None:
            kinds.append("image+video")
        else:
            tiny.notes.append(f"image+video: {err}")
    if "input_features" in io.params and ac is not None:
        err = _run(tiny, Prompt("audio", batch=_rows(tiny), pad=_rows(tiny) - 1))
        if err is None:
            kinds.append("audio")
        else:
            tiny.notes.append(f"audio: {err}")
    elif "input_features" not in io.params:
        tiny.notes.append("audio: the forward takes no input_features")
    tiny.kinds = tuple(k for k in KINDS if k in kinds)
    tiny.video_layout = io.video_layout
    tiny.patch_dim = io.patch_dim


def _rows(tiny: TinyModel) -> int:
    return min(2, tiny.max_batch or 2)


def _probe_text(tiny: TinyModel) -> None:
    """Text prompts must run. An image generator (glm_image) takes its target grids with every prompt, as
    its processor writes them; a release whose processor refuses batches keeps ``max_batch`` 1."""
    io = tiny.io
    io.generator = "images_per_sample" in io.params
    errors = []
    for generator, batch in ((io.generator, 2), (not io.generator, 2), (io.generator, 1), (not io.generator, 1)):
        io.generator = generator
        err = _run(tiny, Prompt("text", batch=batch, pad=batch - 1))
        if err is None:
            if batch == 1:
                tiny.max_batch = 1
                tiny.notes.append(f"batch: prompts of 2 rows fail: {errors[0]}")
            return
        errors.append(err)
    raise RopefixError(f"{tiny.family}: a text prompt fails on the tiny model: {errors[0]}")


def _probe_video(tiny: TinyModel, keep_format: bool) -> bool:
    """The video layout that runs, in the processor's order. The processor's own layout is kept even if
    only single-frame videos run (a release whose multi-frame videos fail on the CPU: noted); without a
    processor to say, any layout running two-patch videos wins over one running a single frame."""
    io, m = tiny.io, tiny.merge
    layouts, authoritative = _video_layouts(tiny)
    stages = [(layouts[:1], 2), (layouts[:1], 1), (layouts[1:], 2), (layouts[1:], 1)]
    if not authoritative:
        stages = [(layouts, 2), (layouts, 1)]
    fmts = [io.pixel_format] if keep_format else list(_PIXEL_FORMATS)
    rows = _rows(tiny)
    multi_frame: dict[str, str] = {}  # layout -> why two-patch videos fail
    for candidates, frames in stages:
        for fmt, layout, rule in ((f, lay, r) for f in fmts for lay in candidates for r in ("formula", "features")):
            io.pixel_format, io.video_layout, io.count_rule["video"] = fmt, layout, rule
            _set_patch(tiny)
            err = _run(tiny, Prompt("video", batch=rows, pad=rows - 1, grid=(frames, m, 2 * m)))
            if err is None:
                if frames == 1:
                    tiny.notes.append(
                        f"video ({layout}): single-frame videos run, two-patch ones fail: {multi_frame[layout]}"
                    )
                return True
            if frames == 2:
                multi_frame.setdefault(layout, err)
                tiny.notes.append(f"video layout {layout} ({fmt}, {rule} count): {err}")
    io.video_layout = None
    return False


def _video_layouts(tiny: TinyModel) -> tuple[tuple[str, ...], bool]:
    """Video placeholder layouts to try, in order, and whether the first is the processor's own: frames
    written as image blocks (glm4v) is the only candidate where the processor writes that; block and
    per-frame may both run (a rope index accepts any runs of video tokens), so a frame loop puts
    per-frame first. Without a processor (none in the folder, none mapped): every layout, loosest first."""
    source = _processor_source(tiny)
    if not source:
        return (*_VIDEO_LAYOUTS, "frames-as-images"), False
    if _FRAMES_AS_IMAGES.search(source):
        return ("frames-as-images",), True
    if _FRAME_LOOP.search(source):
        return ("per-frame", "block"), True
    return _VIDEO_LAYOUTS, True


def _returns_lists(source: str) -> bool:
    """Whether the processor returns a ``BatchFeature`` without ``tensor_type`` (4.49's Qwen2.5-VL): the
    values it added as Python lists (the per-grid video timing) then reach the model as lists."""
    for m in re.finditer(r"return BatchFeature\(", source):
        depth, i = 1, m.end()
        while depth and i < len(source):
            depth += {"(": 1, ")": -1}.get(source[i], 0)
            i += 1
        if "tensor_type" not in source[m.end() : i]:
            return True
    return False


def _processor_source(tiny: TinyModel) -> str:
    """The source of the processor class the release maps this model type to (else the folder's own)."""
    fam = tiny.family
    own = _source(f"transformers.models.{fam.name}.processing_{fam.name}")
    try:
        from transformers.models.auto import processing_auto

        name = processing_auto.PROCESSOR_MAPPING_NAMES.get(getattr(tiny.config, "model_type", ""))
        cls = processing_auto.processor_class_from_name(name) if isinstance(name, str) else None
        return inspect.getsource(inspect.getmodule(cls)) if cls is not None else own
    except Exception:  # noqa: BLE001 - an older auto module: the folder's own processor
        return own


def _probe_pixels(tiny: TinyModel) -> bool:
    """The pixel layout and grid granularity images run with; the smallest grid a prompt may draw must run."""
    given = getattr(tiny.config.vision_config, "spatial_merge_size", None)
    for fmt in _PIXEL_FORMATS:
        tiny.io.pixel_format = fmt
        _set_patch(tiny)
        for m, rule in ((m, r) for m in ([given] if given else [1, 2, 4]) for r in ("formula", "features")):
            tiny.merge, tiny.io.count_rule["image"] = m, rule  # no merge size in the config: find the grid step
            err = _run(tiny, Prompt("image", batch=_rows(tiny), pad=_rows(tiny) - 1, grid=(1, m, m)))
            if err is None:
                return True
            tiny.notes.append(f"image pixels {fmt}, grid step {m}, {rule} count: {err}")
    tiny.io.pixel_format = "flat"
    tiny.merge = given or 1
    return False


def _vision_tower(model: Any) -> Any:
    for name, mod in model.named_modules():
        if name.rsplit(".", 1)[-1] in ("visual", "vision_tower", "vision_model", "vision_encoder"):
            return mod
    return None


def _set_patch(tiny: TinyModel) -> None:
    """Patch width, channels and size from the vision tower's first layer (its patch embedding)."""
    import torch

    io = tiny.io
    vc = tiny.config.vision_config
    io.channels = getattr(vc, "in_channels", None) or getattr(vc, "in_chans", None) or getattr(vc, "num_channels", 3)
    io.patch = getattr(vc, "patch_size", None) or 14
    io.patch_dim = io.channels * (getattr(vc, "temporal_patch_size", None) or 1) * io.patch**2
    tower = _vision_tower(tiny.model)
    layers = [
        (name, mod)
        for name, mod in (tower.named_modules() if tower is not None else ())
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear))
    ]
    # the patch embedding: named so, else the tower's first convolution, else its first linear layer
    named = [lm for lm in layers if "patch" in lm[0]]
    convs = [lm for lm in layers if not isinstance(lm[1], torch.nn.Linear)]
    for _, mod in (named or convs or layers)[:1]:
        if isinstance(mod, torch.nn.Linear):
            io.patch_dim = mod.in_features
        else:
            io.channels = mod.in_channels
            io.patch = mod.kernel_size[-1]
            io.patch_dim = mod.in_channels * int(torch.tensor(mod.kernel_size).prod())


def _feature_rows(out: Any) -> int:
    import torch

    if getattr(out, "pooler_output", None) is not None:
        out = out.pooler_output
    elif getattr(out, "last_hidden_state", None) is not None:
        out = out.last_hidden_state
    if isinstance(out, torch.Tensor):
        return out.numel() // out.shape[-1]
    if isinstance(out, (tuple, list)):
        if len(out) == 2 and isinstance(out[1], list):  # (embeddings, deepstack embeddings per layer)
            return _feature_rows(out[0])
        return sum(_feature_rows(x) for x in out)
    raise TypeError(f"cannot count feature rows in {type(out).__name__}")


def _count_features(tiny: TinyModel, kind: str, grid: tuple[int, ...]) -> int:
    """Rows the model's encoder gives one item; the processors' formula where the model has no getter."""
    return _encoder_rows(tiny, kind, grid)


def _encoder_rows(tiny: TinyModel, kind: str, grid: tuple[int, ...]) -> int:
    import torch

    from ropefix.prove import prompts

    model = tiny.model
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        if kind == "audio":
            (n,) = grid
            feats = torch.randn(1, tiny.io.mel_bins, n, generator=g)
            mask = torch.ones(1, n, dtype=torch.long)
            return _feature_rows(model.get_audio_features(feats, mask))
        getter = getattr(model, f"get_{kind}_features", None)
        if getter is None:
            t, h, w = grid
            return t * h * w // tiny.merge**2
        pixels = prompts._pixels(tiny, g, [grid])
        return _feature_rows(getter(pixels, prompts._grid_tensor(tiny, [grid])))
