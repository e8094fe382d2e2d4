"""``ropefix pr``: the upstream pull request, as a tested patch series on a topic branch.

Pipeline (each step a function; git only through ``ropefix.git``):
open the checkout at REF (a clean local work tree in place, or a work tree of the cache's mirror)
-> scan (already safe: say so, produce nothing) -> the verdict for REF (reused from the cache or the
kit's committed verdicts, else ``ropefix verify`` runs on the tree) -> one commit per PROVEN rule,
applied only to the families a failing layout proved it for, rope-deltas first with upstream-style
tests -> upstream's checks -> ``out/pr/``: the format-patch series, PR_BODY.md (with the evidence
table), CHECKS.md -> proof that the series applies with ``git am`` on a clean REF. Nothing proven:
no series, and the result says why. ``unproven=True`` adds static matches in a last commit marked so.

Outputs are built in a scratch folder beside ``out`` and moved in only once proven, with a manifest
(``.ropefix-pr.json``: name -> sha256) of what was written. A later run replaces exactly those files
when they are unchanged; anything else in ``out`` (the user's own patches, a PR_BODY.md ticked by
hand) makes it refuse, or with ``force`` move the old folder aside whole. Nothing is deleted that
ropefix did not write, and the cache's ``pr-<base>`` work tree is only replaced when clean.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ropefix import git, proc, ui
from ropefix.errors import RopefixError
from ropefix.files import atomic_write
from ropefix.fix import engine
from ropefix.fix.rules import REGISTRY, select
from ropefix.prove.verdict import Report
from ropefix.ship import prbody, testgen, upstream_checks
from ropefix.store import Store

UPSTREAM = "https://github.com/huggingface/transformers"
TOPIC = "fix-rope-deltas-device"
MANIFEST = ".ropefix-pr.json"  # in out/: what the last run wrote (name -> sha256)


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
    report: Report | None = None  # the verdict the series rests on
    unproven: list[str] = field(default_factory=list)  # "rule: families" committed without proof (--unproven)
    why_nothing: str = ""  # when no series was made: why (safe, or nothing proven)
    note: str = ""  # what happened to an earlier out/ (moved aside with force)


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
        _replace_pr_tree(path)
    return mirror.worktree_add(path, sha), sha, False


def _replace_pr_tree(path: Path) -> None:
    """The previous run's work tree goes only when it holds nothing but what git has (its branch stays)."""
    if not git.is_repo(path):
        raise RopefixError(
            f"{path} exists but is no git work tree (its repository was cleared?), so ropefix cannot tell whether "
            "it holds your work. Look at it, move what you need, delete it, and rerun."
        )
    tree = git.Repo(path)
    unsaved = tree.unsaved_paths()
    if unsaved:
        raise RopefixError(
            f"The cache's PR work tree {path} (from an earlier `ropefix pr`) has uncommitted, untracked or ignored "
            f"files ({', '.join(unsaved[:5])}). A new run would replace it: commit them on its branch "
            f"({tree.current_branch() or 'detached'}) or copy them elsewhere, then rerun. Nothing was changed."
        )
    # Clean: only bytecode and tool caches go; its branch and commits stay (in whichever mirror owns it).
    owner = git.Repo(Path(tree.run("rev-parse", "--path-format=absolute", "--git-common-dir")))
    owner.worktree_remove(path, force=True)


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
    report: Report | None = None,
    unproven: bool = False,
    force: bool = False,
) -> PrResult:
    """``report``: the verdict for ``base`` (looked up or made by verify when not given); only its proven
    rules are committed, each to the families it was proven for. ``evidence``: a matrix table for the body
    (default out/matrix.md when present; else the verdict's own table). ``force`` moves a non-empty ``out``
    holding files this kit did not write (or that were edited) aside."""
    store = store or Store()
    out = out.resolve()  # git runs in the work tree: relative paths would land there
    previous = _check_out(out, force)  # before any branch is made: a refusal changes nothing
    work, base_sha, own = open_checkout(repo, base, store)
    root = work.path
    result = PrResult(base, safe=False, out=out, tree=root)
    original = work.current_branch() or work.head()
    branch = work.fresh_branch_name(f"{TOPIC}-{base.replace('/', '-')}")
    work.create_branch(branch, base_sha)  # scan what REF holds, not what happened to be checked out
    staging: Path | None = None
    try:
        touched: list[str] = []
        if not engine.scan_tree(root, store=store).affected:
            result.why_nothing = f"{base} is already safe: no site any rule knows is affected"
        else:
            result.report = report or _verdict_for(base, root, python, store)
            touched = _commit_rules(work, result, python, base, unproven)
            if not result.commits:
                result.why_nothing = _nothing_proven(result.report)
        if not result.commits:
            result.safe = True
            _abandon(work, branch, original, own)
            result.tree = root if own else None
            return result
        result.branch = branch
        ui.info(f"running upstream's checks on {len(touched)} touched file(s)")
        result.checks = upstream_checks.run_checks(root, touched)
        gate = upstream_checks.detect_gate(root)
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.pr-"))
        _write_out(work, base_sha, result, issue, evidence, gate, staging)
        _prove(work, base_sha, result.patches)
        result.note = _publish(staging, out, previous)
        result.patches = [out / p.name for p in result.patches]
    except BaseException:
        # nothing half-done: the topic branch goes, the checkout is as it was, out/ is untouched
        if result.safe is False:
            _abandon(work, branch, original, own)
        raise
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return result


def _check_out(out: Path, force: bool) -> list[str]:
    """The names of an earlier run's unchanged outputs, which a new run replaces. An ``out`` holding anything
    else is refused, or with ``force`` left for ``_publish`` to move aside (then nothing is listed)."""
    if not out.exists():
        return []
    if not out.is_dir():
        raise RopefixError(f"--out {out} is a file, not a folder. Choose a folder for the PR's outputs.")
    present = sorted(p.name for p in out.iterdir() if p.name != MANIFEST)
    ours = _manifest(out)
    foreign = [n for n in present if n not in ours or _sha(out / n) != ours[n]]
    if foreign and not force:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise RopefixError(
            f"--out {out} holds files an earlier `ropefix pr` did not write, or that were edited since ({shown}). "
            "Nothing was changed. Choose an empty or new folder, or rerun with --force, which moves the whole "
            "folder aside (nothing is deleted)."
        )
    return [] if foreign else present


def _publish(staging: Path, out: Path, previous: list[str]) -> str:
    """Move the proven outputs into ``out``: the earlier run's own files are replaced; a folder holding anything
    else was refused by ``_check_out`` unless forced, and is now moved aside whole."""
    note = ""
    if out.exists() and any(out.iterdir()) and not _only_ours(out, previous):
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        aside = out.with_name(f"{out.name}.ropefix-moved-{stamp}")
        out.rename(aside)
        note = f"moved the previous contents of {out} to {aside}"
    out.mkdir(parents=True, exist_ok=True)
    for name in previous:
        (out / name).unlink(missing_ok=True)  # unchanged since the earlier run wrote it (checked by sha256)
    written = {}
    for path in sorted(staging.iterdir()):
        data = path.read_bytes()
        atomic_write(out / path.name, data)
        written[path.name] = hashlib.sha256(data).hexdigest()
    atomic_write(out / MANIFEST, json.dumps({"files": written}, indent=1) + "\n")
    return note


def _only_ours(out: Path, previous: list[str]) -> bool:
    return {p.name for p in out.iterdir()} <= {*previous, MANIFEST}


def _manifest(out: Path) -> dict[str, str]:
    try:
        data = json.loads((out / MANIFEST).read_text())
        return {str(k): str(v) for k, v in data["files"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _sha(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _verdict_for(base: str, root: Path, python: str | None, store: Store) -> Report:
    """The verdict for ``base``: a release's is looked up (or made in its own interpreter); any other ref's
    is made on the tree with ``python`` (or this interpreter)."""
    from ropefix.prove import verdicts

    m = re.fullmatch(r"v?(\d+\.\d+\.\d+)", base)
    if m and python is None:
        return verdicts.ensure(m.group(1), store)
    if m and (found := verdicts.lookup(m.group(1), store)) is not None:
        return found
    return verdicts.run_verify(python or proc.python(), root, base)


def _nothing_proven(report: Report | None) -> str:
    if report is None:
        return "no verdict"
    lines = [f"{f.family}: {f.state.value}" + (f" ({f.reason})" if f.reason else "") for f in report.families]
    return (
        f"nothing proven on transformers {report.release}: no failing layout that a rule's patch turns green "
        f"({'; '.join(lines) or 'no family judged'}). Unproven static matches are left out; pass --unproven to "
        "include them, marked as such."
    )


def _plan(report: Report, root: Path, unproven: bool) -> list[tuple[str, list[str], bool]]:
    """(rule, families, proven) in registry order: proven families first; static-only ones when asked."""
    proven = report.proven()
    affected: dict[str, set[str]] = {}
    if unproven:
        for s in engine.scan_tree(root).affected:
            affected.setdefault(s.rule, set()).add(s.model)
    plan = []
    for rule in select(None):
        fams = sorted(f for f, rules in proven.items() if rule.name in rules)
        if fams:
            plan.append((rule.name, fams, True))
    for rule in select(None):
        rest = sorted(affected.get(rule.name, set()) - {f for f, rules in proven.items() if rule.name in rules})
        if rest:
            plan.append((rule.name, rest, False))
    return plan


def _proof_text(report: Report, rule: str, families: list[str]) -> str | None:
    for f in report.families:
        v = f.verdict(rule)
        if f.family in families and v is not None and v.proof is not None:
            return f"{f.family}, red at {v.proof.site} {v.proof.tree_words()}: {v.proof.describe()}"
    return None


def _commit_rules(work: git.Repo, result: PrResult, python: str | None, base: str, unproven: bool) -> list[str]:
    """One commit per proven rule (registry order, rope-deltas first with the tests), on its proven families."""
    root = work.path
    touched: list[str] = []
    assert result.report is not None
    for name, families, proven in _plan(result.report, root, unproven):
        rep = engine.apply_tree(root, models=families, rules=[name])
        if not rep.changed:
            continue
        rule = REGISTRY[name]
        files = [ch.file for ch in rep.changes]
        models = sorted(
            {s.model for ch in rep.changes for s in ch.sites_fixed} or {Path(f).parent.name for f in files}
        )
        paths = list(files)
        if proven and name == next(iter(REGISTRY)):
            paths += _add_tests(root, models, result, python, base)
        proof = _proof_text(result.report, name, families) if proven else None
        message = _message(name, rule.summary, models, rep, proof)
        if not proven:
            message = "[unproven] " + message + "\nNo failing layout proves this edit; included by --unproven.\n"
            result.unproven.append(f"{name}: {', '.join(models)}")
        work.commit_paths(paths, message)
        result.commits.append((name, rule.summary if proven else f"{rule.summary} (unproven)"))
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
        + (f"\nFailing layout that proves it: {proof}\n" if proof else "")
    )


def _write_out(
    work: git.Repo, base_sha: str, result: PrResult, issue: str | None, evidence: Path | None, gate: str, out: Path
) -> None:
    result.patches = work.format_patch(f"{base_sha}..HEAD", out)
    _, template = prbody.find_template(work.path)
    checks_line = "\n".join(f"- `{c.name}`: {c.status}" for c in result.checks) + f"\n- gate detected: `{gate}`"
    ctx = prbody.Context(
        base=result.base,
        models=result.models,
        commits=result.commits,
        tests=result.tests,
        issue=issue,
        evidence=_evidence(result, evidence),
        checks=checks_line,
        notes=[f"no test generated for {u}" for u in result.untested]
        + [f"UNPROVEN (no failing layout; included by --unproven): {u}" for u in result.unproven],
    )
    atomic_write(out / "PR_BODY.md", prbody.render(ctx, template))
    atomic_write(out / "CHECKS.md", upstream_checks.render(result.checks, gate))


def _evidence(result: PrResult, matrix: Path | None) -> str | None:
    """The matrix table when one was run; else the verdict's own table (proofs and judged-pair counts)."""
    from ropefix.prove import render

    if matrix and matrix.is_file():
        return matrix.read_text()
    return render.evidence_markdown([result.report]) if result.report else None


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
