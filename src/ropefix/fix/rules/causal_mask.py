"""``causal-mask``: compare ``cache_position`` with a range on the range's device.

Proven by the regression suite (4.49.0, Qwen2-VL and Qwen2.5-VL, layout "vision-apart", inputs on
the CPU): once the deltas are fixed, decoding fails in the model's own
``_prepare_4d_causal_attention_mask_with_cache_position``, where
``torch.arange(n, device=device) > cache_position.reshape(-1, 1)`` mixes the embeddings' device with
``cache_position``'s. Site: a comparison whose left side is ``torch.arange(..., device=D)`` and whose
right side reads ``cache_position``; the fix reads ``cache_position.to(D)`` there (safe: the
comparison already required cache_position to be a tensor). Only files that hold mRoPE deltas.
"""

from __future__ import annotations

import re

import libcst as cst

from ropefix.fix import cst as c
from ropefix.fix.rules.base import AFFECTED, FIXED, Rule, RuleTransformer

CP = "cache_position"


def _arange_device(node: cst.BaseExpression) -> cst.BaseExpression | None:
    if isinstance(node, cst.Call) and c.dotted(node.func) in ("torch.arange", "arange"):
        for arg in node.args:
            if arg.keyword is not None and arg.keyword.value == "device":
                return arg.value
    return None


class _Move(cst.CSTTransformer):
    """``cache_position`` -> ``cache_position.to(device)``, except where it is already moved."""

    def __init__(self, device: cst.BaseExpression) -> None:
        super().__init__()
        self.device = device
        self.moved = 0

    def visit_Call(self, node: cst.Call) -> bool:
        return not (isinstance(node.func, cst.Attribute) and node.func.attr.value == "to")

    def leave_Name(self, original_node: cst.Name, updated_node: cst.Name) -> cst.BaseExpression:
        if original_node.value != CP:
            return updated_node
        self.moved += 1
        return cst.Call(func=cst.Attribute(value=updated_node, attr=cst.Name("to")), args=[cst.Arg(self.device)])


class CausalMaskTransformer(RuleTransformer):
    def leave_Comparison(self, original_node: cst.Comparison, updated_node: cst.Comparison) -> cst.BaseExpression:
        device = _arange_device(original_node.left)
        if device is None or len(original_node.comparisons) != 1:
            return updated_node
        right = original_node.comparisons[0].comparator
        if not _reads(right):
            return updated_node
        if c.dotted(device) == f"{CP}.device":  # the range is built on cache_position's own device
            self.report(
                original_node, "mask-range-on-cache-device", FIXED, "the range is built on cache_position's device"
            )
            return updated_node
        probe = _Move(device)
        moved = right.visit(probe)
        if not probe.moved:
            self.report(original_node, "mask-range-aligned", FIXED, "cache_position is moved to the range's device")
            return updated_node
        why = f"a range built on `{c.code(device)}` compared with cache_position (on the inputs' device)"
        if not self.report(original_node, "mask-range-vs-cache-position", AFFECTED, why):
            return updated_node
        target = updated_node.comparisons[0].with_changes(comparator=moved)
        return updated_node.with_changes(comparisons=[target])


def _reads(node: cst.CSTNode) -> bool:
    """Whether ``cache_position`` appears under ``node`` at all."""
    seen = []

    class _Find(cst.CSTVisitor):
        def visit_Name(self, n: cst.Name) -> None:
            if n.value == CP:
                seen.append(n)

    node.visit(_Find())
    return bool(seen)


# a range compared right after its closing bracket, as every known shape writes it
_COMPARED_RANGE = re.compile(r"arange\([^\n]*\)\s*[<>]")


def _hint(text: str) -> bool:
    return CP in text and "device=" in text and _COMPARED_RANGE.search(text) is not None


RULE = Rule(
    hazard="causal-mask",
    name="causal-mask",
    summary="compare cache_position with a range built on the embeddings' device on that device",
    needles=("arange(",),
    transformer=CausalMaskTransformer,
    hint=_hint,
    requires=("rope_deltas",),
    context=("arange(",),
)
