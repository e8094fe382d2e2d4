"""``rope-deltas``: keep mRoPE deltas on ``cache_position``'s device where they are stored and added.

At prefill the model keeps ``rope_deltas`` (built on the device of input_ids or the attention
mask); at decode ``cache_position[0] + <stored deltas>`` mixes devices when the model is split, and
so does the position shift that follows (``position_ids.add(delta)``, the positions built on the
embeddings' or the input ids' device).

Sites and shapes:

- store: ``<obj>.rope_deltas = <value>`` in a function that takes ``cache_position``.
  ``store-unaligned`` (affected) becomes ``v if cache_position is None else v.to(cache_position.device)``:
  a no-op wherever cache_position is None (plain forward, training). ``store-naive-to`` is the quoted
  one-liner ``v.to(cache_position.device)`` on a path where cache_position may be None: affected,
  because it crashes there; the rewrite turns it into the guarded form. ``store-aligned``: fixed.
  ``store-without-cache-position``: the function has no cache_position to agree with (later 5.x).
  A store is only a hazard where the model combines the stored deltas with a tensor that can live
  on another device (``resolve``, per model folder): where they only meet a Python int or positions
  made on their own device, every store is ``safe``, with the reason.
- combine: ``<cache_position expr> + <deltas>``. ``combine-cache-position`` (affected) becomes
  ``... + <deltas>.to(cache_position.device)``; safe because the left operand already evaluated
  cache_position (None would have raised there before). ``combine-aligned``: fixed.
  ``combine-int-offset``: deltas plus a Python int (``past_key_values_length``): safe.
  ``combine-generation-positions``: stored deltas plus the positions ``_prepare_position_ids_for_generation``
  made from the same inputs: safe. ``combine-other``: some other tensor: unknown-shape, for a human.
- shift: ``P.add(D)`` or ``P + D`` where the local ``D`` was made from cache_position and the deltas
  (4.45-4.48 and the omni models: ``position_ids`` built on another device), or read from the stored
  deltas alone (``D = self.rope_deltas.repeat_interleave(...)``, 5.2's ernie4_5_vl_moe, positions built on
  the embeddings' device). ``shift-unaligned``
  (affected) gets ``D = D.to(P.device)`` right before the shift, under the test that makes ``D`` a
  tensor: appended to the ``if`` block just above when it has that test (upstream's own fix from
  4.49 on), else as a guarded statement of its own. ``shift-aligned``: ``D`` was moved already.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import libcst as cst

from ropefix.fix import cst as c
from ropefix.fix.rules.base import AFFECTED, FIXED, SAFE, UNKNOWN, Finding, Rule, RuleTransformer

CP = "cache_position"
_INT_SUFFIXES = ("_length", "_len", "_offset", "past_length")
_GEN_POSITIONS = "_prepare_position_ids_for_generation"

# what makes a store a hazard: the model combines stored deltas with a tensor on another device
# (or in a way the rule cannot judge)
REACHING = {"combine-cache-position", "combine-unguarded", "combine-other", "shift-unaligned", "shift-unguarded"}
STORES = {"store-unaligned", "store-without-cache-position", "store-cache-position-local", "store-expression"}
_HARMLESS = {  # what the stored deltas meet where nothing reaches another device, in words
    "combine-int-offset": "an int cache length",
    "combine-generation-positions": "generation positions made from the same inputs",
    "combine-aligned": "additions that move them onto cache_position's device first",
    "shift-aligned": "position shifts that move them first",
}


def _is_deltas(node: cst.BaseExpression) -> bool:
    name = c.dotted(node)
    return name is not None and (name == "rope_deltas" or name.endswith(".rope_deltas"))


def _deltas_of(node: cst.BaseExpression) -> cst.BaseExpression | None:
    """The deltas expression in ``node`` itself or in ``node.to(...)``; None when it is something else."""
    if _is_deltas(node):
        return node
    if _is_move(node):
        return node.func.value if _is_deltas(node.func.value) else None  # type: ignore[attr-defined]
    return None


def _is_move(node: cst.CSTNode) -> bool:
    """``<x>.to(...)``."""
    return isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) and node.func.attr.value == "to"


def _uses_cp(node: cst.BaseExpression) -> bool:
    return c.dotted(node) == CP or c.evaluates_operand(node, CP)


def _guarded(value: cst.BaseExpression) -> cst.IfExp:
    test = cst.Comparison(left=cst.Name(CP), comparisons=[cst.ComparisonTarget(cst.Is(), cst.Name("None"))])
    return cst.IfExp(test=test, body=value, orelse=c.to_device_of(value, CP))


def _combines_cp(value: cst.BaseExpression) -> bool:
    """Whether ``value`` adds deltas to a cache_position expression somewhere inside."""
    hits: list[bool] = []

    class _Find(cst.CSTVisitor):
        def visit_BinaryOperation(self, n: cst.BinaryOperation) -> None:
            if isinstance(n.operator, (cst.Add, cst.Subtract)):
                for a, b in ((n.left, n.right), (n.right, n.left)):
                    if _deltas_of(a) is not None and _uses_cp(b):
                        hits.append(True)

    value.visit(_Find())
    return bool(hits)


def _reads(node: cst.CSTNode, name: str) -> bool:
    seen: list[bool] = []

    class _Find(cst.CSTVisitor):
        def visit_Name(self, n: cst.Name) -> None:
            if n.value == name:
                seen.append(True)

    node.visit(_Find())
    return bool(seen)


def _pure_none_test(test: cst.BaseExpression) -> bool:
    """``a is not None and b is None ...``: a test that may be evaluated again without side effects."""
    if isinstance(test, cst.BooleanOperation) and isinstance(test.operator, cst.And):
        return _pure_none_test(test.left) and _pure_none_test(test.right)
    return (
        isinstance(test, cst.Comparison)
        and len(test.comparisons) == 1
        and isinstance(test.comparisons[0].operator, (cst.Is, cst.IsNot))
        and c.is_none(test.comparisons[0].comparator)
        and c.dotted(test.left) is not None
    )


@dataclass(frozen=True)
class _Delta:
    """A local made from cache_position and the deltas: where it is a tensor, and whether it was moved."""

    guard: str | None  # the test under which it is a tensor (None: always); "" when it cannot be named
    moved: bool
    stored: bool = False  # read from the stored deltas alone (no cache_position in it)


@dataclass(frozen=True)
class _Shift:
    delta: str
    positions: str
    guard: str | None


def _read_from(node: cst.BaseExpression) -> cst.BaseExpression:
    """What a value is read from without leaving its device (``x[None, ...]``, ``x.expand(...)``: ``x``)."""
    while True:
        if isinstance(node, cst.Subscript):
            node = node.value
        elif isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) and not _is_move(node):
            node = node.func.value
        else:
            return node


def _same_device_base(node: cst.BaseExpression) -> str | None:
    """The local a value is read from without leaving its device."""
    base = _read_from(node)
    return base.value if isinstance(base, cst.Name) else None


def _from_stored(node: cst.BaseExpression) -> bool:
    """Whether ``node`` reads the stored deltas without moving them (``self.rope_deltas.repeat_interleave(...)``)."""
    name = c.dotted(_read_from(node))
    return name is not None and name.endswith(".rope_deltas")


def _same_test(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())


class RopeDeltasTransformer(RuleTransformer):
    def __init__(self, fix: bool, keep: frozenset[str] = frozenset()) -> None:
        super().__init__(fix, keep)
        # moves onto cache_position's device, by node identity: True when cache_position is
        # certainly not None there (the safety check), False for the naive one-liner.
        self.moves: dict[int, bool] = {}
        # functions (by identity) that use the name cache_position anywhere, and stores in functions
        # without that parameter, judged when their function is left (walking each function again
        # per store cost more than the whole scan).
        self.mentions: set[int] = set()
        self.pending: dict[int, list[cst.Assign]] = {}
        # per function: locals made from cache_position + deltas, and locals holding generation positions
        self.deltas: dict[int, dict[str, _Delta]] = {}
        self.positions: dict[int, set[str]] = {}
        # statements (by identity) before which a shift's delta is moved, when fixing
        self.shifts: dict[int, _Shift] = {}

    def visit_Name(self, node: cst.Name) -> None:
        if node.value == CP:
            self.mentions.update(id(n) for n in self.stack if isinstance(n, cst.FunctionDef))

    def leave_FunctionDef(self, original_node: cst.FunctionDef, updated_node: cst.FunctionDef) -> cst.FunctionDef:
        for store in self.pending.pop(id(original_node), []):
            if id(original_node) in self.mentions:
                self.report(
                    store, "store-cache-position-local", UNKNOWN, "cache_position is a local here, not a parameter"
                )
            else:
                self.report(store, "store-without-cache-position", FIXED, "no cache_position in this function")
        return updated_node

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.BaseExpression:
        if c.is_to_device_of(original_node, CP) and _deltas_of(original_node) is not None:
            self.moves[id(original_node)] = c.known_not_none(self.stack, original_node, CP)
        func = original_node.func
        if isinstance(func, cst.Attribute) and func.attr.value == "add" and len(original_node.args) == 1:
            arg = original_node.args[0]
            if arg.keyword is None:
                self._shift(original_node, func.value, arg.value)
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

    # --- stores, and the locals a shift reads ---------------------------------------------------

    def leave_Assign(self, original_node: cst.Assign, updated_node: cst.Assign) -> cst.Assign:
        if len(original_node.targets) != 1:
            return updated_node
        if isinstance(original_node.targets[0].target, cst.Name):
            self._track(original_node.targets[0].target.value, original_node.value)
            return updated_node
        target = c.dotted(original_node.targets[0].target)
        value = original_node.value
        if target is None or not target.endswith(".rope_deltas") or c.is_none(value):
            return updated_node
        fn = self.function()
        if fn is None:
            self.report(original_node, "store-without-cache-position", FIXED, "module level: no cache_position")
            return updated_node
        if CP not in c.params(fn):
            self.pending.setdefault(id(fn), []).append(original_node)
            return updated_node
        moves = self._moves_under(value)
        if moves and all(moves):
            self.report(original_node, "store-aligned", FIXED, "stored on cache_position's device")
            return updated_node
        if isinstance(value, (cst.Name, cst.Attribute)):
            why = "kept on the device it was computed on; cache_position may be elsewhere"
            if self.report(original_node, "store-unaligned", AFFECTED, why):
                return updated_node.with_changes(value=_guarded(value))
            return updated_node
        if moves and c.is_to_device_of(value, CP) and isinstance(value, cst.Call):
            why = "moves onto cache_position's device where cache_position may be None (plain forward)"
            if self.report(original_node, "store-naive-to", AFFECTED, why):
                receiver = value.func.value  # type: ignore[attr-defined]
                return updated_node.with_changes(value=_guarded(receiver))
            return updated_node
        self.report(original_node, "store-expression", UNKNOWN, "stores an expression the rule does not judge")
        return updated_node

    def _track(self, name: str, value: cst.BaseExpression) -> None:
        """Follow a local: made from cache_position + deltas, moved, derived, or something else now."""
        fn = self.function()
        if fn is None:
            return
        scope = self.deltas.setdefault(id(fn), {})
        called = value.func if isinstance(value, cst.Call) else None
        if isinstance(called, cst.Attribute) and called.attr.value == _GEN_POSITIONS:
            self.positions.setdefault(id(fn), set()).add(name)
        if name in scope and _is_move(value) and c.dotted(value.func.value) == name:  # type: ignore[attr-defined]
            scope[name] = replace(scope[name], moved=True)
        elif _combines_cp(value):
            body = value.body if isinstance(value, cst.IfExp) else value
            if isinstance(value, cst.IfExp):
                named = isinstance(value.orelse, cst.Integer) and _pure_none_test(value.test)
                guard: str | None = c.code(value.test) if named else ""
            else:
                guard = None
            scope[name] = _Delta(guard, _is_move(body))
        elif _from_stored(value):  # the stored deltas, reshaped where they are (5.2's ernie4_5_vl_moe)
            scope[name] = _Delta(None, False, stored=True)
        elif name in scope and not _reads(value, name):
            del scope[name]  # a new value: no longer the delta

    # --- additions ------------------------------------------------------------------------------

    def _shift(self, node: cst.CSTNode, positions: cst.BaseExpression, delta: cst.BaseExpression) -> bool:
        """``positions.add(delta)`` / ``positions + delta`` with a tracked delta: report (and plan the move)."""
        fn = self.function()
        scope = self.deltas.get(id(fn), {}) if fn is not None else {}
        moved_here = _is_move(delta)
        name = c.dotted(delta.func.value) if moved_here else c.dotted(delta)  # type: ignore[attr-defined]
        if name not in scope:
            return False
        d = scope[name]
        if moved_here or d.moved:
            self.report(node, "shift-aligned", FIXED, f"{name} was moved before the shift")
            return True
        owner = c.dotted(positions)
        if d.guard == "" or owner is None:
            why = f"{name} may not be a tensor here (or the positions have no name): the rule cannot guard a move"
            self.report(node, "shift-unguarded", UNKNOWN, why)
            return True
        made = "the stored deltas, where prefill computed them" if d.stored else "cache_position + deltas"
        why = f"{name} ({made}) meets {owner}, built on another device"
        if self.report(node, "shift-unaligned", AFFECTED, why):
            stmt = next((n for n in reversed(self.stack) if isinstance(n, cst.SimpleStatementLine)), None)
            if stmt is not None:
                self.shifts[id(stmt)] = _Shift(name, owner, d.guard)
        return True

    def leave_IndentedBlock(
        self, original_node: cst.IndentedBlock, updated_node: cst.IndentedBlock
    ) -> cst.IndentedBlock:
        if not any(id(s) in self.shifts for s in original_node.body):
            return updated_node
        body: list[cst.BaseStatement] = []
        for orig, new in zip(original_node.body, updated_node.body):
            shift = self.shifts.pop(id(orig), None)
            if shift is not None:
                move = cst.parse_statement(f"{shift.delta} = {shift.delta}.to({shift.positions}.device)\n")
                prev = body[-1] if body else None
                if (
                    shift.guard is not None
                    and isinstance(prev, cst.If)
                    and prev.orelse is None
                    and isinstance(prev.body, cst.IndentedBlock)
                    and _same_test(c.code(prev.test), shift.guard)
                ):  # the block that already holds what makes the delta a tensor: upstream's place
                    body[-1] = prev.with_changes(body=prev.body.with_changes(body=[*prev.body.body, move]))
                elif shift.guard is not None:
                    body.append(cst.If(test=cst.parse_expression(shift.guard), body=cst.IndentedBlock([move])))
                else:
                    body.append(move)
            body.append(new)
        return updated_node.with_changes(body=body)

    def leave_BinaryOperation(
        self, original_node: cst.BinaryOperation, updated_node: cst.BinaryOperation
    ) -> cst.BaseExpression:
        if not isinstance(original_node.operator, (cst.Add, cst.Subtract)):
            return updated_node
        left, right = original_node.left, original_node.right
        if isinstance(original_node.operator, cst.Add) and self._shift(original_node, left, right):
            return updated_node
        if _deltas_of(right) is not None and _deltas_of(left) is None:
            side, other = "right", left
        elif _deltas_of(left) is not None and _deltas_of(right) is None:
            side, other = "left", right
        else:
            return updated_node
        deltas = right if side == "right" else left
        stored = "." in (c.dotted(_deltas_of(deltas)) or "")  # type: ignore[arg-type]
        if _uses_cp(other):
            if c.is_to_device_of(deltas, CP):
                self.report(
                    original_node, "combine-aligned", FIXED, "the deltas are moved onto cache_position's device"
                )
                return updated_node
            # after the rewrite the move sits right of an operand that evaluated cache_position,
            # or under a guard; a left-side deltas operand needs the guard
            if side == "left" and not c.known_not_none(self.stack, original_node, CP):
                why = "cache_position may be None here: a move could not be guarded"
                self.report(original_node, "combine-unguarded", UNKNOWN, why)
                return updated_node
            why = "deltas (kept where they were computed) added to cache_position (another device when split)"
            if not self.report(original_node, "combine-cache-position", AFFECTED, why):
                return updated_node
            moved = c.to_device_of(updated_node.right if side == "right" else updated_node.left, CP)
            return updated_node.with_changes(**{side: moved})
        if not stored:
            return updated_node  # local arithmetic on freshly computed deltas: no stored state involved
        name = c.dotted(other) or ""
        fn = self.function()
        if isinstance(other, cst.Integer) or name.endswith(_INT_SUFFIXES):
            self.report(original_node, "combine-int-offset", SAFE, "a Python int cache length: no second device")
        elif fn is not None and _same_device_base(other) in self.positions.get(id(fn), set()):
            why = f"positions from {_GEN_POSITIONS}, made from the same inputs as the deltas"
            self.report(original_node, "combine-generation-positions", SAFE, why)
        else:
            self.report(original_node, "combine-other", UNKNOWN, "stored deltas plus a tensor the rule cannot place")
        return updated_node


def resolve(found: list[Finding]) -> list[Finding]:
    """One model folder's findings, judged together: stores are hazards only where the model
    combines the stored deltas with a tensor that can live on another device."""
    reach = [f for f in found if f.shape in REACHING]
    if reach:
        where = f"the model combines them: `{reach[0].code}`"
        return [f.judged(f.status, f"{f.reason}; {where}") if f.shape == "store-unaligned" else f for f in found]
    met = sorted({_HARMLESS[f.shape] for f in found if f.shape in _HARMLESS})
    why = "the stored deltas only meet " + ", ".join(met) if met else "the stored deltas are never added in this model"
    return [f.judged(SAFE, why) if f.shape in STORES else f for f in found]


def _hint(text: str) -> bool:
    """Could this function hold a site? It may answer yes too often, never no for a site.

    A store is ``.rope_deltas = <not None>``; an addition has the deltas on a line with a ``+``/``-``
    that is not just the assignment to a local ``rope_deltas`` (that is the getter's own arithmetic),
    and that reads stored deltas or sits in a function using cache_position (local deltas are only
    a site when added to it). A shift needs such an addition in its function (its delta is made there).
    """
    uses_cp = CP in text
    for ln in text.splitlines():
        s = ln.split("#", 1)[0].strip()
        if "rope_deltas" not in s:
            continue
        if ".rope_deltas =" in s and not s.endswith("= None"):
            return True
        rhs = s.split(" = ", 1)[1] if " = " in s else s
        adds = " + " in rhs or " - " in rhs or rhs[:1] in ("+", "-")
        if "rope_deltas" in rhs and adds and (uses_cp or ".rope_deltas" in rhs):
            return True
    return False


# a statement whose one target names a delta: a store, or a local a shift may read (``delta = ...``);
# the rule follows no tuple target, so ``position_ids, rope_deltas = ...`` never matters to it
_ASSIGNS_DELTA = re.compile(r"[\w.\[\]]*delta\w*\s*(?::[^=\n]*)?=(?!=)")


def _statement(text: str) -> bool:
    """Could this statement be a site, or make a local a shift reads? (Yes too often, never no for one.)"""
    if _GEN_POSITIONS in text:
        return True
    return "+" in text or " - " in text or ".add(" in text or _ASSIGNS_DELTA.match(text.lstrip()) is not None


RULE = Rule(
    hazard="rope-deltas",
    name="rope-deltas",
    summary="store and add mRoPE rope_deltas on cache_position's device (no-op when cache_position is None)",
    needles=("rope_deltas",),
    transformer=RopeDeltasTransformer,
    hint=_hint,
    context=("delta", _GEN_POSITIONS),  # "delta" covers rope_deltas
    mentions=(CP,),  # whether a function without the parameter uses cache_position at all
    statement=_statement,
    resolve=resolve,
)
