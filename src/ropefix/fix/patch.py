"""The one patch model: what the fix engine changes in one release, as a value every shipping stage reads.

``make`` runs the engine on a release's tree (a dry run: nothing is written there) and keeps each
rewritten file as a ``FileChange``: its path as an installed wheel has it (``transformers/models/...``),
its path in the tree (``src/transformers/models/...``), the bytes before and after, and how many sites
it fixes. ``patches/`` writes its ``diff`` and records its files' hashes, ``backport`` prints it,
``install`` writes its bytes into site-packages, and the wheel replaces its files: one value, so the
four can never disagree about what the fix is.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from ropefix.errors import RopefixError
from ropefix.fix import rules as rules_mod


@dataclass(frozen=True)
class FileChange:
    """One file of a patch."""

    path: str  # relative to site-packages: transformers/models/x/modeling_x.py
    original: bytes
    patched: bytes
    tree_path: str = ""  # relative to the release checkout (src/transformers/...); default src/<path>
    sites: int = 0  # sites the rewrite fixes in this file

    @property
    def checkout_path(self) -> str:
        return self.tree_path or f"src/{self.path}"

    @property
    def sha256_before(self) -> str:
        return hashlib.sha256(self.original).hexdigest()

    @property
    def sha256_after(self) -> str:
        return hashlib.sha256(self.patched).hexdigest()

    @property
    def diff(self) -> str:
        from ropefix.fix import engine

        return engine.unified_diff(self.checkout_path, self.original.decode(), self.patched.decode())


@dataclass(frozen=True)
class Patch:
    version: str
    rules: tuple[str, ...]
    changes: tuple[FileChange, ...]
    plan: dict[str, list[str]] | None = None  # family -> rules a verdict proved; None: every rule everywhere

    @property
    def diff(self) -> str:
        """A -p1 unified diff against a release checkout (the engine's per-file diffs, in its file order)."""
        return "".join(c.diff for c in self.changes)

    @property
    def sites(self) -> int:
        return sum(c.sites for c in self.changes)


def make(version: str, root: Path, plan: dict[str, list[str]] | None = None, rules: list[str] | None = None) -> Patch:
    """The engine's patch for the release tree at ``root``; empty ``changes`` when the engine changes nothing.

    ``plan`` (family -> rules, what a verdict proves) limits it to those families and rules; without it
    every rule (or ``rules``) applies everywhere it matches: the unproven static view.
    """
    from ropefix.fix import engine

    if plan is not None:
        chosen = tuple(r.name for r in rules_mod.select(sorted({r for rs in plan.values() for r in rs})))
        found = []
        for family, fam_rules in sorted(plan.items()):
            if fam_rules:
                found += engine.apply_tree(root, models=[family], rules=fam_rules, dry_run=True).changes
        prefix = engine.package_dir(root)[1]
    else:
        chosen = tuple(r.name for r in rules_mod.select(rules))
        report = engine.apply_tree(root, rules=list(chosen), dry_run=True)
        found, prefix = report.changes, report.prefix
    prefix = prefix.rstrip("/")
    changes = tuple(
        FileChange(
            _installed_path(ch.file, prefix), ch.before.encode(), ch.after.encode(), ch.file, len(ch.sites_fixed)
        )
        for ch in found
    )
    return Patch(version, chosen, changes, None if plan is None else dict(plan))


def require_changes(patch: Patch) -> Patch:
    if not patch.changes:
        raise RopefixError(
            f"The fix engine changes nothing in transformers {patch.version} with rules {', '.join(patch.rules)}: the "
            f"release is already safe there, or its code has a shape no rule knows (see `ropefix scan --versions "
            f"{patch.version}`). No patch was written. If the release still fails, `ropefix.hotfix(model)` guards it "
            "at run time."
        )
    return patch


def _installed_path(rel: str, prefix: str) -> str:
    """``src/transformers/models/x.py`` (a checkout) -> ``transformers/models/x.py`` (site-packages)."""
    inside = rel[len(prefix) + 1 :] if prefix else rel
    return f"transformers/{inside}"
