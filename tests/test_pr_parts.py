"""The PR's pure parts: the body from a template, and upstream's checks on a synthetic tree."""

from __future__ import annotations

from pathlib import Path

from ropefix.ship import prbody, upstream_checks

# A template written for this test in the shape upstream's has: a description, boxes, reviewers.
TEMPLATE = """# What does this PR do?

<!-- describe the change -->

Fixes # (issue)

## Before submitting
- [ ] Did you read the contributor guideline?
- [ ] Did you write any new necessary tests?

## Who can review?

<!--
- text models: @alice
- vision models: @bob @carol
- generate: @dave
- tokenizers: @erin
-->
"""


def _ctx(**kw: object) -> prbody.Context:
    base = {"base": "v4.49.0", "models": ["qwen2_vl"], "commits": [("rope-deltas", "keep deltas aligned")]}
    return prbody.Context(**{**base, **kw})  # type: ignore[arg-type]


def test_body_follows_the_template_and_ticks_only_the_kits_own_work() -> None:
    body = prbody.render(_ctx(tests=["tests/models/qwen2_vl/test_x.py"], issue="https://x/issues/1"), TEMPLATE)
    assert body.index("# What does this PR do?") < body.index("## Before submitting") < body.index("## Who can")
    assert "Fixes https://x/issues/1" in body and "Fixes # (issue)" not in body
    assert "- [x] Did you write any new necessary tests?" in body
    assert "- [ ] Did you read the contributor guideline?" in body and "for the contributor" in body
    assert "@alice @bob @carol @dave" in body and "@erin" not in body.split("Suggested")[1]


def test_no_tests_no_tick_and_evidence_included() -> None:
    body = prbody.render(_ctx(evidence="| a | b |\n| --- | --- |"), TEMPLATE)
    assert "- [x]" not in body and "| a | b |" in body


def test_checks_run_each_script_and_record_its_exit_code(tmp_path: Path) -> None:
    (tmp_path / "utils").mkdir()
    (tmp_path / "utils" / "check_copies.py").write_text("import sys\nprint('copies differ')\nsys.exit(1)\n")
    (tmp_path / "utils" / "check_modular_conversion.py").write_text("print('ok')\n")
    (tmp_path / "Makefile").write_text("repo-consistency:\n\t-python utils/check_copies.py\n")
    (tmp_path / "good.py").write_text("x = 1\n")
    assert upstream_checks.detect_gate(tmp_path) == "make repo-consistency"
    checks = {c.name: c for c in upstream_checks.run_checks(tmp_path, ["good.py"])}
    assert checks["ruff format --check"].rc == 0 and checks["ruff check"].rc == 0
    assert checks["python utils/check_copies.py"].rc == 1  # the Makefile's "-" would have hidden it
    assert checks["python utils/check_modular_conversion.py"].rc == 0
    assert checks["python utils/check_repo.py"].rc is None
    text = upstream_checks.render(list(checks.values()), "make repo-consistency")
    assert "fail (exit 1)" in text and "1 failing." in text
    (tmp_path / "Makefile").write_text("check-repo:\n\tpython utils/check_repo.py\n")
    assert upstream_checks.detect_gate(tmp_path) == "make check-repo"
