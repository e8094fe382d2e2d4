"""The Rule interface: one named hazard, found and rewritten by one libcst transformer.

A rule is a small file under ``ropefix.fix.rules``: a ``RuleTransformer`` subclass that calls
``report`` for every site it recognises and, when ``self.fix`` is set, returns the rewritten
node; plus a ``Rule`` value naming it and the byte needles that let the engine skip files and
functions that cannot hold a site. ``ropefix.fix.rules.REGISTRY`` lists the rules in order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import libcst as cst

from ropefix.fix import cst as c

AFFECTED = "affected"
FIXED = "fixed"
UNKNOWN = "unknown-shape"
STATUSES = (AFFECTED, FIXED, UNKNOWN)


@dataclass(frozen=True)
class Finding:
    """One site in one parsed piece of code (``line`` counts from 1 in that piece; 0 until located)."""

    line: int
    shape: str
    status: str
    code: str  # the site's exact source text


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
        located.append(Finding(source.count("\n", 0, at) + 1, f.shape, f.status, f.code))
    return sorted(located, key=lambda f: f.line)


class RuleTransformer(cst.CSTTransformer):
    """Base for rule transformers: keeps the ancestors of the node being left, and the findings."""

    def __init__(self, fix: bool) -> None:
        super().__init__()
        self.fix = fix
        self.findings: list[Finding] = []
        self.stack: list[cst.CSTNode] = []

    def on_visit(self, node: cst.CSTNode) -> bool:
        self.stack.append(node)
        return super().on_visit(node)

    def on_leave(self, original_node: cst.CSTNode, updated_node: cst.CSTNode):  # type: ignore[override]
        self.stack.pop()  # inside leave_* the stack holds the ancestors only
        return super().on_leave(original_node, updated_node)

    def function(self) -> cst.FunctionDef | None:
        for node in reversed(self.stack):
            if isinstance(node, cst.FunctionDef):
                return node
        return None

    def problems(self) -> list[str]:
        """What makes code this rule wrote (or found) unsafe; the engine refuses to write it."""
        return []

    def report(self, node: cst.CSTNode, shape: str, status: str) -> None:
        self.findings.append(Finding(0, shape, status, c.code(node)))


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

    def __post_init__(self) -> None:
        from ropefix.fix.hazards import NAMES

        if self.hazard not in NAMES:
            raise ValueError(f"rule {self.name!r} declares hazard {self.hazard!r}, which ropefix.fix.hazards lacks")
