"""The Rule interface: one named hazard, found and rewritten by one libcst transformer.

A rule is a small file under ``ropefix.fix.rules``: a ``RuleTransformer`` subclass that calls
``report`` for every site it recognises (with a shape, a status and a reason a human can check)
and rewrites the node when ``report`` says so; plus a ``Rule`` value naming it and the byte needles
that let the engine skip files and functions that cannot hold a site. A rule may judge its sites
once more per model folder (``Rule.resolve``): a stored value is only a hazard where something in
that model combines it with a tensor on another device. ``ropefix.fix.rules.REGISTRY`` lists the
rules in order.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import libcst as cst

from ropefix.fix import cst as c

AFFECTED = "affected"  # the rule rewrites it
FIXED = "fixed"  # already on the right device (upstream's code or an earlier rewrite)
SAFE = "safe"  # no hazard: the values only ever meet ints or tensors made on the same device
UNKNOWN = "unknown-shape"  # a shape the rule does not judge: shown for a human
UNREADABLE = "unreadable"  # a file that does not decode or parse (no site can be judged in it)
STATUSES = (AFFECTED, FIXED, SAFE, UNKNOWN, UNREADABLE)


@dataclass(frozen=True)
class Finding:
    """One site in one parsed piece of code (``line`` counts from 1 in that piece; 0 until located)."""

    line: int
    shape: str
    status: str
    code: str  # the site's exact source text
    reason: str = ""  # why it has that status, in a few words a human can check against the code

    def judged(self, status: str, reason: str) -> Finding:
        return Finding(self.line, self.shape, status, self.code, reason)


def locate(source: str, findings: list[Finding]) -> list[Finding]:
    """Give each finding its line by finding its exact text in ``source``.

    Cheaper than libcst's PositionProvider (a second full pass). Findings arrive in leave
    order; nodes with equal text cannot nest, so the k-th finding with a text is its k-th
    occurrence.
    """
    after: dict[str, int] = {}
    located = []
    for f in findings:
        key = f.code.split("\n", 1)[0]  # later lines of a multi-line node are re-indented by codegen
        at = source.find(key, after.get(key, 0))
        if at < 0:
            raise AssertionError(f"site text not found in its source: {key!r}")
        after[key] = at + len(key)
        located.append(Finding(source.count("\n", 0, at) + 1, f.shape, f.status, f.code, f.reason))
    return sorted(located, key=lambda f: f.line)


class RuleTransformer(cst.CSTTransformer):
    """Base for rule transformers: keeps the ancestors of the node being left, and the findings."""

    def __init__(self, fix: bool, keep: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.fix = fix
        # sites (by their exact code) the model-level judgement found harmless: reported, never rewritten
        self.keep = keep
        self.findings: list[Finding] = []
        self.stack: list[cst.CSTNode] = []

    # libcst looks up ``visit_<Type>`` / ``leave_<Type>`` (and ``_<attribute>`` variants) by name for
    # every node, formatting a string each time: most of a scan's time. Rules define no attribute
    # hooks, so those are skipped, and the per-type hooks are looked up once per class.
    def on_visit(self, node: cst.CSTNode) -> bool:
        self.stack.append(node)
        if type(node) in _NO_SITE:  # exact types: isinstance on libcst's ABCs costs more than the walk
            return False  # nothing a rule reads lies below (or, for a signature, is read without a walk)
        hook = _hooks(type(self), "visit_", type(node))
        return hook is None or hook(self, node) is not False

    def on_leave(self, original_node: cst.CSTNode, updated_node: cst.CSTNode):  # type: ignore[override]
        self.stack.pop()  # inside leave_* the stack holds the ancestors only
        hook = _hooks(type(self), "leave_", type(original_node))
        return updated_node if hook is None else hook(self, original_node, updated_node)

    def on_visit_attribute(self, node: cst.CSTNode, attribute: str) -> None:
        return None

    def on_leave_attribute(self, original_node: cst.CSTNode, attribute: str) -> None:
        return None

    def function(self) -> cst.FunctionDef | None:
        for node in reversed(self.stack):
            if isinstance(node, cst.FunctionDef):
                return node
        return None

    def problems(self) -> list[str]:
        """What makes code this rule wrote (or found) unsafe; the engine refuses to write it."""
        return []

    def report(self, node: cst.CSTNode, shape: str, status: str, reason: str) -> bool:
        """Record a site; True when the rule should rewrite it now (fixing, affected, not kept)."""
        text = c.code(node)
        self.findings.append(Finding(0, shape, status, text, reason))
        return self.fix and status == AFFECTED and text not in self.keep


# Nodes below which no rule finds anything: layout (whitespace, comments, brackets, commas) and
# signatures (rules read the parameters from the FunctionDef itself).
_NO_SITE = frozenset({
    cst.SimpleWhitespace, cst.ParenthesizedWhitespace, cst.TrailingWhitespace, cst.Newline, cst.EmptyLine,
    cst.Comment, cst.Comma, cst.Dot, cst.Colon, cst.LeftParen, cst.RightParen, cst.LeftSquareBracket,
    cst.RightSquareBracket, cst.LeftCurlyBrace, cst.RightCurlyBrace, cst.AssignEqual, cst.Semicolon,
    cst.Parameters,
})  # fmt: skip


@functools.cache
def _hooks(cls: type, prefix: str, node_type: type) -> Callable[..., Any] | None:
    return getattr(cls, f"{prefix}{node_type.__name__}", None)


@dataclass(frozen=True)
class Rule:
    name: str
    summary: str
    needles: tuple[str, ...]  # a file or function without any of these holds no site
    transformer: type[RuleTransformer]
    # a cheap text test a function must pass to be parsed at all (it may say yes too often, never too rarely)
    hint: Callable[[str], bool] = lambda text: True
    # a file must hold all of these for the rule to look at it (companion rules: mRoPE files only)
    requires: tuple[str, ...] = ()
    # the class of device failure this rule fixes, by its name in ``ropefix.fix.hazards.CATALOGUE``:
    # the suite names failures by that catalogue, verify maps them back to the rule through this
    hazard: str = ""
    # a statement of a function is only parsed when it holds one of these (with the compound
    # statements around it and the function's parameter names): the rest of the function cannot
    # change what the rule finds. Empty: the whole function is parsed.
    context: tuple[str, ...] = ()
    # names the rule must still see used where the statements using them are left out
    mentions: tuple[str, ...] = ()
    # a simple statement holding a context word is kept only when this accepts its text (it may
    # say yes too often, never no for a statement that is a site or that a site depends on)
    statement: Callable[[str], bool] = lambda text: True
    # the final word on one model folder's findings (every file of it, in file order): e.g. a store
    # is safe where nothing in the model combines the stored value with another device
    resolve: Callable[[list[Finding]], list[Finding]] = lambda found: found

    def __post_init__(self) -> None:
        from ropefix.fix.hazards import NAMES

        if self.hazard not in NAMES:
            raise ValueError(f"rule {self.name!r} declares hazard {self.hazard!r}, which ropefix.fix.hazards lacks")
