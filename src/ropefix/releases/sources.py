"""Any transformers release as a git work tree, from a git remote or from the package index.

Two sources feed the same shape of result, a work tree whose root holds ``src/transformers``:

- git: a bare clone of the remote is kept in the cache (``repos/git-*``), fetched on later
  runs, and each checkout is a ``git worktree add`` at tag ``vX.Y.Z`` on a fresh topic branch.
- pypi: the release's sdist (hash-checked) is committed into ONE local repository
  (``repos/transformers-releases``), one tagged commit per release, so later checkouts and
  diffs between releases are plain git operations.

``auto`` uses git when the remote answers (or its cached clone already holds the tag), else pypi.
"""

from __future__ import annotations

import datetime
import hashlib
import shlex
import shutil
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from ropefix import git, ui
from ropefix.errors import RopefixError
from ropefix.releases import archive, index, versions
from ropefix.store import Store

UPSTREAM_URL = "https://github.com/huggingface/transformers.git"
SOURCES = ("auto", "git", "pypi")
HISTORY_REPO = "transformers-releases"
HISTORY_BRANCH = "releases"
BRANCH_PREFIX = "ropefix/"
# How long auto waits for a remote before falling back to the index.
PROBE_TIMEOUT_S = 20


@dataclass(frozen=True)
class Checkout:
    version: str
    path: Path
    source_used: str  # "git" or "pypi"
    tag: str
    branch: str
    note: str = ""  # what else happened: why auto chose its source, a saved or replaced old tree


def tag_for(version: str) -> str:
    return f"v{version}"


def default_target(version: str, store: Store | None = None) -> Path:
    return (store or Store()).path("worktrees", f"transformers-{version}")


def resolve(spec: str, source: str = "pypi", repo: str | None = None, store: Store | None = None) -> list[str]:
    """The releases ``spec`` names: from the remote's tags (git), the index (pypi), or whichever
    ``auto`` would check out from (the remote's tags when it answers, else the index)."""
    store = store or Store()
    if source in ("git", "auto"):
        url = _normalise_url(repo or UPSTREAM_URL)
        tags = git.remote_tags(url, timeout=PROBE_TIMEOUT_S)
        cached = store.path("repos", _mirror_name(url))
        if tags is None and git.is_repo(cached):
            tags = git.Repo(cached).tags()  # the remote is silent: its cached clone still knows
        if tags is not None:
            return versions.resolve(spec, [t[1:] for t in tags if t.startswith("v") and t[1:2].isdigit()])
        if source == "git":
            raise RopefixError(
                f"{url} did not answer and no clone of it is cached, so its release tags are unknown. "
                "Check the URL or path (--repo), or use --source pypi."
            )
    # An exact release already imported needs no network at all.
    local = _release_tags(_history(store)) if git.is_repo(store.path("repos", HISTORY_REPO)) else []
    if spec.strip() in local:
        return [spec.strip()]
    try:
        return versions.resolve(spec, index.releases(store))
    except RopefixError:
        # The cached list may predate a release published since: ask the index once more.
        return versions.resolve(spec, index.releases(store, refresh=True))


def exact_release(spec: str, store: Store | None = None) -> str:
    """The one release ``spec`` names exactly (``4.49.0`` or ``v4.49.0``; see ``versions.exact``), from the
    imported releases or the index (asked once more on a miss: the cached list may predate the release)."""
    store = store or Store()
    name = spec.strip().removeprefix("v")
    if git.is_repo(store.path("repos", HISTORY_REPO)) and name in _release_tags(_history(store)):
        return name
    try:
        return versions.exact(spec, index.releases(store))
    except RopefixError:
        return versions.exact(spec, index.releases(store, refresh=True))


def checkout(
    version: str,
    source: str = "auto",
    repo: str | None = None,
    into: Path | None = None,
    force: bool = False,
    store: Store | None = None,
) -> Checkout:
    """A work tree of transformers ``version`` (an exact release) on a fresh topic branch.

    ``into`` defaults to the cache's ``worktrees/transformers-VERSION``. A target with
    uncommitted changes is refused unless ``force``; with ``force`` those changes are first
    committed to the old tree's branch (or a folder that is no work tree is moved aside), so
    nothing is ever discarded.
    """
    if source not in SOURCES:
        raise RopefixError(f"Unknown source {source!r}; use one of {', '.join(SOURCES)}.")
    store = store or Store()
    target = Path(into).expanduser().resolve() if into else default_target(version, store)
    _refuse_cache_folders(target, store)  # not even --force may replace what the cache itself is made of
    _refuse_dirty(target, force)  # before any download or clone: bad input changes nothing

    note = ""
    if source == "auto":
        source, note = _choose(version, repo, store)
    if source == "git":
        owner = _mirror(store, _normalise_url(repo or UPSTREAM_URL), fetch=True, must_answer=False)
        tag = tag_for(version)
        if not owner.has_tag(tag):
            names = versions.nearest(version, _release_tags(owner))
            raise RopefixError(
                f"The repository {repo or UPSTREAM_URL} has no tag {tag}. Nearest release tags: {', '.join(names)}."
            )
    else:
        owner, tag = _history(store), _import_release(store, version)

    with store.lock("worktrees"):
        _refuse_dirty(target, force)  # again: the tree may have changed while we downloaded
        replaced = _clear_target(target, force)
        branch = owner.fresh_branch_name(f"{BRANCH_PREFIX}{tag}")
        owner.worktree_add(target, tag, branch=branch)
    note = "; ".join(n for n in (note, replaced) if n)
    return Checkout(version, target, source, tag, branch, note)


def release_tree(version: str, store: Store | None = None) -> Path:
    """The root of a pristine work tree of ``version`` in the cache (made once, then reused).

    Read-only by contract: callers that change files use ``checkout(..., into=...)``. A tree
    found modified is refused rather than silently used.
    """
    store = store or Store()
    found = resolve(version, "pypi", store=store)
    if len(found) != 1:
        raise RopefixError(f"release_tree needs one release; {version!r} names {len(found)}: {', '.join(found)}.")
    version = found[0]
    path = store.path("worktrees", "releases", f"transformers-{version}")
    with store.lock("worktrees"):
        if git.is_repo(path):
            tree = git.Repo(path)
            if tree.is_dirty():
                raise RopefixError(
                    f"The cached release tree {path} has local changes ({', '.join(tree.dirty_paths()[:3])}...). "
                    "Release trees are read-only; use `ropefix checkout` for a tree to edit. Copy out anything you "
                    f"want to keep, then restore it: `git -C {shlex.quote(str(path))} checkout -- . && "
                    f"git -C {shlex.quote(str(path))} clean -fd` (this discards every change there)."
                )
            return path
        if path.exists():  # a leftover that is no work tree (e.g. its repository was cleared)
            shutil.rmtree(path)
    tag = _import_release(store, version)
    with store.lock("worktrees"):
        if not git.is_repo(path):
            _history(store).worktree_add(path, tag)
    return path


# -- choosing and preparing -----------------------------------------------------------------------


def _choose(version: str, repo: str | None, store: Store) -> tuple[str, str]:
    url = _normalise_url(repo or UPSTREAM_URL)
    if git.remote_tags(url, timeout=PROBE_TIMEOUT_S) is not None:
        return "git", f"auto: used git ({url} answered)"
    cached = store.path("repos", _mirror_name(url))
    if git.is_repo(cached) and git.Repo(cached).has_tag(tag_for(version)):
        return "git", f"auto: used the cached clone of {url} ({url} did not answer)"
    ui.info(f"{url} did not answer; using the package index instead")
    return "pypi", f"auto: used pypi ({url} did not answer)"


def _refuse_cache_folders(target: Path, store: Store) -> None:
    root, trees = store.root, store.path("worktrees")
    if target == root or root.is_relative_to(target):
        what = "the ropefix cache itself" if target == root else "a folder holding the ropefix cache"
    elif target.is_relative_to(root) and not (target.is_relative_to(trees) and target != trees):
        what = "a folder of the ropefix cache's own"
    elif target.is_relative_to(trees / "releases"):
        what = "where the cache keeps its read-only release trees, in"
    else:
        return
    raise RopefixError(
        f"--into {target} is {what} ({root}): replacing it would break the cache's repositories and every work "
        "tree made from them, so not even --force may. Choose a folder outside the cache, or leave --into out "
        "(the tree then goes to the cache's worktrees/)."
    )


def _refuse_dirty(target: Path, force: bool) -> None:
    if force or not target.exists() or (target.is_dir() and not any(target.iterdir())):
        return
    if git.is_repo(target):
        unsaved = git.Repo(target).unsaved_paths()
        if unsaved:
            shown = ", ".join(unsaved[:5]) + (" ..." if len(unsaved) > 5 else "")
            raise RopefixError(
                f"{target} has uncommitted, untracked or git-ignored files ({shown}). Commit or move them, or "
                "rerun with --force (which commits uncommitted changes to that tree's branch, or moves the whole "
                "folder aside when it holds ignored files such as data/ or .venv/; nothing is discarded)."
            )
        return
    raise RopefixError(
        f"{target} exists and is not a git work tree. Choose another --into, or rerun with --force "
        "(which moves it aside, not deletes it)."
    )


def _clear_target(target: Path, force: bool) -> str:
    """Make ``target`` absent or empty, keeping whatever was there; returns what was done."""
    if not target.exists() or (target.is_dir() and not any(target.iterdir())):
        return ""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    aside = target.with_name(f"{target.name}.ropefix-moved-{stamp}")
    if git.is_repo(target) and _is_linked_worktree(target):
        tree = git.Repo(target)
        owner = git.Repo(Path(tree.run("rev-parse", "--path-format=absolute", "--git-common-dir")))
        if tree.ignored_work():
            # Ignored files (data/, .venv/) cannot be committed: the whole tree moves, still a work tree.
            owner.run("worktree", "move", str(target), str(aside))
            return f"moved the previous tree at {target}, with its ignored files, to {aside} (still a work tree)"
        branch = tree.current_branch()
        said = f"replaced the previous tree at {target}"
        if tree.is_dirty():
            if branch is None:
                branch = tree.fresh_branch_name(f"{BRANCH_PREFIX}saved")
                tree.create_branch(branch)
            sha = tree.commit_all("ropefix: save uncommitted work before `ropefix checkout --force`")
            said += f"; its uncommitted work is saved as commit {sha[:10]} on branch {branch}"  # type: ignore[index]
        elif branch:
            said += f"; its branch {branch} is kept"
        owner.worktree_remove(target, force=True)
        return said
    # Not one of our work trees (a user's clone, a plain folder): move it aside, never delete.
    target.rename(aside)
    return f"moved the previous contents of {target} to {aside}"


def _is_linked_worktree(path: Path) -> bool:
    return (path / ".git").is_file()


# -- the git source -------------------------------------------------------------------------------


def _normalise_url(repo: str) -> str:
    """URLs as given; a local path becomes absolute so the cache key does not depend on the cwd."""
    if "://" in repo or repo.startswith("git@"):
        return repo
    return str(Path(repo).expanduser().resolve())


def _mirror_name(url: str) -> str:
    tail = Path(urllib.parse.urlsplit(url).path).name.removesuffix(".git") or "repo"
    return f"git-{tail}-{hashlib.sha256(url.encode()).hexdigest()[:12]}"


def _mirror(store: Store, url: str, *, fetch: bool, must_answer: bool = True) -> git.Repo:
    """The cache's bare clone of ``url``: cloned once; fetched (tags included) when asked."""
    path = store.path("repos", _mirror_name(url))
    with store.lock(f"repo-{path.name}"):
        if git.is_repo(path):
            mirror = git.Repo(path)
            if fetch:
                try:
                    mirror.fetch("origin", tags=True, timeout=300)
                except RopefixError as e:
                    if must_answer:
                        raise
                    ui.info(f"could not fetch {url} ({str(e).splitlines()[-1]}); using the cached clone")
            return mirror
        ui.info(f"cloning {url} into the cache (once)")
        with store.atomic_dir(path) as tmp:
            try:
                git.clone_bare(url, tmp)
            except RopefixError as e:
                raise RopefixError(
                    f"Could not clone {url}: {str(e).splitlines()[-1]}. Check the URL or path (--repo), or use "
                    "--source pypi to fetch the release from the package index."
                ) from e
        return git.Repo(path)


def _release_tags(repo: git.Repo) -> list[str]:
    return [t[1:] for t in repo.tags() if t.startswith("v") and t[1:2].isdigit()]


# -- the pypi source ------------------------------------------------------------------------------


BYTECODE = ("__pycache__/", "*.py[cod]")


def _history(store: Store) -> git.Repo:
    path = store.path("repos", HISTORY_REPO)
    with store.lock(f"repo-{HISTORY_REPO}"):
        if not git.is_repo(path):
            with store.atomic_dir(path) as tmp:
                git.init(tmp, bare=True)
        history = git.Repo(path)
        # sdists carry no .gitignore: bytecode written by importing a release tree is not a change
        history.ignore(BYTECODE)
    return history


def _import_release(store: Store, version: str) -> str:
    """Tag ``v<version>`` in the history repo, importing the sdist first if it is not there yet."""
    tag = tag_for(version)
    history = _history(store)
    with store.lock(f"repo-{HISTORY_REPO}"):
        if history.has_tag(tag):
            return tag
        sdist = index.download(version, store)
        ui.info(f"importing {sdist.name} into {history.path.name}")
        # Streamed from the archive into git (checked like an extraction, never unpacked to disk).
        message = f"transformers {version}\n\nImported from {sdist.name}."
        sha = history.commit_files(archive.files(sdist), message, branch=HISTORY_BRANCH)
        history.tag(tag, sha)
    return tag


# -- what a tree holds ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TreeSummary:
    root: Path
    python_files: int  # under src/transformers
    models: int  # folders under src/transformers/models
    rope_deltas: dict[str, list[str]]  # model -> its files that mention rope_deltas


def describe(root: Path) -> TreeSummary:
    """Count what a release tree holds and which models' files carry ``rope_deltas`` (a text search)."""
    package = Path(root) / "src" / "transformers"
    if not package.is_dir():
        raise RopefixError(f"{root} holds no src/transformers; it is not a transformers source tree.")
    models = package / "models"
    found: dict[str, list[str]] = {}
    for path in sorted(models.glob("*/*.py")):
        if "rope_deltas" in path.read_text(encoding="utf-8", errors="replace"):
            found.setdefault(path.parent.name, []).append(path.name)
    return TreeSummary(
        root=Path(root),
        python_files=sum(1 for _ in package.rglob("*.py")),
        models=sum(1 for p in models.iterdir() if p.is_dir() and not p.name.startswith("__")),
        rope_deltas=found,
    )
