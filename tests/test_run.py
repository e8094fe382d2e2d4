"""ropefix run end to end on a real release (the shared cache keeps the sdist and its environment)."""

from __future__ import annotations

from pathlib import Path

import pytest
from releaseenv import release_python

from ropefix import job
from ropefix.errors import RopefixError
from ropefix.prove.verdict import Report, State
from ropefix.store import Store

VERSION = "4.49.0"


@pytest.mark.network
@pytest.mark.slow
def test_run_job_end_to_end_then_resume(shared_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    py = release_python(shared_store, VERSION)
    out = tmp_path / "out"
    # the pr step fails once (as a crash or a lost network would): the job stops there, resumable
    real_pr = job.step_pr
    monkeypatch.setattr(job, "STEPS", tuple((n, f if n != "pr" else _boom, d) for n, f, d in job.STEPS))
    first = job.run_job(VERSION, out, models=["qwen2_vl"], python=str(py), store=shared_store)
    assert [(s.name, s.status) for s in first.steps][-1] == ("pr", job.StepStatus.FAILED) and not first.ok
    verify_seconds = first.step("verify").seconds

    monkeypatch.setattr(job, "STEPS", tuple((n, f if n != "pr" else real_pr, d) for n, f, d in job.STEPS))
    result = job.run_job(VERSION, out, models=["qwen2_vl"], python=str(py), store=shared_store, resume=True)
    assert [s.name for s in result.steps] == ["checkout", "scan", "environment", "verify", "patch", "pr"]
    assert result.step("verify").seconds == verify_seconds  # kept, not re-run
    assert result.ok, result.render()
    # the verdict on this release: qwen2_vl red at the rope-deltas line, green after the proven patch
    report = Report.load(out / "verify.json")
    assert report.release == VERSION and report.state is State.REPRODUCED_FIXED
    v = report.family("qwen2_vl").verdict("rope-deltas")
    assert v.state is State.REPRODUCED_FIXED and v.proof.site.startswith("transformers/models/qwen2_vl/")
    patch = (out / f"transformers-{VERSION}.patch").read_text()
    assert "+++ b/src/transformers/models/qwen2_vl/modeling_qwen2_vl.py" in patch
    assert "qwen2_5_vl" not in patch  # only the verified family is patched
    assert result.step("pr").status is job.StepStatus.OK, result.step("pr").detail
    assert (out / "pr" / "PR_BODY.md").exists() and list((out / "pr").glob("0001-*.patch"))
    summary = (out / "SUMMARY.md").read_text()
    assert f"transformers {VERSION}" in summary and f"`{v.proof.site}`" in summary
    assert "[evidence.md](evidence.md)" in summary and (out / "evidence.md").exists()


def _boom(ctx: job.Context) -> job.StepResult:
    raise RopefixError("the network went away")


def test_resume_refuses_another_runs_state(tmp_path: Path) -> None:
    with pytest.raises(RopefixError, match="Nothing to resume"):
        job.run_job(VERSION, tmp_path, resume=True)
    opts = job.Options(VERSION, ("qwen2_vl",))
    job._save_state(tmp_path, opts, {"checkout": job.StepResult("checkout", job.StepStatus.OK, "x", 1.0, {})})
    with pytest.raises(RopefixError, match="other options"):
        job.run_job("4.50.0", tmp_path, models=["qwen2_vl"], resume=True)
    (tmp_path / job.STATE_FILE).write_text("{ broken")
    with pytest.raises(RopefixError, match="damaged"):
        job.run_job(VERSION, tmp_path, models=["qwen2_vl"], resume=True)


def test_step_results_round_trip_through_the_state_file(tmp_path: Path) -> None:
    opts = job.Options(VERSION, ("qwen2_vl",), 3)
    done = {"scan": job.StepResult("scan", job.StepStatus.SKIPPED, "no affected site", 2.5, {"families": []})}
    job._save_state(tmp_path, opts, done)
    assert job._load_state(tmp_path, opts) == done
