"""``ropefix pr``: the upstream pull request, as a tested patch series on a topic branch.

Pipeline (each step a function; git only through ``ropefix.git``):
open the checkout at REF (a clean local work tree in place, or a work tree of the cache's mirror)
-> scan (already safe: say so, produce nothing) -> one commit per fix rule, rope-deltas first,
with upstream-style tests in the first -> upstream's checks -> ``out/pr/``: the format-patch
series, PR_BODY.md, CHECKS.md -> proof that the series applies with ``git am`` on a clean REF.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ropefix import git, ui
from ropefix.errors import RopefixError
from ropefix.fix import engine
from ropefix.fix.rules import REGISTRY, select
from ropefix.ship import prbody, testgen, upstream_checks
from ropefix.store import Store

UPSTREAM = "https://github.com/huggingface/transformers"
TOPIC = "fix-rope-deltas-device"


@dataclass
class PrResult:
    base: str
    safe: bool
    out: Path
    branch: str | None = None
    tree: Path | None = None
    patches: list[Path] = field(default_factory=list)
    commits: list[tuple[str, str]] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    tests: list[str] = field(default_factory=list)
    checks: list[upstream_checks.Check] = field(default_factory=list)
    untested: list[str] = field(default_factory=list)  # models without generated tests, with the reason


def open_checkout(repo: str | None, base: str, store: Store) -> tuple[git.Repo, str, bool]:
    """A work tree at ``base``: (work tree, base sha, whether it is the user's own checkout)."""
    target = repo or UPSTREAM
    local = Path(target).expanduser()
    if local.is_dir() and git.is_repo(local) and not (local / "HEAD").exists():
        work = git.open_repo(local)
        if work.is_dirty():
            raise RopefixError(
                f"The checkout {local} has uncommitted changes ({', '.join(work.dirty_paths()[:5])}). ropefix pr "
                "creates a topic branch there and must not mix your edits into it: commit or stash them, then retry."
            )
        return work, _resolve(work, base, target), True
    from ropefix.releases import sources

    mirror = sources._mirror(store, sources._normalise_url(target), fetch=True)
    sha = _resolve(mirror, base, target)
    path = store.path("worktrees", f"pr-{base.replace('/', '-')}")
    if path.exists():
        shutil.rmtree(path)
        mirror.run("worktree", "prune")
    return mirror.worktree_add(path, sha), sha, False


def _resolve(repo: git.Repo, base: str, where: str) -> str:
    for ref in (base, f"v{base}", f"refs/remotes/origin/{base}"):
        if repo.has_ref(ref):
            return repo.rev_parse(f"{ref}^{{commit}}")
    tags = ", ".join(repo.tags()[-5:]) or "none"
    raise RopefixError(
        f"The ref {base!r} does not exist in {where} (tried {base}, v{base}, origin/{base}; newest tags: {tags}). "
        "Pass a branch, tag or commit that exists there, e.g. `--base main` or `--base v4.49.0`."
    )


def make_pr(
    base: str,
    repo: str | None = None,
    issue: str | None = None,
    out: Path = Path("out/pr"),
    store: Store | None = None,
    python: str | None = None,
    evidence: Path | None = Path("out/matrix.md"),
    proofs: dict[str, str] | None = None,
) -> PrResult:
    """``proofs`` maps a rule to the failing layout that proves it (verify's shrunk example), for its commit."""
    store = store or Store()
    out = out.resolve()  # git runs in the work tree: relative paths would land there
    work, base_sha, own = open_checkout(repo, base, store)
    root = work.path
    result = PrResult(base, safe=False, out=out, tree=root)
    original = work.current_branch() or work.head()
    branch = work.fresh_branch_name(f"{TOPIC}-{base.replace('/', '-')}")
    work.create_branch(branch, base_sha)  # scan what REF holds, not what happened to be checked out
    try:
        touched = _commit_rules(work, result, python, base, proofs)
        if not result.commits:
            result.safe = True
            _abandon(work, branch, original, own)
            result.tree = root if own else None
            return result
        result.branch = branch
        ui.info(f"running upstream's checks on {len(touched)} touched file(s)")
        result.checks = upstream_checks.run_checks(root, touched)
        gate = upstream_checks.detect_gate(root)
        _write_out(work, base_sha, result, issue, evidence, gate)
        _prove(work, base_sha, result.patches)
    except BaseException:
        # nothing half-done: the topic branch and the written series go, the checkout is as it was
        for written in [*result.patches, out / "PR_BODY.md", out / "CHECKS.md"]:
            written.unlink(missing_ok=True)
        if result.safe is False:
            _abandon(work, branch, original, own)
        raise
    return result


def _commit_rules(
    work: git.Repo, result: PrResult, python: str | None, base: str, proofs: dict[str, str] | None
) -> list[str]:
    """One commit per rule that changes something, in registry order (rope-deltas first, with the tests)."""
    root = work.path
    touched: list[str] = []
    if not engine.scan_tree(root).affected:
        return touched
    for rule in select(None):
        rep = engine.apply_tree(root, rules=[rule.name])
        if not rep.changed:
            continue
        files = [ch.file for ch in rep.changes]
        models = sorted(
            {s.model for ch in rep.changes for s in ch.sites_fixed} or {Path(f).parent.name for f in files}
        )
        paths = list(files)
        if rule.name == next(iter(REGISTRY)):
            paths += _add_tests(root, models, result, python, base)
        work.commit_paths(paths, _message(rule.name, rule.summary, models, rep, (proofs or {}).get(rule.name)))
        result.commits.append((rule.name, rule.summary))
        result.models = sorted({*result.models, *models})
        touched += paths
    return touched


def _abandon(work: git.Repo, branch: str, original: str | None, own: bool) -> None:
    if not own:  # the cache's work tree: remove it whole
        work.run("worktree", "remove", "--force", str(work.path))
        return
    status = work.run("status", "--porcelain", "-z", "--untracked-files=all")
    for entry in status.split("\0"):
        if entry.startswith("?? "):  # files this run wrote and did not commit (tests)
            (work.path / entry[3:]).unlink(missing_ok=True)
    work.run("checkout", "-q", "-f", original or "HEAD")
    work.run("branch", "-q", "-D", branch)


def _add_tests(root: Path, models: list[str], result: PrResult, python: str | None, base: str) -> list[str]:
    written = []
    found = testgen.targets(root, models, python)
    release = base.removeprefix("v")
    if python is None and all(t.problem for t in found) and re.fullmatch(r"\d+\.\d+\.\d+", release):
        # this interpreter cannot import that release: build one that can (cached), then retry
        from ropefix.releases import relenv

        try:
            found = testgen.targets(root, models, str(relenv.python_for(release)))
        except RopefixError as e:  # no such release on the index: the tests stay listed as missing
            ui.info(f"no interpreter for transformers {release}: {str(e).splitlines()[0]}")
    for t in found:
        if t.problem:
            result.untested.append(f"{t.name}: {t.problem}")
            continue
        written.append(testgen.write(root, t).relative_to(root).as_posix())
    result.tests += written
    return written


def _message(rule: str, summary: str, models: list[str], rep: engine.ApplyReport, proof: str | None = None) -> str:
    sites = sum(len(ch.sites_fixed) for ch in rep.changes)
    names = ", ".join(models)
    title = "Keep mRoPE rope_deltas on cache_position's device" if rule == next(iter(REGISTRY)) else f"Fix {rule}"
    return (
        f"{title} ({names})\n\n{summary}\n\n"
        f"Rule `{rule}`: {sites} site(s) in {len(rep.changes)} file(s), modular and generated modeling files "
        "together. Paths where cache_position is None (plain forward, training) behave as before.\n"
        + (f"\nFailing layout that proves it (unpatched): {proof}\n" if proof else "")
    )


def _write_out(
    work: git.Repo, base_sha: str, result: PrResult, issue: str | None, evidence: Path | None, gate: str
) -> None:
    out = result.out
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.patch"):
        old.unlink()
    result.patches = work.format_patch(f"{base_sha}..HEAD", out)
    _, template = prbody.find_template(work.path)
    checks_line = "\n".join(f"- `{c.name}`: {c.status}" for c in result.checks) + f"\n- gate detected: `{gate}`"
    ctx = prbody.Context(
        base=result.base,
        models=result.models,
        commits=result.commits,
        tests=result.tests,
        issue=issue,
        evidence=evidence.read_text() if evidence and evidence.is_file() else None,
        checks=checks_line,
        notes=[f"no test generated for {u}" for u in result.untested],
    )
    (out / "PR_BODY.md").write_text(prbody.render(ctx, template))
    (out / "CHECKS.md").write_text(upstream_checks.render(result.checks, gate))


def _prove(work: git.Repo, base_sha: str, patches: list[Path]) -> None:
    """Apply the series with ``git am`` on a clean work tree at the base; it must give the branch's tree."""
    with tempfile.TemporaryDirectory(prefix="ropefix-am-") as tmp:
        clean = work.worktree_add(Path(tmp) / "clean", base_sha)
        try:
            clean.am(patches)
            if clean.run("rev-parse", "HEAD^{tree}") != work.run("rev-parse", "HEAD^{tree}"):
                raise RopefixError("The patch series applied with `git am` does not reproduce the topic branch.")
        finally:
            work.worktree_remove(clean.path, force=True)
