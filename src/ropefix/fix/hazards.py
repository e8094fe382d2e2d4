"""The hazard catalogue: every class of device failure the suite can name, and which rule fixes it.

A failure is named by its innermost transformers frame: the file (relative to the package), the
function and the source line. The first class whose test matches wins, so specific classes come
first and ``device-mismatch:<function>`` catches the rest. Rules declare the hazard they fix
(``Rule.hazard``); a hazard no rule declares is reported as a finding, never hidden. Pure and
light: the suite imports it in the process that runs the tree under test.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Site:
    """Where a failure happened: the innermost frame inside the transformers package."""

    file: str  # "models/qwen2_vl/modeling_qwen2_vl.py", "generation/utils.py"
    function: str
    code: str  # the failing source line, stripped


@dataclass(frozen=True)
class Hazard:
    name: str
    summary: str
    test: Callable[[Site], bool]


def _in_model(s: Site) -> bool:
    return s.file.startswith("models/")


def _rope_index_fn(s: Site) -> bool:
    return bool(re.search(r"get_\w*rope_index|get_\w*position_ids|_get_\w*index", s.function))


_VISION_FNS = re.compile(
    r"rot_pos_emb|fast_pos_embed_interpolate|get_window_index|pos_embed|patch_embed|get_\w*features"
)
_MERGE = re.compile(r"masked_scatter|placeholder_mask|\b(?:image|video|audio|special_\w+)_mask\b|_embeds\[")
_ROTARY = re.compile(r"inv_freq|rotary|apply_\w*rotary|position_ids_expanded|\bfreqs\b")

_PREFILL_DELTAS = re.compile(r"\brope_deltas\s*=\s*rope_deltas\s*[-+]|\bdelta0\b")

CATALOGUE: tuple[Hazard, ...] = (
    Hazard(
        "prefill-deltas",
        "at prefill, the deltas get_rope_index returned (on the input ids' device) meet the attention mask's "
        "padding count (moved to the embeddings' device): fails with or without a later cache_position",
        lambda s: _in_model(s) and bool(_PREFILL_DELTAS.search(s.code)),
    ),
    Hazard(
        "rope-deltas",
        "stored mRoPE deltas meet cache_position (or positions made from it) on another device",
        lambda s: _in_model(s) and "delta" in s.code,
    ),
    Hazard(
        "rope-index-scatter",
        "get_rope_index indexes position ids with an attention-mask row from another device",
        lambda s: _in_model(s) and _rope_index_fn(s) and "attention_mask[" in s.code,
    ),
    Hazard(
        "rope-index",
        "get_rope_index mixes tensors it built (often on the CPU) with inputs on an accelerator",
        lambda s: _in_model(s) and _rope_index_fn(s),
    ),
    Hazard(
        "causal-mask",
        "the causal mask compares cache_position with a range built on another device",
        lambda s: (
            ("mask" in s.function and ("causal" in s.function or "cache_position" in s.code))
            or ("cache_position" in s.code and "arange" in s.code)
            or s.file in ("masking_utils.py", "modeling_attn_mask_utils.py")
        ),
    ),
    Hazard(
        "embedding-merge",
        "image/video/audio embeddings are merged into text embeddings with masks from another device",
        lambda s: _in_model(s) and bool(_MERGE.search(s.code) or "placeholder" in s.function),
    ),
    Hazard(
        "vision-positions",
        "the vision tower's position tables or windows are built on another device than its inputs",
        lambda s: _in_model(s) and bool(_VISION_FNS.search(s.function) or "grid_thw" in s.code),
    ),
    Hazard(
        "rotary",
        "rotary tables (inv_freq, cos/sin) meet position ids on another device",
        lambda s: bool(_ROTARY.search(s.code) or "rotary" in s.function.lower()),
    ),
    Hazard(
        "generation-utils",
        "generate's own bookkeeping mixes devices (generation/ in transformers)",
        lambda s: s.file.startswith("generation/"),
    ),
    Hazard(
        "position-ids",
        "position ids are built on one device and used on another",
        lambda s: "position_ids" in s.code or "position" in s.function,
    ),
    Hazard(
        "generation-kwargs",
        "the model's own generation hooks mix devices",
        lambda s: s.function in ("_update_model_kwargs_for_generation", "prepare_inputs_for_generation"),
    ),
)
NAMES = tuple(h.name for h in CATALOGUE)


def classify(site: Site) -> str:
    """The hazard a device failure at ``site`` belongs to; ``device-mismatch:<function>`` if none."""
    for hazard in CATALOGUE:
        if hazard.test(site):
            return hazard.name
    return f"device-mismatch:{site.function or 'unknown'}"


def summary(name: str) -> str:
    found = next((h for h in CATALOGUE if h.name == name), None)
    if found is not None:
        return found.summary
    if name.startswith("device-mismatch:"):
        return f"devices mixed in {name.split(':', 1)[1]} (no class of its own yet)"
    if name.startswith("error:"):
        return f"a {name.split(':', 1)[1]} that is not a device error"
    return name
