"""``rope-deltas``: keep mRoPE deltas on ``cache_position``'s device where they are stored and added.

At prefill the model keeps ``rope_deltas`` (built on the device of input_ids or the attention
mask); at decode ``cache_position[0] + <stored deltas>`` mixes devices when the model is split.

Sites and shapes:

- store: ``<obj>.rope_deltas = <value>`` in a function that takes ``cache_position``.
  ``store-unaligned`` (affected) becomes ``v if cache_position is None else v.to(cache_position.device)``:
  a no-op wherever cache_position is None (plain forward, training). ``store-naive-to`` is the quoted
  one-liner ``v.to(cache_position.device)`` on a path where cache_position may be None: affected,
  because it crashes there; the rewrite turns it into the guarded form. ``store-aligned``: fixed.
  ``store-without-cache-position``: the function has no cache_position to agree with (later 5.x).
- combine: ``<cache_position expr> + <deltas>``. ``combine-cache-position`` (affected) becomes
  ``... + <deltas>.to(cache_position.device)``; safe because the left operand already evaluated
  cache_position (None would have raised there before). ``combine-aligned``: fixed.
  ``combine-int-offset``: deltas plus a Python int (``past_key_values_length``): no device mixing.
  ``combine-other``: stored deltas plus some other tensor: unknown-shape, shown for a human.
"""

from __future__ import annotations

import libcst as cst

from ropefix.fix import cst as c
from ropefix.fix.rules.base import AFFECTED, FIXED, UNKNOWN, Rule, RuleTransformer

CP = "cache_position"
_INT_SUFFIXES = ("_length", "_len", "_offset", "past_length")


def _is_deltas(node: cst.BaseExpression) -> bool:
    name = c.dotted(node)
    return name is not None and (name == "rope_deltas" or name.endswith(".rope_deltas"))


def _deltas_of(node: cst.BaseExpression) -> cst.BaseExpression | None:
    """The deltas expression in ``node`` itself or in ``node.to(...)``; None when it is something else."""
    if _is_deltas(node):
        return node
    if isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) and node.func.attr.value == "to":
        return node.func.value if _is_deltas(node.func.value) else None
    return None


def _guarded(value: cst.BaseExpression) -> cst.IfExp:
    test = cst.Comparison(left=cst.Name(CP), comparisons=[cst.ComparisonTarget(cst.Is(), cst.Name("None"))])
    return cst.IfExp(test=test, body=value, orelse=c.to_device_of(value, CP))


class RopeDeltasTransformer(RuleTransformer):
    def __init__(self, fix: bool) -> None:
        super().__init__(fix)
        # moves onto cache_position's device, by node identity: True when cache_position is
        # certainly not None there (the safety check), False for the naive one-liner.
        self.moves: dict[int, bool] = {}
        # functions (by identity) that use the name cache_position anywhere, and stores in functions
        # without that parameter, judged when their function is left (walking each function again
        # per store cost more than the whole scan).
        self.mentions: set[int] = set()
        self.pending: dict[int, list[cst.Assign]] = {}

    def visit_Name(self, node: cst.Name) -> None:
        if node.value == CP:
            self.mentions.update(id(n) for n in self.stack if isinstance(n, cst.FunctionDef))

    def leave_FunctionDef(self, original_node: cst.FunctionDef, updated_node: cst.FunctionDef) -> cst.FunctionDef:
        for store in self.pending.pop(id(original_node), []):
            if id(original_node) in self.mentions:
                self.report(store, "store-cache-position-local", UNKNOWN)
            else:
                self.report(store, "store-without-cache-position", FIXED)
        return updated_node

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.BaseExpression:
        if c.is_to_device_of(original_node, CP) and _deltas_of(original_node) is not None:
            self.moves[id(original_node)] = c.known_not_none(self.stack, original_node, CP)
        return updated_node

    def _moves_under(self, node: cst.CSTNode) -> list[bool]:
        found: list[bool] = []

        class _Calls(cst.CSTVisitor):
            def visit_Call(inner, n: cst.Call) -> None:
                if id(n) in self.moves:
                    found.append(self.moves[id(n)])

        node.visit(_Calls())
        return found

    def problems(self) -> list[str]:
        """Every ``.to(cache_position.device)`` on deltas that runs where cache_position may be None."""
        n = sum(1 for safe in self.moves.values() if not safe)
        return [f"{n} move(s) of rope_deltas onto cache_position.device where cache_position may be None"] if n else []

    def leave_Assign(self, original_node: cst.Assign, updated_node: cst.Assign) -> cst.Assign:
        if len(original_node.targets) != 1:
            return updated_node
        target = c.dotted(original_node.targets[0].target)
        value = original_node.value
        if target is None or not target.endswith(".rope_deltas") or c.is_none(value):
            return updated_node
        fn = self.function()
        if fn is None:
            self.report(original_node, "store-without-cache-position", FIXED)
            return updated_node
        if CP not in c.params(fn):
            self.pending.setdefault(id(fn), []).append(original_node)
            return updated_node
        moves = self._moves_under(value)
        if moves and all(moves):
            self.report(original_node, "store-aligned", FIXED)
            return updated_node
        if isinstance(value, (cst.Name, cst.Attribute)):
            self.report(original_node, "store-unaligned", AFFECTED)
            return updated_node.with_changes(value=_guarded(value)) if self.fix else updated_node
        if moves and c.is_to_device_of(value, CP) and isinstance(value, cst.Call):
            self.report(original_node, "store-naive-to", AFFECTED)
            receiver = value.func.value  # type: ignore[attr-defined]
            return updated_node.with_changes(value=_guarded(receiver)) if self.fix else updated_node
        self.report(original_node, "store-expression", UNKNOWN)
        return updated_node

    def leave_BinaryOperation(
        self, original_node: cst.BinaryOperation, updated_node: cst.BinaryOperation
    ) -> cst.BaseExpression:
        if not isinstance(original_node.operator, (cst.Add, cst.Subtract)):
            return updated_node
        left, right = original_node.left, original_node.right
        if _deltas_of(right) is not None and _deltas_of(left) is None:
            side, other = "right", left
        elif _deltas_of(left) is not None and _deltas_of(right) is None:
            side, other = "left", right
        else:
            return updated_node
        deltas = right if side == "right" else left
        stored = "." in (c.dotted(_deltas_of(deltas)) or "")  # type: ignore[arg-type]
        uses_cp = c.dotted(other) == CP or c.evaluates_operand(other, CP)
        if uses_cp:
            if c.is_to_device_of(deltas, CP):
                self.report(original_node, "combine-aligned", FIXED)
                return updated_node
            # after the rewrite the move sits right of an operand that evaluated cache_position,
            # or under a guard; a left-side deltas operand needs the guard
            if side == "left" and not c.known_not_none(self.stack, original_node, CP):
                self.report(original_node, "combine-unguarded", UNKNOWN)
                return updated_node
            self.report(original_node, "combine-cache-position", AFFECTED)
            if not self.fix:
                return updated_node
            moved = c.to_device_of(updated_node.right if side == "right" else updated_node.left, CP)
            return updated_node.with_changes(**{side: moved})
        if not stored:
            return updated_node  # local arithmetic on freshly computed deltas: no stored state involved
        name = c.dotted(other) or ""
        if isinstance(other, cst.Integer) or name.endswith(_INT_SUFFIXES):
            self.report(original_node, "combine-int-offset", FIXED)
        else:
            self.report(original_node, "combine-other", UNKNOWN)
        return updated_node


def _hint(text: str) -> bool:
    """Could this function hold a site? It may answer yes too often, never no for a site.

    A store is ``.rope_deltas = <not None>``; an addition has the deltas on a line with a ``+``/``-``
    that is not just the assignment to a local ``rope_deltas`` (that is the getter's own arithmetic).
    """
    for ln in text.splitlines():
        s = ln.strip()
        if "rope_deltas" not in s:
            continue
        if ".rope_deltas =" in s and not s.endswith("= None"):
            return True
        rhs = s.split(" = ", 1)[1] if " = " in s else s
        if "rope_deltas" in rhs and (" + " in rhs or " - " in rhs or rhs[:1] in ("+", "-")):
            return True
    return False


RULE = Rule(
    hazard="rope-deltas",
    name="rope-deltas",
    summary="store and add mRoPE rope_deltas on cache_position's device (no-op when cache_position is None)",
    needles=("rope_deltas",),
    transformer=RopeDeltasTransformer,
    hint=_hint,
)
