"""libcst helpers the rules share: names of expressions, guards, and method-sized chunks of a file.

Parsing a whole 150 KB modeling file with libcst takes about half a second, and a release holds
dozens of them; a rule only ever needs the function around a site. So files are cut into
top-level and method chunks by indentation (bytes, no parsing), only chunks holding a rule's
needle are parsed, and edits are spliced back line by line. A chunk that does not parse on its
own (a string literal reaching column 0, odd indentation) makes the caller parse the whole file.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import re
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Chunk:
    """Lines ``start``..``end`` (0-based, end exclusive) of a file, dedented by ``indent`` spaces."""

    start: int
    end: int
    indent: int
    text: str


_STOP = {0: re.compile(r"^[^\s)\]}#]", re.MULTILINE), 4: re.compile(r"^ {0,3}[^\s)\]}#]", re.MULTILINE)}
# A line that opens a chunk: a decorator or a def/class at column 0, or a method at 4 spaces.
_OPENERS = re.compile(r"^( {0,4})(?:@|def |async def |class )", re.MULTILINE)


@functools.lru_cache(maxsize=4)
def _spans(text: str) -> tuple[list[str], list[int], list[tuple[int, int, int]]] | None:
    """The file's lines, their offsets, and (first, end, indent) of every def/class/decorator run.

    Cached: every rule asks about the same file. Regexes over the whole text find the openers and
    the statements less indented than a body (a signature's closing bracket and comments do not
    count), so no Python loop runs per line.
    """
    lines = text.splitlines(keepends=True)
    offsets = [0, *itertools.accumulate(len(ln) for ln in lines)]

    def line_of(at: int) -> int:
        return bisect.bisect_right(offsets, at) - 1

    openers: list[tuple[int, int]] = []
    for m in _OPENERS.finditer(text):
        i, indent = line_of(m.start()), len(m.group(1))
        if indent not in (0, 4):
            return None
        prev = lines[i - 1] if i else ""
        if prev.startswith(" " * indent + "@") and not prev.startswith(" " * (indent + 1)):
            continue  # a def under a one-line decorator belongs to the decorator's chunk
        openers.append((i, indent))
    stops = {k: [line_of(m.start()) for m in rx.finditer(text)] for k, rx in _STOP.items()}
    spans = []
    for n, (first, indent) in enumerate(openers):
        stop = openers[n + 1][0] if n + 1 < len(openers) else len(lines)
        after = stops[indent]
        k = bisect.bisect_right(after, first)
        end = min(stop, after[k]) if k < len(after) else stop
        spans.append((first, end, indent))
    return lines, offsets, spans


def chunks(text: str, needles: tuple[str, ...], hint=lambda text: True) -> list[Chunk] | None:
    """Method- and function-sized pieces of a file that contain one of ``needles``.

    Returns ``None`` when the file cannot be cut safely (the caller parses it whole).
    """
    cut = _spans(text)
    if cut is None:
        return None
    lines, offsets, spans = cut
    found: list[Chunk] = []
    for start, end, indent in spans:
        piece = text[offsets[start] : offsets[end]]
        if not any(nd in piece for nd in needles) or lines[start].lstrip().startswith("class ") or not hint(piece):
            continue  # class headers and class-level statements are no sites: methods are their own chunks
        dedented = []
        for ln in lines[start:end]:
            lead = len(ln) - len(ln.lstrip(" "))
            if ln.strip() and lead < indent and not ln.lstrip().startswith("#"):
                return None
            dedented.append(ln[min(lead, indent) :] if ln.strip() else ln.lstrip(" "))
        found.append(Chunk(start, end, indent, "".join(dedented)))
    return found
