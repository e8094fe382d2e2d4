"""What clearing the cache would lose, and pruning only what is safe to remove.

The cache holds the user's work in three places a plain ``rm -rf`` would destroy: work trees
under ``worktrees/`` with uncommitted, untracked or ignored files; branches in the cache's
repositories that hold commits no release tag holds (``checkout --force`` saves edits there, ``pr``
commits its series there); and work trees made with ``--into`` outside the cache, whose git
metadata lives in the cache's repositories. ``at_risk`` lists them; ``prune`` removes only what no
one can miss: stale orphans of crashed runs, read-only release trees whose repository is gone, and
git's records of work trees whose folders are gone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ropefix import git
from ropefix.errors import RopefixError
from ropefix.store import Orphan, Store

# Branches the kit creates for the user: ``ropefix checkout`` (``sources.BRANCH_PREFIX``) and
# ``ropefix pr`` (``pr.TOPIC``); tests check these agree. Other branches in a mirror are upstream's.
WORK_BRANCH_PREFIXES = ("ropefix/", "fix-rope-deltas-device-")
RELEASE_TREES = "releases"  # worktrees/releases/: read-only release trees (sources.release_tree)


@dataclass(frozen=True)
class Risk:
    path: Path
    what: str  # one line: what would be lost and why


@dataclass
class Pruned:
    orphans: list[Orphan] = field(default_factory=list)
    trees: list[Path] = field(default_factory=list)
    kept: list[Risk] = field(default_factory=list)  # orphaned trees that may hold work
    young: list[Orphan] = field(default_factory=list)  # orphans a running ropefix may still be writing


def at_risk(store: Store, section: str | None = None) -> list[Risk]:
    """What clearing ``section`` (or the whole cache) would lose or break."""
    risks: list[Risk] = []
    if section in (None, "worktrees"):
        for tree in _trees(store):
            risks += _tree_risks(tree, release=tree.parent.name == RELEASE_TREES)
    if section in (None, "repos"):
        for repo in _repos(store):
            risks += _repo_risks(store, repo)
    return risks


def prune(store: Store) -> Pruned:
    done = Pruned()
    for orphan in store.orphans():
        (done.young if not orphan.stale else done.orphans).append(orphan)
    store.remove_orphans()
    with store.lock("worktrees"):
        for tree in _trees(store):
            if _owner_gone(tree):
                if tree.parent.name == RELEASE_TREES:  # read-only by contract: nothing of the user's
                    _rmtree(tree)
                    done.trees.append(tree)
                else:
                    done.kept += _tree_risks(tree, release=False)
    for repo in _repos(store):
        repo.run("worktree", "prune")  # forget trees whose folders are gone
    return done


def _trees(store: Store) -> list[Path]:
    base = store.path("worktrees")
    found = []
    for child in sorted(base.iterdir()):
        if child.name == RELEASE_TREES and not (child / ".git").exists():
            found += sorted(p for p in child.iterdir() if p.is_dir() and not p.name.startswith("."))
        elif child.is_dir() and not child.name.startswith("."):
            found.append(child)
    return found


def _repos(store: Store) -> list[git.Repo]:
    return [git.Repo(p) for p in sorted(store.path("repos").iterdir()) if p.is_dir() and git.is_repo(p)]


def _owner_gone(tree: Path) -> bool:
    """A linked work tree whose repository no longer exists (its ``.git`` file points nowhere), or a folder
    that is no work tree at all."""
    marker = tree / ".git"
    if marker.is_file():
        target = marker.read_text(errors="replace").removeprefix("gitdir:").strip()
        return not Path(target).is_dir()
    return not marker.exists()


def _tree_risks(tree: Path, *, release: bool) -> list[Risk]:
    if _owner_gone(tree):
        if release:
            return []
        return [Risk(tree, "a folder whose repository is gone: ropefix cannot tell whether it holds work")]
    try:
        unsaved = git.Repo(tree).unsaved_paths()
    except RopefixError:
        return [Risk(tree, "a work tree git cannot read: ropefix cannot tell whether it holds work")]
    if not unsaved:
        return []
    shown = ", ".join(unsaved[:4]) + (" ..." if len(unsaved) > 4 else "")
    return [Risk(tree, f"uncommitted, untracked or ignored files: {shown}")]


def _repo_risks(store: Store, repo: git.Repo) -> list[Risk]:
    risks = []
    for branch in repo.branches():
        if not branch.startswith(WORK_BRANCH_PREFIXES):
            continue
        extra = repo.run("rev-list", "--count", f"refs/heads/{branch}", "--not", "--tags", "--remotes")
        if extra != "0":
            risks.append(Risk(repo.path, f"branch {branch}: {extra} commit(s) no release holds (saved work, a PR)"))
    for tree in repo.worktrees():
        if tree.exists() and not tree.resolve().is_relative_to(store.root) and tree.resolve() != repo.path.resolve():
            risks.append(Risk(tree, f"a work tree outside the cache whose git data lives in {repo.path.name}"))
    return risks


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path)
