"""The fix rules, in the order they run. Adding a rule: a module with a ``RULE`` value, listed here."""

from __future__ import annotations

from ropefix.errors import RopefixError
from ropefix.fix.rules import causal_mask, rope_deltas, rope_index
from ropefix.fix.rules.base import (
    AFFECTED,
    FIXED,
    SAFE,
    STATUSES,
    UNKNOWN,
    UNREADABLE,
    Finding,
    Rule,
    RuleTransformer,
)

REGISTRY: dict[str, Rule] = {r.name: r for r in (rope_deltas.RULE, causal_mask.RULE, rope_index.RULE)}

__all__ = [
    "AFFECTED",
    "FIXED",
    "REGISTRY",
    "SAFE",
    "STATUSES",
    "UNKNOWN",
    "UNREADABLE",
    "Finding",
    "Rule",
    "RuleTransformer",
    "select",
]


def select(names: str | list[str] | None) -> list[Rule]:
    """Rules by name (comma-separated or a list), in registry order; all of them for None."""
    if names is None:
        return list(REGISTRY.values())
    wanted = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
    unknown = [n for n in wanted if n not in REGISTRY]
    if unknown or not wanted:
        raise RopefixError(
            f"Unknown rule(s) {', '.join(unknown) or '(none given)'}. The rules are: {', '.join(REGISTRY)}; "
            "pass some of them to --rules, comma-separated, or leave --rules out for all."
        )
    return [r for r in REGISTRY.values() if r.name in wanted]
