"""`ropefix verify` and its verdicts: every state transition, the proof gate's inputs, JSON, and bad input."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from verdict_fixtures import failure, report

from ropefix.errors import RopefixError
from ropefix.main import main
from ropefix.prove import render, verdicts, verify
from ropefix.prove.suite import SuiteResult
from ropefix.prove.verdict import SCHEMA, FamilyReport, Proof, Report, State
from ropefix.store import Store

RD = "rope-deltas"
SITE_RD = "models/qwen2_vl/modeling_qwen2_vl.py:1724"
DECODE = ["generate-greedy/text", "decode-loop/image", "forward/text"]


def test_unknown_model_is_refused_before_anything_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", "--models", "no_such_model"]) == 1
    err = capsys.readouterr().err
    assert "no_such_model not in transformers" in err and "--models" in err


def test_a_path_that_is_no_transformers_tree_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(tmp_path)]) == 1
    assert "neither a transformers checkout" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["-5", "0", "x"])
def test_nonsense_example_counts_are_refused(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["verify", "--max-examples", bad])
    assert e.value.code == 2 and "--max-examples" in capsys.readouterr().err


def test_light_copy_shares_all_but_the_models_to_patch(tmp_path: Path) -> None:
    pkg = verify.package_of(None)
    copy = verify.light_copy(pkg, tmp_path, ["qwen2_vl"])
    assert (copy / "__init__.py").is_symlink()
    assert not (copy / "models" / "qwen2_vl").is_symlink()
    assert (copy / "models" / "qwen2_5_vl").is_symlink()
    target = copy / "models" / "qwen2_vl" / "modeling_qwen2_vl.py"
    target.write_text(target.read_text() + "\n# edited\n")
    assert "# edited" not in (pkg / "models" / "qwen2_vl" / "modeling_qwen2_vl.py").read_text()


# ---------------------------------------------------------------- judge: every state transition


def _run(
    failures: list[tuple[str, str]] = (),  # type: ignore[assignment]
    judged: list[str] = DECODE,
    not_compared: dict[str, str] | None = None,
    replays: list[dict] | None = None,
) -> SuiteResult:
    r = SuiteResult("qwen2_vl", "4.49.0", "/x", "2.13.0", "ci", examples_run=5)
    r.failures = [failure(h, s) for h, s in failures]
    r.judged_pairs = list(judged)
    r.not_compared = dict(not_compared or {})
    r.replays = list(replays or [])
    return r


def _static(**affected: tuple[str, ...]) -> verify.Static:
    sites = {"rope-deltas": (), "causal-mask": (), "rope-index-scatter": ()}
    sites.update({k.replace("_", "-"): v for k, v in affected.items()})
    return verify.Static("qwen2_vl", sites, True)


def _judge(static: verify.Static, before: SuiteResult, after: SuiteResult | None, applied=(RD,), **kw):
    proofs = verify._proofs(before, static, verify.rule_of_hazard(), "unpatched")
    return verify.judge("4.49.0", "2.13.0", static, before, after, proofs, list(applied), **kw)


def test_reproduced_and_green_after_the_patch_is_reproduced_fixed() -> None:
    before = _run([(RD, SITE_RD)])
    ex = before.failures[0].example
    from dataclasses import asdict

    after = _run(replays=[{"example": asdict(ex), "failure": None}])
    fam = _judge(_static(rope_deltas=("f.py:1",)), before, after)
    v = fam.verdict(RD)
    assert v.state is State.REPRODUCED_FIXED and fam.state is State.REPRODUCED_FIXED
    assert v.proof.site == f"transformers/{SITE_RD}" and v.judged == 3 and v.decode_judged == 2
    assert "the proof's layout passes" in v.after and fam.proven_rules == (RD,)


@pytest.mark.parametrize(
    ("after", "why"),
    [
        (_run([(RD, SITE_RD)]), "fails at transformers/"),
        (_run(not_compared={"forward/text": "AttributeError: 'NoneType' object has no attribute 'device'"}), "breaks"),
        (_run([("output-mismatch", "<result>")]), "differs"),
    ],
)
def test_reproduced_but_red_or_broken_after_the_patch_is_fix_failed(after: SuiteResult, why: str) -> None:
    fam = _judge(_static(rope_deltas=("f.py:1",)), _run([(RD, SITE_RD)]), after)
    v = fam.verdict(RD)
    assert v.state is State.FIX_FAILED and why in v.after and not fam.state.passed()


def test_a_proof_layout_that_still_fails_on_the_patched_tree_is_fix_failed() -> None:
    before = _run([(RD, SITE_RD)])
    from dataclasses import asdict

    still = failure(RD, "models/qwen2_vl/modeling_qwen2_vl.py:1730")
    after = _run(replays=[{"example": asdict(before.failures[0].example), "failure": still}])
    v = _judge(_static(rope_deltas=("f.py:1",)), before, after).verdict(RD)
    assert v.state is State.FIX_FAILED and "modeling_qwen2_vl.py:1730" in v.after


def test_reproduced_where_the_rule_has_no_site_is_fix_failed_not_silently_passed() -> None:
    v = _judge(_static(), _run([(RD, SITE_RD)]), None, applied=()).verdict(RD)
    assert v.state is State.FIX_FAILED and "no affected site" in v.reason


def test_pattern_present_judged_and_never_failing_is_latent_with_its_count() -> None:
    fam = _judge(_static(rope_deltas=("f.py:1", "f.py:9")), _run(), None, applied=())
    v = fam.verdict(RD)
    assert v.state is State.LATENT and "2 site(s); 3 path x prompt pairs judged (2 decoding)" in v.reason
    assert fam.state is State.LATENT and fam.state.passed()


def test_no_pattern_and_nothing_failing_is_not_affected() -> None:
    fam = _judge(_static(), _run(), None, applied=())
    assert {v.state for v in fam.verdicts} == {State.NOT_AFFECTED} and fam.state is State.NOT_AFFECTED


def test_nothing_compared_is_not_judged_and_never_passes() -> None:
    before = _run(judged=[], not_compared={"generate-greedy/text": "NotImplementedError: histc for Long"})
    fam = _judge(_static(rope_deltas=("f.py:1",)), before, None, applied=())
    assert fam.state is State.NOT_JUDGED and "histc" in fam.reason
    assert not fam.state.passed() and fam.state.passed(allow_not_judged=True)
    assert all(v.state is State.NOT_JUDGED for v in fam.verdicts)


def test_a_rule_judged_on_no_decoding_path_is_not_judged() -> None:
    fam = _judge(_static(rope_deltas=("f.py:1",)), _run(judged=["forward/text", "forward/image"]), None, applied=())
    assert fam.verdict(RD).state is State.NOT_JUDGED and "no decoding path" in fam.verdict(RD).reason


def test_hazards_no_rule_claims_are_findings_never_dropped() -> None:
    before = _run([(RD, SITE_RD), ("embedding-merge", "models/qwen2_vl/modeling_qwen2_vl.py:1500")])
    fam = _judge(_static(rope_deltas=("f.py:1",)), before, _run())
    assert [(x.hazard, x.tree) for x in fam.findings] == [("embedding-merge", "unpatched")]


def test_a_family_that_cannot_be_built_is_not_judged_with_the_reason() -> None:
    fam = verify.not_built("4.45.2", "2.13.0", _static(rope_deltas=("f.py:1",)), "No tiny model for 'qwen2_vl'")
    assert fam.state is State.NOT_JUDGED and "No tiny model" in fam.reason and fam.judged == 0


# ---------------------------------------------------------------- the report as a value and a file


def test_report_json_round_trips_and_passes_only_without_not_judged() -> None:
    r = report(State.REPRODUCED_FIXED, hazards=("causal-mask",))
    back = Report.from_json(json.loads(json.dumps(r.to_json())))
    assert back == r and back.state is State.REPRODUCED_FIXED and back.passed()
    assert back.proven() == {"qwen2_vl": (RD,)}
    nj = report(State.NOT_JUDGED)
    assert not nj.passed() and nj.passed(allow_not_judged=True)
    assert not Report("x", "y", "k", "ci", ()).passed()  # a report that judged nothing never passes


def test_a_verdict_from_another_schema_or_damaged_is_refused_by_name(tmp_path: Path) -> None:
    old = tmp_path / "old.json"
    old.write_text(json.dumps({**report(State.LATENT).to_json(), "schema": SCHEMA - 1}))
    with pytest.raises(RopefixError, match=rf"{old}.*not a ropefix verdict of schema {SCHEMA}"):
        Report.load(old)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": SCHEMA, "release": "4.49.0"}))
    with pytest.raises(RopefixError, match=rf"{bad} is a damaged ropefix verdict"):
        Report.load(bad)


def test_the_cache_merges_families_and_never_overwrites_a_damaged_file(tmp_path: Path) -> None:
    store = Store(tmp_path / "cache")
    first = report(State.LATENT, release="4.49.0", torch="2.13.0")
    verdicts.save(first, store)
    other = first.with_families([FamilyReport("qwen2_5_vl", State.NOT_AFFECTED)])
    path = verdicts.save(other, store)
    assert [f.family for f in Report.load(path).families] == ["qwen2_vl", "qwen2_5_vl"]
    assert verdicts.lookup("4.49.0", store).family("qwen2_5_vl") is not None
    path.write_text("{ not json")
    with pytest.raises(RopefixError, match="Cannot read the verdict"):
        verdicts.save(first, store)
    assert path.read_text() == "{ not json"


def test_cli_exit_status_follows_the_verdict(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from ropefix.prove import verify as verify_mod

    monkeypatch.setattr(verify_mod, "verify", lambda *a, **k: report(State.NOT_JUDGED))
    assert main(["verify", "--no-save"]) == 1
    assert "not-judged" in capsys.readouterr().out
    assert main(["verify", "--no-save", "--allow-not-judged"]) == 0
    capsys.readouterr()
    monkeypatch.setattr(verify_mod, "verify", lambda *a, **k: report(State.REPRODUCED_FIXED))
    assert main(["verify", "--no-save", "--json"]) == 0
    assert Report.from_json(json.loads(capsys.readouterr().out)).state is State.REPRODUCED_FIXED


def test_text_report_names_the_proof_the_patched_result_and_findings() -> None:
    text = render.text(report(State.REPRODUCED_FIXED, hazards=("embedding-merge",)))
    assert f"red at transformers/{SITE_RD}" in text and "failing layout: generate-greedy" in text
    assert "patched: passes" in text and "finding (unpatched): embedding-merge" in text
    assert "4 path x prompt pairs judged" in text


def test_proof_describes_its_layout_and_tree() -> None:
    p = Proof(failure(), "patched with rope-deltas")
    assert p.site == f"transformers/{SITE_RD}" and "vision-apart" in p.describe()


def test_top_level_help_speaks_to_users_not_developers(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "Find, fix, prove and ship" in out and "ropefix run" in out
    assert "reads argv" not in out


def test_a_proof_found_on_a_patched_copy_reads_against_the_published_file(tmp_path: Path) -> None:
    pkg = tmp_path / "transformers"
    (pkg / "models" / "qwen2_vl").mkdir(parents=True)
    code = "delta = cache_position[0] + self.rope_deltas"
    (pkg / "models" / "qwen2_vl" / "modeling_qwen2_vl.py").write_text("a = 1\n" * 9 + f"        {code}\n")
    r = _run([(RD, "models/qwen2_vl/modeling_qwen2_vl.py:12")])  # two lines lower in the patched copy
    r.failures = [replace(r.failures[0], code=code)]
    (proof,) = verify._proofs(r, _static(), verify.rule_of_hazard(), "patched with causal-mask", pkg).values()
    assert proof.failure.site == "models/qwen2_vl/modeling_qwen2_vl.py:10" and proof.tree_words() == (
        "once causal-mask was applied"
    )


def _hotfix_run(active: bool, fails: bool) -> SuiteResult:
    from dataclasses import asdict

    r = _run([(RD, SITE_RD)])
    ex = r.failures[0].example
    bad = failure(RD, SITE_RD) if fails else None
    r.hotfix = [
        {"order": o, "active": active, "example": asdict(ex), "failure": bad}
        for o in ("before-dispatch", "after-dispatch")
    ]
    return r


def test_the_hotfix_arm_holding_is_recorded_and_keeps_the_verdict() -> None:
    fam = _judge(_static(rope_deltas=("f.py:1",)), _hotfix_run(True, False), _run(), applied=(RD,))
    assert fam.hotfix_holds is True and "holds: 2 run(s)" in render.hotfix_words(fam)
    assert fam.state is not State.FIX_FAILED


def test_a_hotfix_that_does_not_hold_fails_the_run_but_never_blocks_the_proven_file_fix() -> None:
    before = _hotfix_run(True, True)
    from dataclasses import asdict

    after = _run(replays=[{"example": asdict(before.failures[0].example), "failure": None}])
    fam = _judge(_static(rope_deltas=("f.py:1",)), before, after, applied=(RD,))
    report = Report("4.49.0", "2.13.0", "0", "ci", (fam,))
    assert fam.hotfix_holds is False and fam.state is State.REPRODUCED_FIXED
    assert not report.passed() and report.hotfix_failures() == [fam]
    assert report.ship_plan() == ({"qwen2_vl": [RD]}, "")  # the file fix still ships
    assert "the runtime hotfix does NOT hold" in render.text(report) and "before-dispatch: fails at" in render.text(
        report
    )


def test_a_hotfix_that_claims_nothing_is_a_note_not_a_failure() -> None:
    fam = _judge(_static(rope_deltas=("f.py:1",)), _hotfix_run(False, True), _run(), applied=(RD,))
    assert fam.hotfix_holds is None and any("no-op" in n for n in fam.notes)
    back = Report.from_json(json.loads(json.dumps(Report("4.49.0", "2.13.0", "0", "ci", (fam,)).to_json())))
    assert back.families[0].hotfix == fam.hotfix


def test_unknown_shapes_are_resolved_by_the_search_and_safe_claims_are_confirmed_by_judged_paths() -> None:
    static = verify.Static(
        "qwen2_vl",
        {"rope-deltas": (), "causal-mask": (), "rope-index-scatter": ()},
        True,
        unknown={"rope-deltas": ("f.py:3",)},
        safe={"causal-mask": 2},
    )
    fam = _judge(static, _run(), None, applied=())
    rd, cm = fam.verdict(RD), fam.verdict("causal-mask")
    assert rd.state is State.LATENT and "1 of unknown shape, resolved by the search" in rd.reason
    assert rd.sites == ("f.py:3",)
    assert cm.state is State.NOT_AFFECTED and "the scan's 2 safe or fixed site(s) confirmed: 3 path" in cm.reason
