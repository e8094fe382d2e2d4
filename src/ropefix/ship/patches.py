"""One patch per affected release, made by the engine on that release's own tree, plus an index.

``patches/transformers-X.Y.Z.patch`` is a -p1 unified diff against a release checkout
(``src/transformers/...``); ``patches/index.json`` lists, per release, the patch file, the number
of sites fixed and each file's sha256 before and after. Releases where the engine changes
nothing are listed as not affected, so the index says what was looked at.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ropefix import proc, ui
from ropefix.errors import RopefixError
from ropefix.fix import engine
from ropefix.store import Store

INDEX = "index.json"
DEFAULT_SPEC = "4.45-latest"  # from the first Qwen2-VL release, the latest patch of every minor


@dataclass(frozen=True)
class FileEntry:
    path: str
    sha256_before: str
    sha256_after: str


@dataclass(frozen=True)
class Generated:
    release: str
    diff: str
    sites: int
    files: list[FileEntry]

    @property
    def patch_name(self) -> str:
        return f"transformers-{self.release}.patch"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def generate(release: str, root: Path, rules: list[str] | None = None) -> Generated:
    """The engine's patch for the release tree at ``root`` (nothing is written to the tree)."""
    report = engine.apply_tree(root, rules=rules, dry_run=True)
    files = [FileEntry(ch.file, _sha(ch.before), _sha(ch.after)) for ch in report.changes]
    return Generated(release, report.diff, sum(len(ch.sites_fixed) for ch in report.changes), files)


def tree(release: str, store: Store | None = None) -> Path:
    from ropefix.releases import sources

    return sources.release_tree(release, store)


def refresh(out: Path, spec: str = DEFAULT_SPEC, rules: list[str] | None = None, store: Store | None = None) -> dict:
    """Regenerate every patch for the releases ``spec`` names; returns the new index."""
    from ropefix.releases import sources

    releases = sources.resolve(spec, store=store)
    made: list[Generated] = []
    for release in ui.progress(releases, "patch"):
        made.append(generate(release, tree(release, store), rules))
    index = {
        "spec": spec,
        "rules": rules or "all",
        "patches": [
            {"release": g.release, "patch": g.patch_name, "sites": g.sites, "files": [asdict(f) for f in g.files]}
            for g in made
            if g.diff
        ],
        "not_affected": [g.release for g in made if not g.diff],
    }
    out.mkdir(parents=True, exist_ok=True)
    store = store or Store()
    for g in made:
        stale = out / g.patch_name
        if g.diff:
            with store.atomic_file(stale, "w") as fh:
                fh.write(g.diff)
        elif stale.exists():
            stale.unlink()
    with store.atomic_file(out / INDEX, "w") as fh:
        fh.write(json.dumps(index, indent=1) + "\n")
    return index


def diff_body(text: str) -> str:
    """The diff without a leading description (``ropefix backport`` writes one above the same diff)."""
    at = text.find("--- a/")
    return text[at:] if at > 0 and text[at - 1] == "\n" else text


def load_index(out: Path) -> dict:
    path = out / INDEX
    if not path.exists():
        raise RopefixError(f"No {path}. Generate the patches first: `ropefix patches --refresh`.")
    return json.loads(path.read_text())


def check_one(out: Path, entry: dict, root: Path, regenerate: bool, rules: list[str] | None = None) -> list[str]:
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
    if regenerate and generate(entry["release"], root, rules).diff != diff_body(patch.read_text()):
        problems.append(f"{entry['release']}: {patch.name} differs from what the engine makes now")
    return problems
