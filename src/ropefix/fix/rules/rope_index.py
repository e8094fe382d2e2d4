"""``rope-index-scatter``: inside ``get_rope_index``, index a tensor with a mask on that tensor's device.

Proven by the regression suite (4.49.0, Qwen2-VL, layout "vision-apart", inputs on the CPU, image
prompt): after the deltas are fixed, prefill fails at
``position_ids[..., i, attention_mask[i] == 1] = ...``: the attention mask was moved to the
embeddings' device while ``position_ids`` sits on the input ids' device. Site: a subscript ``T[...]``
in ``get_rope_index`` whose index compares ``attention_mask[...]``; the fix reads
``attention_mask[...].to(T.device)`` there (the sibling line for ``input_ids`` upstream already does).
"""

from __future__ import annotations

import re

import libcst as cst

from ropefix.fix import cst as c
from ropefix.fix.rules.base import AFFECTED, FIXED, Rule, RuleTransformer

MASK = "attention_mask"


def _mask_side(node: cst.BaseExpression) -> cst.BaseExpression | None:
    """The ``attention_mask[...]`` (maybe ``.to(...)``-moved) compared in an index element."""
    if isinstance(node, cst.Comparison) and len(node.comparisons) == 1:
        left = node.left
        inner = left.func.value if isinstance(left, cst.Call) and isinstance(left.func, cst.Attribute) else left
        if isinstance(inner, cst.Subscript) and c.dotted(inner.value) == MASK:
            return left
    return None


class RopeIndexTransformer(RuleTransformer):
    def leave_Subscript(self, original_node: cst.Subscript, updated_node: cst.Subscript) -> cst.BaseExpression:
        fn = self.function()
        owner = c.dotted(original_node.value)
        if fn is None or not fn.name.value.startswith("get_rope_index") or owner is None:
            return updated_node
        elements = list(updated_node.slice)
        hit = False
        for k, el in enumerate(original_node.slice):
            if not isinstance(el.slice, cst.Index):
                continue
            side = _mask_side(el.slice.value)
            if side is None:
                continue
            if isinstance(side, cst.Call):  # already moved somewhere: upstream's own choice
                self.report(original_node, "index-mask-aligned", FIXED, "the mask row is moved before indexing")
                continue
            why = f"an attention-mask row (on the embeddings' device) indexes {owner} (on the input ids' device)"
            if self.report(original_node, "index-mask-unaligned", AFFECTED, why):
                hit = True
                comparison = elements[k].slice.value  # type: ignore[attr-defined]
                moved = comparison.with_changes(left=c.to_device_of(comparison.left, owner))
                elements[k] = elements[k].with_changes(slice=elements[k].slice.with_changes(value=moved))
        return updated_node.with_changes(slice=elements) if hit and self.fix else updated_node


# an index compared on a mask row, moved or not: ``[..., attention_mask[i] == 1]``
_COMPARED_ROW = re.compile(MASK + r"\[[^\]\n]*\](?:\.to\([^)\n]*\))?\s*==")


def _hint(text: str) -> bool:
    return "get_rope_index" in text and _COMPARED_ROW.search(text) is not None


RULE = Rule(
    hazard="rope-index-scatter",
    name="rope-index-scatter",
    summary="in get_rope_index, index tensors with attention-mask rows moved to the indexed tensor's device",
    needles=("def get_rope_index",),
    transformer=RopeIndexTransformer,
    hint=_hint,
    requires=("rope_deltas",),
    context=(f"{MASK}[",),
)
