"""Backports: the fix for one pinned release, made by the engine on that release's own tree.

No line numbers are shifted from another release: the fix engine rewrites the release's own
files (a dry run: the rewritten text stays in memory), and the difference is the patch. It is kept as a
value (``install.Patch``, with the paths an installed wheel uses) and as a unified diff that applies to a
release checkout with ``git apply`` or ``patch -p1``: printed, written only where asked (``--out``), or,
for an install, kept in the install's state folder beside its backups.
"""

from __future__ import annotations

from pathlib import Path

from ropefix.errors import RopefixError
from ropefix.files import atomic_write
from ropefix.fix import rules as rules_mod
from ropefix.prove.verdict import Report
from ropefix.ship.install import FileChange, Patch
from ropefix.store import Store


def patch_name(version: str) -> str:
    return f"transformers-{version}.patch"


def make_patch(
    version: str, rules: list[str] | None = None, tree: Path | None = None, plan: dict[str, list[str]] | None = None
) -> Patch:
    """The fix for ``version`` from the release's tree (fetched if not given).

    ``plan`` (family -> rules, what a verdict proves) limits it to those families and rules; without
    it every rule (or ``rules``) applies everywhere it matches: the unproven static view.
    """
    from ropefix.fix import engine
    from ropefix.releases import sources

    root = tree or sources.release_tree(version)
    if plan is not None:
        chosen = tuple(r.name for r in rules_mod.select(sorted({r for rs in plan.values() for r in rs})))
        found = []
        for family, fam_rules in sorted(plan.items()):
            found += engine.apply_tree(root, models=[family], rules=fam_rules, dry_run=True).changes
        prefix = engine.package_dir(root)[1]
    else:
        chosen = tuple(r.name for r in rules_mod.select(rules))
        report = engine.apply_tree(root, rules=list(chosen), dry_run=True)  # the engine's rewrite, kept in memory
        found, prefix = report.changes, report.prefix
    prefix = prefix.rstrip("/")
    changes = tuple(
        FileChange(_installed_path(ch.file, prefix), ch.before.encode(), ch.after.encode()) for ch in found
    )
    if not changes:
        raise RopefixError(
            f"The fix engine changes nothing in transformers {version} with rules {', '.join(chosen)}: the release "
            f"is already safe there, or its code has a shape no rule knows (see `ropefix scan --versions {version}`). "
            "No patch was written. If the release still fails, `ropefix.hotfix(model)` guards it at run time."
        )
    return Patch(version, chosen, changes, plan)


def unified_diff(patch: Patch) -> str:
    """The patch as a -p1 diff against a release checkout: byte for byte what ``ropefix patches --refresh``
    writes for the same release and rules (the engine's own per-file diff, in the engine's file order)."""
    from ropefix.fix import engine

    return "".join(
        engine.unified_diff(f"src/{c.path}", c.original.decode(), c.patched.decode()) for c in patch.changes
    )


def write_patch(patch: Patch, folder: Path) -> Path:
    return atomic_write(folder / patch_name(patch.version), unified_diff(patch))


def _installed_path(rel: str, prefix: str) -> str:
    """``src/transformers/models/x.py`` (a checkout) -> ``transformers/models/x.py`` (site-packages)."""
    inside = rel[len(prefix) + 1 :] if prefix else rel
    return f"transformers/{inside}"


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
