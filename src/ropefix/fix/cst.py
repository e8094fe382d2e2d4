"""libcst helpers the rules share: names of expressions, guards, moves onto a device.

What the rules parse is cut out of the files by ``ropefix.fix.pieces``.
"""

from __future__ import annotations

import libcst as cst

_EMPTY = cst.Module(body=[])


def code(node: cst.CSTNode) -> str:
    """The source text of ``node`` (without the surrounding statement)."""
    return _EMPTY.code_for_node(node)


def dotted(node: cst.BaseExpression) -> str | None:
    """``self.model.rope_deltas`` for a Name/Attribute chain, ``None`` for anything else."""
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        base = dotted(node.value)
        return None if base is None else f"{base}.{node.attr.value}"
    return None


def is_none(node: cst.BaseExpression) -> bool:
    return isinstance(node, cst.Name) and node.value == "None"


def is_to_device_of(node: cst.CSTNode, owner: str) -> bool:
    """``<x>.to(<owner>.device)``: a move onto ``owner``'s device."""
    if not (isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) and node.func.attr.value == "to"):
        return False
    if len(node.args) != 1:
        return False
    return dotted(node.args[0].value) == f"{owner}.device"


def to_device_of(value: cst.BaseExpression, owner: str) -> cst.Call:
    """``value.to(owner.device)``, parenthesising ``value`` when precedence needs it."""
    if not isinstance(value, (cst.Name, cst.Attribute, cst.Call, cst.Subscript)):
        value = value.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])
    return cst.Call(
        func=cst.Attribute(value=value, attr=cst.Name("to")),
        args=[cst.Arg(cst.Attribute(value=cst.Name(owner), attr=cst.Name("device")))],
    )


def none_test(test: cst.BaseExpression, name: str) -> bool | None:
    """What ``test`` being TRUE says about ``name``: True = it is None, False = it is not None.

    ``None`` when the test says nothing certain. ``a is not None and b`` being true implies ``a is
    not None``; an ``or`` only implies something when read on its false side (see ``implies``).
    """
    if isinstance(test, cst.Comparison) and len(test.comparisons) == 1 and dotted(test.left) == name:
        target = test.comparisons[0]
        if is_none(target.comparator):
            if isinstance(target.operator, cst.IsNot):
                return False
            if isinstance(target.operator, cst.Is):
                return True
    if isinstance(test, cst.BooleanOperation) and isinstance(test.operator, cst.And):
        for side in (test.left, test.right):
            if none_test(side, name) is False:
                return False
    return None


def false_implies_not_none(test: cst.BaseExpression, name: str) -> bool:
    """Whether ``test`` being FALSE implies ``name is not None`` (``name is None or ...`` is false)."""
    if none_test(test, name) is True:
        return True
    if isinstance(test, cst.BooleanOperation) and isinstance(test.operator, cst.Or):
        return false_implies_not_none(test.left, name) or false_implies_not_none(test.right, name)
    return False


def evaluates_operand(node: cst.CSTNode, name: str) -> bool:
    """Whether ``node`` uses ``name`` as a value (``name[0]``, ``name + 1``), not merely tests it.

    Such a use raises on None before anything to its right runs, so code placed after it may
    assume ``name`` is not None without adding a new failure.
    """
    if isinstance(node, cst.Subscript) and dotted(node.value) == name:
        return True
    if isinstance(node, cst.BinaryOperation):
        return any(dotted(s) == name or evaluates_operand(s, name) for s in (node.left, node.right))
    if isinstance(node, (cst.Call, cst.Attribute)):
        inner = node.func if isinstance(node, cst.Call) else node.value
        return evaluates_operand(inner, name)
    return False


def known_not_none(ancestors: list[cst.CSTNode], node: cst.CSTNode, name: str) -> bool:
    """Whether every path reaching ``node`` (whose parents are ``ancestors``, outermost first) has
    ``name`` not None: a guarding ``if``/conditional expression, or an earlier operand that
    already evaluated ``name``."""
    child = node
    for parent in reversed(ancestors):
        if isinstance(parent, (cst.IfExp, cst.If)):
            branch_true = child is parent.body
            branch_false = child is parent.orelse
            if branch_true and none_test(parent.test, name) is False:
                return True
            if branch_false and false_implies_not_none(parent.test, name):
                return True
        if isinstance(parent, cst.BinaryOperation) and child is parent.right and evaluates_operand(parent.left, name):
            return True
        if (
            isinstance(parent, cst.BooleanOperation)
            and child is parent.right
            and isinstance(parent.operator, cst.And)
            and none_test(parent.left, name) is False
        ):
            return True
        if isinstance(parent, (cst.FunctionDef, cst.Lambda)):
            return False
        child = parent
    return False


def params(fn: cst.FunctionDef) -> set[str]:
    p = fn.params
    every = [*p.posonly_params, *p.params, *p.kwonly_params]
    return {a.name.value for a in every}
