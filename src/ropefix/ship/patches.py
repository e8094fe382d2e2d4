"""One patch per release whose verdict proves it, made by the engine on that release's own tree, plus an index.

A patch exists only with its proof: the release's verdict (``ropefix.prove.verdicts``: the kit's
committed sweep) names, per model family, the rules a failing layout proved and the patched run
turned green; the patch applies exactly those rules to exactly those families. Releases without a
verdict, or whose verdict proves nothing, get no patch and are listed with the reason.

``patches/transformers-X.Y.Z.patch`` is a -p1 unified diff against a release checkout
(``src/transformers/...``); ``patches/index.json`` records per release: the verdict's state, torch
and kit version, and per family its state, the proven rules, the failing layout (shrunk example),
the failure site and the number of compared (call path x prompt kind) pairs; plus each file's
sha256 before and after.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ropefix import proc, ui
from ropefix.errors import RopefixError
from ropefix.fix import patch as patch_mod
from ropefix.fix.patch import Patch
from ropefix.prove.verdict import Report, State
from ropefix.store import Store

INDEX = "index.json"
DEFAULT_SPEC = "4.45-latest"  # from the first Qwen2-VL release, the latest patch of every minor
INDEX_SCHEMA = 2


def patch_name(release: str) -> str:
    return f"transformers-{release}.patch"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def plan_of(report: Report) -> dict[str, list[str]]:
    """Per family, the rules the verdict proves and may ship (the gate ``backport`` uses too)."""
    return report.ship_plan()[0]


def generate(release: str, root: Path, plan: dict[str, list[str]] | None = None) -> Patch:
    """The engine's patch for the release tree at ``root`` (nothing is written to the tree).

    ``plan`` (family -> rules) limits it to proven rules per family; None applies every rule everywhere
    (the static view, for ``--unproven`` uses and tests).
    """
    return patch_mod.make(release, root, plan=plan)


def generate_proven(release: str, root: Path, report: Report) -> Patch | None:
    """The patch the verdict proves for ``release``, or None when it proves nothing."""
    plan = plan_of(report)
    if not plan:
        return None
    made = generate(release, root, plan)
    return made if made.changes else None


def write_one(made: Patch, folder: Path) -> Path:
    from ropefix.files import atomic_write

    return atomic_write(folder / patch_name(made.version), made.diff)


def tree(release: str, store: Store | None = None) -> Path:
    from ropefix.releases import sources

    return sources.release_tree(release, store)


# ---------------------------------------------------------------- the index


def family_entries(report: Report) -> list[dict[str, Any]]:
    """What index.json records of a verdict, per family: state, proven rules, proofs, compared pairs."""
    out = []
    for f in report.families:
        proofs = [
            {
                "rule": v.rule,
                "state": v.state.value,
                "site": v.proof.site,
                "code": v.proof.failure.code,
                "tree": v.proof.tree,
                "layout": v.proof.failure.example.layout,
                "example": v.proof.describe(),
                "after": v.after,
            }
            for v in f.verdicts
            if v.proof is not None
        ]
        out.append(
            {
                "family": f.family,
                "state": f.state.value,
                "rules": list(f.proven_rules),
                "judged": f.judged,
                "proofs": proofs,
                "findings": sorted({x.hazard for x in f.findings}),
                "reason": f.reason or "; ".join(f"{v.rule}: {v.reason}" for v in f.verdicts if v.reason),
            }
        )
    return out


def release_entry(release: str, report: Report | None, made: Patch | None) -> dict[str, Any]:
    if report is None:
        return {"release": release, "state": State.NOT_JUDGED.value, "patch": None, "reason": "no verdict"}
    entry: dict[str, Any] = {
        "release": release,
        "state": report.state.value,
        "torch": report.torch,
        "kit": report.kit,
        "profile": report.profile,
        "patch": patch_name(made.version) if made else None,
        "sites": made.sites if made else 0,
        "plan": (made.plan or {}) if made else {},
        "files": [
            {"path": c.checkout_path, "sha256_before": c.sha256_before, "sha256_after": c.sha256_after}
            for c in (made.changes if made else ())
        ],
        "families": family_entries(report),
    }
    if made is None:
        entry["reason"] = report.ship_plan()[1] or "the proven rules change nothing in this tree"
    return entry


def refresh(
    out: Path, spec: str = DEFAULT_SPEC, store: Store | None = None, verdict_for: Any = None
) -> dict[str, Any]:
    """Regenerate the patch of every release ``spec`` names whose committed verdict proves one; returns the index.

    ``verdict_for(release) -> Report | None`` defaults to the kit's committed verdicts.
    """
    from ropefix.files import atomic_write
    from ropefix.prove import verdicts
    from ropefix.releases import sources

    lookup = verdict_for or verdicts.committed
    releases = sources.resolve(spec, store=store)
    entries = []
    made_all: list[Patch] = []
    for release in ui.progress(releases, "patch"):
        report = lookup(release)
        made = generate_proven(release, tree(release, store), report) if report is not None else None
        if made is not None:
            made_all.append(made)
        entries.append(release_entry(release, report, made))
    index = {"schema": INDEX_SCHEMA, "spec": spec, "releases": entries}
    out.mkdir(parents=True, exist_ok=True)
    keep = {patch_name(m.version) for m in made_all}
    for m in made_all:
        atomic_write(out / patch_name(m.version), m.diff)
    for stale in out.glob("transformers-*.patch"):
        if stale.name not in keep and stale.name in {patch_name(r) for r in releases}:
            stale.unlink()  # a patch this command wrote earlier whose proof no longer holds
    atomic_write(out / INDEX, json.dumps(index, indent=1) + "\n")
    return index


def diff_body(text: str) -> str:
    """The diff without a leading description (``ropefix backport`` writes one above the same diff)."""
    at = text.find("--- a/")
    return text[at:] if at > 0 and text[at - 1] == "\n" else text


def load_index(out: Path) -> dict[str, Any]:
    path = out / INDEX
    if not path.exists():
        raise RopefixError(f"No {path}. Generate the patches first: `ropefix patches --refresh`.")
    try:
        index = json.loads(path.read_text())
    except ValueError as e:
        raise RopefixError(f"{path} is not valid JSON ({e}); regenerate it with `ropefix patches --refresh`.") from e
    if index.get("schema") != INDEX_SCHEMA:
        raise RopefixError(
            f"{path} is of schema {index.get('schema')!r}, not {INDEX_SCHEMA}: it was written by another ropefix. "
            "Regenerate it with `ropefix patches --refresh`."
        )
    return index


def patched_entries(index: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in index["releases"] if e.get("patch")]


def check_one(out: Path, entry: dict[str, Any], root: Path, regenerate: bool) -> list[str]:
    """Problems with one committed patch: it must apply to its release and (if asked) equal a fresh one."""
    problems: list[str] = []
    patch = out / entry["patch"]
    if not patch.exists():
        return [f"{entry['release']}: {patch} is listed in the index but missing"]
    for f in entry["files"]:
        target = root / f["path"]
        if not target.exists() or _sha(target.read_text()) != f["sha256_before"]:
            problems.append(f"{entry['release']}: {f['path']} is not the file the patch was made from")
    done = proc.run(["git", "apply", "--check", "-p1", patch.resolve()], cwd=root)
    if not done.ok:
        problems.append(f"{entry['release']}: git apply --check fails:\n{done.err.strip()}")
    if regenerate and generate(entry["release"], root, entry["plan"]).diff != diff_body(patch.read_text()):
        problems.append(f"{entry['release']}: {patch.name} differs from what the engine makes now")
    return problems


def release_table(index: dict[str, Any]) -> str:
    """The README's release table: per release, the verdict, the proven rules per family, the patch."""
    rows = [
        "| transformers | verdict | proven (family: rules) | pairs judged | patch |",
        "| --- | --- | --- | --- | --- |",
    ]
    for e in index["releases"]:
        fams = e.get("families", [])
        proven = "; ".join(f"{f['family']}: {', '.join(f['rules'])}" for f in fams if f["rules"]) or "-"
        judged = ", ".join(f"{f['family']} {f['judged']}" for f in fams) or "-"
        patch = f"`patches/{e['patch']}`" if e.get("patch") else e.get("reason", "-")
        rows.append(f"| {e['release']} | {e['state']} | {proven} | {judged} | {patch} |")
    return "\n".join(rows) + "\n"
