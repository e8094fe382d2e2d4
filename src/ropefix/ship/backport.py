"""Backports: the fix for one pinned release, made by the engine on that release's own tree.

No line numbers are shifted from another release: the fix engine rewrites the release's own
files (a dry run: the rewritten text stays in memory), and the difference is the patch. It is kept as a
value (``ropefix.fix.patch.Patch``, the one patch model, with the paths an installed wheel uses) and
as a unified diff that applies to a release checkout with ``git apply`` or ``patch -p1``: printed, written only where asked (``--out``), or,
for an install, kept in the install's state folder beside its backups.
"""

from __future__ import annotations

from pathlib import Path

from ropefix.errors import RopefixError
from ropefix.files import atomic_write
from ropefix.fix import patch as patch_mod
from ropefix.fix.patch import Patch
from ropefix.prove.verdict import Report
from ropefix.store import Store


def patch_name(version: str) -> str:
    return f"transformers-{version}.patch"


def make_patch(
    version: str, rules: list[str] | None = None, tree: Path | None = None, plan: dict[str, list[str]] | None = None
) -> Patch:
    """The fix for ``version`` from the release's tree (fetched if not given); refused when it changes nothing.

    ``plan`` (family -> rules, what a verdict proves) limits it to those families and rules; without
    it every rule (or ``rules``) applies everywhere it matches: the unproven static view.
    """
    from ropefix.releases import sources

    root = tree or sources.release_tree(version)
    return patch_mod.require_changes(patch_mod.make(version, root, plan=plan, rules=rules))


def write_patch(patch: Patch, folder: Path) -> Path:
    return atomic_write(folder / patch_name(patch.version), patch.diff)


# ---------------------------------------------------------------- the proof gate


def verdict_for(version: str, store: Store | None = None) -> Report:
    """The verdict for ``version``: the cache's or the kit's committed one; else verify runs first (minutes)."""
    from ropefix.prove import verdicts

    return verdicts.ensure(version, store)


def proven_plan(
    report: Report, force: bool = False, override: str = "pass --force to apply the unproven static patch anyway"
) -> dict[str, list[str]] | None:
    """Per family, the rules the verdict proves; None (the static, unproven patch) only with ``force``.

    ``override`` is the refusal's last advice: what the caller offers instead (the wheel offers no override).
    """
    plan, why = report.ship_plan()
    if plan:
        return plan
    if force:
        return None
    raise RopefixError(
        f"Refusing to backport transformers {report.release}: {why}. A patch ships only with its proof; nothing was "
        "written. Re-verify with a deeper search (`ropefix verify --profile dev`), use `ropefix.hotfix(model)`, or "
        f"{override}."
    )
