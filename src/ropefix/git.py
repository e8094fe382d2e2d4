"""The one module that owns GitPython: repositories, branches, work trees, commits, patches.

Everything else in ropefix calls these functions and ``Repo`` methods and never imports ``git``.
Every git process runs without leaked ``GIT_*`` variables (a hook or an outer git command can
set GIT_DIR or GIT_INDEX_FILE, which would silently point our commands at another repository).
Failures raise ``RopefixError`` carrying the command, its exit code and its output.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ropefix import files
from ropefix.errors import RopefixError


@dataclass(frozen=True)
class Identity:
    name: str
    email: str


# Used for commits the kit makes for itself (imported releases) and when a user has no
# git identity configured; a user's own identity wins everywhere else.
KIT_IDENTITY = Identity("ropefix", "ropefix@localhost")

_ENV_LOCK = threading.Lock()

# Ignored paths that are no one's work: bytecode (importing a tree writes it) and the caches ruff and
# pytest write when the kit checks or tests a tree. Anything else ignored (.venv/, data/, logs) is kept.
DISPOSABLE = ("__pycache__/", ".pyc", ".pyo", ".ruff_cache/", ".pytest_cache/")


@contextlib.contextmanager
def _scrubbed_environ() -> Iterator[None]:
    # GitPython builds each child's environment from os.environ, so the leak has to be removed
    # there for the duration of the call (GIT_PYTHON_* configure GitPython itself and stay).
    with _ENV_LOCK:
        saved = {k: v for k, v in os.environ.items() if k.startswith("GIT_") and not k.startswith("GIT_PYTHON_")}
        for k in saved:
            del os.environ[k]
        try:
            yield
        finally:
            os.environ.update(saved)


def _execute(
    cwd: Path | None,
    args: Sequence[str],
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    *,
    raw: bool = False,
):  # -> str, or bytes when raw
    # Imported where used: GitPython runs `git version` on import, and it is the ship extra's, so
    # `import ropefix.git` (and every module above it) stays cheap and works on the lean core.
    import git as gitpython

    cmd = [gitpython.Git.GIT_PYTHON_GIT_EXECUTABLE or "git", *args]
    runner = gitpython.Git(str(cwd) if cwd else None)
    try:
        with _scrubbed_environ():
            return runner.execute(
                cmd,
                env=dict(env or {}),
                kill_after_timeout=timeout,
                stdout_as_string=not raw,
                strip_newline_in_stdout=not raw,
            )
    except gitpython.GitCommandError as e:
        raise RopefixError(
            f"git failed: {' '.join(cmd)} (in {cwd}), exit code {e.status}.\n{_text(e.stderr).strip() or _text(e.stdout).strip()}"
        ) from e
    except gitpython.GitCommandNotFound as e:
        raise RopefixError("git is not installed or not on PATH. Install git (2.30 or newer) and retry.") from e


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value or "")


def _identity_env(identity: Identity) -> dict[str, str]:
    return {
        "GIT_AUTHOR_NAME": identity.name,
        "GIT_AUTHOR_EMAIL": identity.email,
        "GIT_COMMITTER_NAME": identity.name,
        "GIT_COMMITTER_EMAIL": identity.email,
    }


def _quote(path: str) -> bytes:
    # fast-import's C-style quoting, so any name (spaces, quotes, newlines) survives.
    raw = path.encode()
    escaped = raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"').replace(b"\n", b"\\n")
    return b'"' + escaped + b'"'


def is_repo(path: Path) -> bool:
    """Whether ``path`` is the top of a git work tree or a bare repository."""
    path = Path(path)
    if not path.is_dir():
        return False
    try:
        top = _execute(path, ["rev-parse", "--show-toplevel"]) if not _is_bare_dir(path) else str(path)
    except RopefixError:
        return False
    return Path(top).resolve() == path.resolve()


def _is_bare_dir(path: Path) -> bool:
    return (path / "HEAD").is_file() and (path / "objects").is_dir() and not (path / ".git").exists()


def open_repo(path: Path) -> Repo:
    if not is_repo(path):
        raise RopefixError(f"{path} is not the top of a git repository. Point ropefix at a git work tree.")
    return Repo(Path(path).resolve())


def init(path: Path, *, bare: bool = False) -> Repo:
    path.mkdir(parents=True, exist_ok=True)
    _execute(path, ["init", "-q", *(["--bare"] if bare else []), "."])
    repo = Repo(path.resolve())
    # Release files must be stored byte for byte, whatever the user's global settings.
    repo.run("config", "core.autocrlf", "false")
    return repo


def clone_bare(url: str, dest: Path, *, timeout: float | None = None) -> Repo:
    """A bare clone of ``url`` with every branch and tag (our local mirror of a remote)."""
    _execute(None, ["clone", "-q", "--bare", url, str(dest)], timeout=timeout)
    repo = Repo(dest.resolve())
    # Remote branches under refs/remotes so fetching never touches our own topic branches.
    repo.run("config", "remote.origin.fetch", "+refs/heads/*:refs/remotes/origin/*")
    return repo


def remote_tags(url: str, *, timeout: float = 20) -> list[str] | None:
    """The tag names ``url`` advertises, or None when it does not answer (unreachable, not a repo)."""
    try:
        out = _execute(None, ["ls-remote", "--tags", "--refs", url], timeout=timeout, env={"GIT_TERMINAL_PROMPT": "0"})
    except RopefixError:
        return None
    return [line.split("refs/tags/", 1)[1] for line in out.splitlines() if "refs/tags/" in line]


class Repo:
    """A git repository (work tree or bare) at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Repo({str(self.path)!r})"

    def run(self, *args: str, env: Mapping[str, str] | None = None, timeout: float | None = None) -> str:
        """Any git command in this repository (the escape hatch; prefer the named methods)."""
        return _execute(self.path, args, env=env, timeout=timeout)

    # -- state ---------------------------------------------------------------------------------
    @property
    def bare(self) -> bool:
        return self.run("rev-parse", "--is-bare-repository") == "true"

    def dirty_paths(self, *, untracked: bool = True) -> list[str]:
        """Paths with uncommitted changes (staged, unstaged and, by default, untracked)."""
        out = self.run("status", "--porcelain", "-z", *([] if untracked else ["--untracked-files=no"]))
        return [entry[3:] for entry in out.split("\0") if len(entry) > 3]

    def is_dirty(self, *, untracked: bool = True) -> bool:
        return bool(self.dirty_paths(untracked=untracked))

    def ignored_paths(self) -> list[str]:
        """Files and folders git ignores (``.venv/``, ``data/``, logs): not changes to git, but often work."""
        out = self.run("status", "--porcelain", "-z", "--ignored")
        return [entry[3:] for entry in out.split("\0") if entry.startswith("!! ")]

    def unsaved_paths(self, disposable: Sequence[str] = DISPOSABLE) -> list[str]:
        """Everything removing this work tree would lose: uncommitted and untracked changes, and ignored files
        except the ``disposable`` ones (by default bytecode and tool caches, which running code regenerates)."""
        skip = tuple(disposable)
        # untracked files one by one (-uall), so a folder holding only bytecode is seen as such: a tree without
        # a .gitignore (one imported from an sdist) shows importing's __pycache__/ as untracked, not ignored
        out = self.run("status", "--porcelain", "-z", "--untracked-files=all")
        changed = [e[3:] for e in out.split("\0") if len(e) > 3 and not (e.startswith("?? ") and e.endswith(skip))]
        return changed + self.ignored_work(disposable)

    def ignored_work(self, disposable: Sequence[str] = DISPOSABLE) -> list[str]:
        """Ignored files that are someone's work (``data/``, ``.venv/``): no commit can keep them."""
        return [p for p in self.ignored_paths() if not p.endswith(tuple(disposable))]

    def rev_parse(self, ref: str) -> str:
        return self.run("rev-parse", "--verify", "-q", f"{ref}^{{commit}}")

    def has_ref(self, ref: str) -> bool:
        try:
            self.rev_parse(ref)
        except RopefixError:
            return False
        return True

    def head(self) -> str | None:
        return self.rev_parse("HEAD") if self.has_ref("HEAD") else None

    def current_branch(self) -> str | None:
        try:
            return self.run("symbolic-ref", "-q", "--short", "HEAD") or None
        except RopefixError:
            return None  # detached HEAD

    def branches(self) -> list[str]:
        return self.run("for-each-ref", "--format=%(refname:short)", "refs/heads").split()

    def tags(self) -> list[str]:
        return self.run("tag", "--list").split()

    def has_tag(self, name: str) -> bool:
        return self.has_ref(f"refs/tags/{name}")

    # -- changes -------------------------------------------------------------------------------
    def create_branch(self, name: str, start: str = "HEAD", *, checkout: bool = True) -> None:
        if checkout:
            self.run("switch", "-q", "-c", name, start)
        else:
            self.run("branch", name, start)

    def fresh_branch_name(self, base: str) -> str:
        """``base``, or ``base-2``, ``base-3``, ... whichever does not exist yet."""
        taken = set(self.branches())
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}-{n}"
        return name

    def tag(self, name: str, ref: str = "HEAD", message: str | None = None) -> None:
        extra = ["-a", "-m", message] if message else []
        self.run("tag", *extra, name, ref, env=_identity_env(self.identity()))

    def identity(self) -> Identity:
        """The configured user, or the kit's own identity when none is set."""
        try:
            return Identity(self.run("config", "user.name"), self.run("config", "user.email"))
        except RopefixError:
            return KIT_IDENTITY

    def commit_paths(self, paths: Sequence[str | Path], message: str, identity: Identity | None = None) -> str:
        """Stage exactly ``paths`` (additions, changes and deletions) and commit them; returns the sha."""
        rels = [str(p) for p in paths]
        self.run("add", "-A", "--", *rels)
        self.run(
            "commit", "-q", "--no-verify", "-m", message, "--", *rels, env=_identity_env(identity or self.identity())
        )
        return self.rev_parse("HEAD")

    def commit_all(self, message: str, identity: Identity | None = None) -> str | None:
        """Commit every change in the work tree (untracked files too); None when there was nothing."""
        if not self.is_dirty():
            return None
        self.run("add", "-A")
        self.run("commit", "-q", "--no-verify", "-m", message, env=_identity_env(identity or self.identity()))
        return self.rev_parse("HEAD")

    def commit_directory(self, folder: Path, message: str, *, branch: str, identity: Identity = KIT_IDENTITY) -> str:
        """Commit the exact contents of ``folder`` as the next commit on ``branch`` (no checkout needed).

        Works in bare repositories: a private index records ``folder`` (ignore rules do not apply:
        every file is kept), then the tree becomes a commit whose parent is ``branch``'s tip.
        """
        git_dir = self._git_dir()
        index = git_dir / f"ropefix-import-{os.getpid()}.index"
        folder = folder.resolve()
        where = ["--git-dir", str(git_dir), "--work-tree", str(folder)]
        env = {"GIT_INDEX_FILE": str(index)}
        try:
            _execute(folder, [*where, "add", "-A", "-f", "."], env=env)
            tree = _execute(folder, [*where, "write-tree"], env=env)
        finally:
            index.unlink(missing_ok=True)
        parent = ["-p", self.rev_parse(f"refs/heads/{branch}")] if self.has_ref(f"refs/heads/{branch}") else []
        sha = self.run("commit-tree", tree, *parent, "-m", message, env=_identity_env(identity))
        self.run("update-ref", f"refs/heads/{branch}", sha)
        return sha

    def commit_files(
        self,
        files: Iterable[tuple[str, int, bytes]],
        message: str,
        *,
        branch: str,
        identity: Identity = KIT_IDENTITY,
    ) -> str:
        """Commit exactly ``files`` (path, git mode, bytes) as the tree of the next commit on ``branch``.

        Streams them through ``git fast-import``: nothing is written to a work tree, which makes
        importing a release archive about as cheap as reading it. Modes are 0o100644, 0o100755
        or 0o120000 (a symlink; its bytes are the link target).
        """
        import git as gitpython

        parent = self.rev_parse(f"refs/heads/{branch}") if self.has_ref(f"refs/heads/{branch}") else None
        cmd = [gitpython.Git.GIT_PYTHON_GIT_EXECUTABLE or "git", "fast-import", "--quiet", "--done"]
        with _scrubbed_environ():
            proc = gitpython.Git(str(self.path)).execute(cmd, as_process=True, istream=subprocess.PIPE)
        stdin = proc.proc.stdin
        try:
            stamp = f"{int(time.time())} +0000"
            who = f"{identity.name} <{identity.email}>"
            text = message.encode()
            stdin.write(f"commit refs/heads/{branch}\nauthor {who} {stamp}\ncommitter {who} {stamp}\n".encode())
            stdin.write(b"data %d\n%s\n" % (len(text), text))
            if parent:
                stdin.write(f"from {parent}\n".encode())
            stdin.write(b"deleteall\n")  # the new tree is exactly ``files``
            for path, mode, data in files:
                stdin.write(b"M %o inline %s\ndata %d\n" % (mode, _quote(path), len(data)))
                stdin.write(data)
                stdin.write(b"\n")
            stdin.write(b"done\n")
            stdin.close()
        except BrokenPipeError:
            pass  # fast-import stopped early; wait() below reports why
        except BaseException:
            # Whatever went wrong (a bad member, an interrupt): stop fast-import without "done",
            # so it aborts and the branch is left where it was.
            proc.proc.kill()
            proc.proc.wait()
            raise
        try:
            proc.wait()
        except gitpython.GitCommandError as e:
            raise RopefixError(f"git fast-import failed in {self.path}: {_text(e.stderr).strip()}") from e
        return self.rev_parse(f"refs/heads/{branch}")

    def _git_dir(self) -> Path:
        return Path(self.run("rev-parse", "--absolute-git-dir"))

    def ignore(self, patterns: Sequence[str]) -> None:
        """Have git ignore ``patterns`` in this repository and all its work trees (``info/exclude``)."""
        common = Path(self.run("rev-parse", "--git-common-dir"))
        exclude = (common if common.is_absolute() else self.path / common) / "info" / "exclude"
        have = exclude.read_text().splitlines() if exclude.exists() else []
        missing = [p for p in patterns if p not in have]
        if missing:
            files.atomic_write(exclude, "".join(f"{line}\n" for line in [*have, *missing]))

    def checkout(self, ref: str) -> None:
        """Switch to branch ``ref``, or detach at ``ref`` when it is a tag or commit."""
        if self.has_ref(f"refs/heads/{ref}"):
            self.run("switch", "-q", ref)
        else:
            self.run("switch", "-q", "--detach", ref)

    def fetch(self, remote: str = "origin", *, tags: bool = True, timeout: float | None = None) -> None:
        self.run(
            "fetch", "-q", *(["--tags"] if tags else []), remote, timeout=timeout, env={"GIT_TERMINAL_PROMPT": "0"}
        )

    # -- work trees ----------------------------------------------------------------------------
    def worktree_add(self, path: Path, ref: str, *, branch: str | None = None) -> Repo:
        """A new work tree at ``path`` (absent or empty) checked out at ``ref``, on ``branch`` if given."""
        self.run("worktree", "prune")  # forget trees whose folders were deleted (e.g. by cache clear)
        args = ["worktree", "add", "-q", *(["-b", branch] if branch else ["--detach"]), str(path), ref]
        self.run(*args)
        return Repo(Path(path).resolve())

    def worktree_remove(self, path: Path, *, force: bool = False) -> None:
        self.run("worktree", "remove", *(["--force"] if force else []), str(path))

    def worktrees(self) -> list[Path]:
        out = self.run("worktree", "list", "--porcelain")
        return [Path(line[len("worktree ") :]) for line in out.splitlines() if line.startswith("worktree ")]

    # -- patches -------------------------------------------------------------------------------
    def diff(self, base: str, head: str | None = None, paths: Sequence[str] = ()) -> str:
        return self.run("diff", base, *([head] if head else []), "--", *paths)

    def format_patch(self, revision_range: str, out_dir: Path) -> list[Path]:
        """One mbox patch file per commit in ``revision_range`` (e.g. ``v4.49.0..HEAD``), in order."""
        out_dir.mkdir(parents=True, exist_ok=True)
        out = self.run("format-patch", "-o", str(out_dir), revision_range)
        return [Path(p) for p in out.splitlines() if p.strip()]

    def am(self, patches: Sequence[Path], *, three_way: bool = True) -> str:
        """Apply mbox patches as commits; on a conflict the repository is put back and RopefixError raised."""
        try:
            self.run(
                "am", "-q", *(["--3way"] if three_way else []), *map(str, patches), env=_identity_env(self.identity())
            )
        except RopefixError:
            with contextlib.suppress(RopefixError):
                self.run("am", "--abort")
            raise
        return self.rev_parse("HEAD")

    def show(self, ref: str, path: str) -> bytes:
        """The bytes of ``path`` at ``ref`` (no checkout)."""
        return _execute(self.path, ["show", f"{ref}:{path}"], raw=True)
