"""ropefix run end to end on a real release (the shared cache keeps the sdist and its environment)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from releaseenv import release_python

from ropefix import job
from ropefix.prove.status import Status
from ropefix.store import Store

VERSION = "4.49.0"


@pytest.mark.network
@pytest.mark.slow
def test_run_job_end_to_end(shared_store: Store, tmp_path: Path) -> None:
    py = release_python(shared_store, VERSION)
    out = tmp_path / "out"
    result = job.run_job(VERSION, out, models=["qwen2_vl"], max_examples=2, python=str(py), store=shared_store)
    assert [s.name for s in result.steps] == ["checkout", "scan", "apply", "environment", "verify", "pr"]
    by_name = {s.name: s for s in result.steps}
    assert by_name["scan"].status == "ok" and "qwen2_vl" in by_name["scan"].detail
    patch = (out / f"transformers-{VERSION}.patch").read_text()
    assert "+++ b/src/transformers/models/qwen2_vl/modeling_qwen2_vl.py" in patch
    verdict = json.loads((out / "verify.json").read_text())
    assert verdict["transformers"] == VERSION and verdict["status"] in {s.value for s in Status}
    assert by_name["verify"].status == verdict["status"]
    assert by_name["pr"].status == "ok", by_name["pr"].detail
    assert (out / "pr" / "PR_BODY.md").exists() and list((out / "pr").glob("0001-*.patch"))
    summary = (out / "SUMMARY.md").read_text()
    assert f"transformers {VERSION}" in summary and "verify" in summary
