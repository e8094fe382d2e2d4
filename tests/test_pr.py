"""ropefix pr against a local upstream mirror built from real releases."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from releaseenv import release_python
from upstream import upstream_repo
from verdict_fixtures import family

from ropefix import git
from ropefix.errors import RopefixError
from ropefix.fix.rules import REGISTRY
from ropefix.prove import verdicts
from ropefix.prove.verdict import Report, State
from ropefix.ship import pr, testgen
from ropefix.store import Store

REAL = ("4.49.0", "4.53.3")  # the same mirror tests/test_checkout.py builds
ISSUE = "https://github.com/huggingface/transformers/issues/12345"
NAIVE_FROM = "self.rope_deltas = rope_deltas\n"
NAIVE_TO = "self.rope_deltas = rope_deltas.to(cache_position.device)\n"


@pytest.fixture(scope="session")
def mirror(shared_store: Store) -> Path:
    return upstream_repo(shared_store, REAL)


def _run_tests(py: Path, tree: Path, tests: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "OMP_NUM_THREADS": "1"}
    runner = Path(__file__).with_name("sim_pytest.py")
    return subprocess.run(
        [py, runner, *tests], cwd=tree, env=env, check=False, capture_output=True, text=True, timeout=900
    )


@pytest.mark.network
@pytest.mark.slow
def test_pr_series_applies_and_its_tests_go_red_to_green(mirror: Path, shared_store: Store, tmp_path: Path) -> None:
    py = release_python(shared_store, "4.49.0")
    out = tmp_path / "out"
    verdict = verdicts.committed("4.49.0")  # the kit's own committed verdict for that release
    assert verdict is not None, "src/ropefix/data/verdicts/ lacks 4.49.0"
    result = pr.make_pr("v4.49.0", repo=str(mirror), issue=ISSUE, out=out, python=str(py), evidence=None)
    assert result.report == verdict  # reused, not re-verified
    plan = verdict.ship_plan()[0]
    assert not result.safe and result.commits[0][0] == "rope-deltas"
    assert [c[0] for c in result.commits] == [r for r in REGISTRY if any(r in rules for rules in plan.values())]
    assert result.models == sorted(plan) and not result.unproven
    assert len(result.patches) == len(result.commits) and result.tests and not result.untested
    body = (out / "PR_BODY.md").read_text()
    for fam in verdict.families:  # the evidence table: each proof's failing site
        for v in fam.verdicts:
            if v.proof:
                assert f"`{v.proof.site}`" in body
    assert f"Fixes {ISSUE}" in body and "- [x] Did you write any new necessary tests?" in body
    assert "- [ ] " in body and "for the contributor" in body
    assert "`ruff format --check`: pass" in body and "`ruff check`: pass" in body
    assert (out / "CHECKS.md").exists()

    # independently of make_pr's own proof: the series applies with git am on a clean checkout of the base
    clean = git.open_repo(mirror).worktree_add(tmp_path / "clean", "v4.49.0")
    clean.am(sorted(out.glob("*.patch")))
    for rel in result.tests:
        assert (clean.path / rel).exists()
    after = _run_tests(py, clean.path, result.tests)
    assert after.returncode == 0 and " passed" in after.stdout, after.stdout[-3000:]

    # the same tests on the unpatched library: the multi-accelerator test fails with the device error
    clean.run("checkout", "v4.49.0", "--", "src")
    before = _run_tests(py, clean.path, result.tests)
    assert before.returncode != 0
    assert "Expected all tensors to be on the same device" in before.stdout
    assert before.stdout.count("test_generate_with_the_model_split_across_accelerators") >= len(result.tests)
    assert "test_forward_without_cache_position_after_prefill FAILED" not in before.stdout

    # the CPU test guards the path without cache_position: the quoted one-liner fails it
    for rel in result.tests:
        model = Path(rel).parent.name
        modeling = clean.path / "src" / "transformers" / "models" / model / f"modeling_{model}.py"
        modeling.write_text(modeling.read_text().replace(NAIVE_FROM, NAIVE_TO))
    naive = _run_tests(py, clean.path, result.tests)
    assert naive.returncode != 0
    assert naive.stdout.count("test_forward_without_cache_position_after_prefill") >= len(result.tests)
    assert "'NoneType' object has no attribute 'device'" in naive.stdout


def _safe_repo(tmp_path: Path) -> Path:
    root = tmp_path / "safe"
    model = root / "src" / "transformers" / "models" / "toy"
    model.mkdir(parents=True)
    (root / "src" / "transformers" / "__init__.py").write_text("")
    (model / "modeling_toy.py").write_text(
        "class Toy:\n    def forward(self, x, cache_position=None):\n        return x + self.cache_length\n"
    )
    repo = git.init(root)
    repo.commit_paths(["src"], "Release 0.0.1")
    repo.tag("v0.0.1")
    return root


def test_already_safe_ref_produces_nothing(tmp_path: Path) -> None:
    root = _safe_repo(tmp_path)
    result = pr.make_pr("v0.0.1", repo=str(root), out=tmp_path / "out", evidence=None)
    assert result.safe and not result.patches and "already safe" in result.why_nothing
    assert not (tmp_path / "out").exists()
    assert git.open_repo(root).branches() == [git.open_repo(root).current_branch()]


def test_missing_ref_and_dirty_checkout_are_refused(tmp_path: Path) -> None:
    root = _safe_repo(tmp_path)
    with pytest.raises(RopefixError, match="does not exist"):
        pr.make_pr("v9.9.9", repo=str(root), out=tmp_path / "out", evidence=None)
    (root / "src" / "transformers" / "__init__.py").write_text("x = 1\n")
    with pytest.raises(RopefixError, match="uncommitted changes"):
        pr.make_pr("v0.0.1", repo=str(root), out=tmp_path / "out", evidence=None)
    assert not (tmp_path / "out").exists()


def test_tests_join_an_existing_upstream_test_file() -> None:
    existing = (
        "import unittest\n\nfrom transformers import is_torch_available\n"
        "from transformers.testing_utils import require_torch, torch_device\n\n\n"
        "class ToyModelTest(unittest.TestCase):\n    pass\n"
    )
    device_map = {"model.visual": 0, "model.language_model": 1, "lm_head": 1}
    t = testgen.Target("toy_vl", "ToyVLForConditionalGeneration", "ToyVLConfig", {"vocab_size": 320}, device_map)
    text = testgen.add_to_existing(existing, t)
    compile(text, "test_modeling_toy_vl.py", "exec")
    assert f"from_pretrained(tmp_dir, device_map={device_map!r})" in text
    assert "import tempfile\n" in text and text.count("import unittest\n") == 1
    assert text.startswith(existing.split("\n\n\n")[0].rsplit("\n", 1)[0])
    assert "require_torch_multi_accelerator" in text and "class ToyVlRopeDeltasDeviceTest" in text
    assert "class ToyModelTest" in text and "ToyVLConfig(**{'vocab_size': 320})" in text


def test_commit_message_carries_the_failing_layout() -> None:
    from ropefix.fix import engine

    rep = engine.ApplyReport("root", "src/transformers", [], dry_run=False)
    layout = "generate-greedy on qwen2_vl; layout contiguous over 2 devices, inputs on cpu"
    msg = pr._message("rope-deltas", "keep deltas on cache_position's device", ["qwen2_vl"], rep, layout)
    assert msg.splitlines()[0] == "Keep mRoPE rope_deltas on cache_position's device (qwen2_vl)"
    assert f"Failing layout that proves it: {layout}" in msg
    assert "Failing layout" not in pr._message("rope-deltas", "s", ["qwen2_vl"], rep)


# Synthetic model code written for these tests: a store and an addition the rope-deltas rule fixes.
TOY = """class ToyVLModel:
    def forward(self, input_ids, cache_position=None):
        if self.rope_deltas is None:
            self.rope_deltas = input_ids.new_zeros(1)
        return cache_position[0] + self.rope_deltas
"""


def _affected_repo(tmp_path: Path) -> git.Repo:
    root = tmp_path / "affected"
    model = root / "src" / "transformers" / "models" / "toy_vl"
    model.mkdir(parents=True)
    (root / "src" / "transformers" / "__init__.py").write_text("")
    (model / "modeling_toy_vl.py").write_text(TOY)
    repo = git.init(root)
    repo.commit_paths(["src"], "Release 0.0.1")
    repo.tag("v0.0.1")
    repo.create_branch("work")
    (root / "NOTES.md").write_text("my own work\n")
    repo.commit_paths(["NOTES.md"], "Own work on a branch")
    return repo


def _toy_report(state: State) -> Report:
    fam = family(state, name="toy_vl", release="0.0.1")
    return Report("0.0.1", "2.13.0", "0.0.0", "ci", (fam,))


def _toy_pr_into(repo: git.Repo, out: Path, state: State = State.REPRODUCED_FIXED, **kw: object) -> pr.PrResult:
    """make_pr on the toy checkout with a verdict of ``state`` (no interpreter needed: python="false")."""
    return pr.make_pr(
        "v0.0.1",
        repo=str(repo.path),
        out=out,
        python="false",
        evidence=None,
        report=_toy_report(state),
        **kw,  # type: ignore[arg-type]
    )


def _toy_pr(repo: git.Repo, tmp_path: Path, state: State = State.REPRODUCED_FIXED, **kw: object) -> pr.PrResult:
    return _toy_pr_into(repo, tmp_path / "out", state, **kw)


def test_own_checkout_gets_a_topic_branch_from_the_base(tmp_path: Path) -> None:
    repo = _affected_repo(tmp_path)
    result = _toy_pr(repo, tmp_path)
    assert result.branch and repo.current_branch() == result.branch
    assert not (repo.path / "NOTES.md").exists()  # the branch starts at the base, not at the user's work
    assert "cache_position.device" in (repo.path / "src/transformers/models/toy_vl/modeling_toy_vl.py").read_text()
    assert [p.name for p in result.patches] == [p.name for p in sorted((tmp_path / "out").glob("*.patch"))]
    assert result.untested and result.untested[0].startswith("toy_vl:")  # listed, never silently dropped


def test_a_failure_after_committing_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = _affected_repo(tmp_path)
    before = (repo.branches(), repo.head())

    def broken(*args: object) -> None:
        raise RopefixError("git am refused the series")

    monkeypatch.setattr(pr, "_prove", broken)
    with pytest.raises(RopefixError, match="git am refused"):
        _toy_pr(repo, tmp_path)
    assert (repo.branches(), repo.head()) == before and repo.current_branch() == "work"
    assert not repo.is_dirty()
    assert not list((tmp_path / "out").glob("*"))


@pytest.mark.parametrize("state", [State.LATENT, State.NOT_JUDGED, State.FIX_FAILED])
def test_nothing_proven_makes_no_series_and_says_why(tmp_path: Path, state: State) -> None:
    repo = _affected_repo(tmp_path)
    before = (repo.branches(), repo.head())
    result = _toy_pr(repo, tmp_path, state)
    assert result.safe and not result.patches and not (tmp_path / "out").exists()
    assert "nothing proven" in result.why_nothing and f"toy_vl: {state.value}" in result.why_nothing
    assert (repo.branches(), repo.head()) == before


def test_unproven_edits_only_with_the_flag_and_marked(tmp_path: Path) -> None:
    repo = _affected_repo(tmp_path)
    result = _toy_pr(repo, tmp_path, State.LATENT, unproven=True)
    assert result.unproven == ["rope-deltas: toy_vl"] and result.commits == [
        ("rope-deltas", REGISTRY["rope-deltas"].summary + " (unproven)")
    ]
    assert repo.run("log", "-1", "--format=%s").startswith("[unproven] ")
    assert (
        "UNPROVEN (no failing layout; included by --unproven): rope-deltas: toy_vl"
        in (tmp_path / "out" / "PR_BODY.md").read_text()
    )


# -- nothing the user has is lost ----------------------------------------------------------------------


def test_a_non_empty_out_is_refused_and_nothing_in_it_is_removed(tmp_path: Path) -> None:
    repo = _affected_repo(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "0001-my-own.patch").write_text("my series\n")
    (out / "PR_BODY.md").write_text("my notes\n")
    before = (repo.branches(), repo.head())
    with pytest.raises(RopefixError) as e:
        _toy_pr_into(repo, out)
    assert str(out) in str(e.value) and "0001-my-own.patch" in str(e.value) and "--force" in str(e.value)
    assert (out / "0001-my-own.patch").read_text() == "my series\n" and (
        out / "PR_BODY.md"
    ).read_text() == "my notes\n"
    assert (repo.branches(), repo.head()) == before  # refused before any branch was made
    result = pr.make_pr(
        "v0.0.1",
        repo=str(repo.path),
        out=out,
        python="false",
        evidence=None,
        force=True,
        report=_toy_report(State.REPRODUCED_FIXED),
    )
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("out.ropefix-moved-")]
    assert len(aside) == 1 and (aside[0] / "0001-my-own.patch").read_text() == "my series\n"
    assert (aside[0] / "PR_BODY.md").read_text() == "my notes\n"
    assert sorted(p.name for p in out.glob("*.patch")) == [p.name for p in result.patches]


def test_a_rerun_replaces_its_own_outputs_but_not_an_edited_one(tmp_path: Path) -> None:
    repo = _affected_repo(tmp_path)
    out = tmp_path / "out"
    first = _toy_pr_into(repo, out)
    second = _toy_pr_into(repo, out)  # no --force needed
    assert second.branch != first.branch and (out / "PR_BODY.md").exists()
    assert sorted(p.name for p in out.glob("*.patch")) == [p.name for p in second.patches]
    (out / "PR_BODY.md").write_text((out / "PR_BODY.md").read_text() + "- [x] ticked by hand\n")
    with pytest.raises(RopefixError, match="PR_BODY.md"):
        _toy_pr_into(repo, out)
    assert "ticked by hand" in (out / "PR_BODY.md").read_text()


def test_a_dirty_pr_work_tree_in_the_cache_is_kept(tmp_path: Path) -> None:
    work = _affected_repo(tmp_path)
    bare = git.clone_bare(str(work.path), tmp_path / "upstream.git")
    first = _toy_pr_into(bare, tmp_path / "out1")
    assert first.tree is not None and first.tree.name == "pr-v0.0.1"
    edited = first.tree / "src/transformers/models/toy_vl/modeling_toy_vl.py"
    edited.write_text(edited.read_text() + "# my follow-up edit\n")
    with pytest.raises(RopefixError) as e:
        _toy_pr_into(bare, tmp_path / "out2")
    assert str(first.tree) in str(e.value) and "uncommitted" in str(e.value)
    assert edited.read_text().endswith("# my follow-up edit\n")
    git.Repo(first.tree).run("checkout", "--", ".")  # once clean, a re-run replaces it (its branch is kept)
    again = _toy_pr_into(bare, tmp_path / "out2")
    assert again.tree == first.tree and again.branch != first.branch
    assert first.branch in git.Repo(again.tree).branches()  # the earlier topic branch and its commits stay
