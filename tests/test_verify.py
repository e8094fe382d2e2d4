"""`ropefix verify`: input errors, the JSON the matrix reads, and the text report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ropefix.main import main
from ropefix.prove import verify
from ropefix.prove.status import Status
from ropefix.prove.suite import Example, Failure, SuiteResult

RULE_KEYS = {"rule", "pattern_present", "reproduced", "failing_layout", "failure_site", "fixed"}
MODEL_KEYS = {"model", "rules", "other_findings", "examples_run"}
TOP_KEYS = {"transformers", "torch", "status", "models", "duration_s"}


def test_unknown_model_is_refused_before_anything_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", "--models", "no_such_model"]) == 1
    err = capsys.readouterr().err
    assert "no_such_model not in transformers" in err and "--models" in err


def test_a_path_that_is_no_transformers_tree_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(tmp_path)]) == 1
    assert "neither a transformers checkout" in capsys.readouterr().err


def test_light_copy_shares_all_but_the_models_to_patch(tmp_path: Path) -> None:
    pkg = verify.package_of(None)
    copy = verify.light_copy(pkg, tmp_path, ["qwen2_vl"])
    assert (copy / "__init__.py").is_symlink()
    assert not (copy / "models" / "qwen2_vl").is_symlink()
    assert (copy / "models" / "qwen2_5_vl").is_symlink()
    target = copy / "models" / "qwen2_vl" / "modeling_qwen2_vl.py"
    target.write_text(target.read_text() + "\n# edited\n")
    assert "# edited" not in (pkg / "models" / "qwen2_vl" / "modeling_qwen2_vl.py").read_text()


def _judged() -> verify.VerifyResult:
    ex = Example(
        "qwen2_vl",
        {
            "kind": "contiguous",
            "n_devices": 2,
            "input_device": "cpu",
            "device_map": {"visual": "cuda:0", "lm_head": "cuda:1"},
        },
        {"kind": "text", "batch": 1, "length": 2, "pad": 0, "padding_side": "left", "grid": [1, 2, 2], "seed": 0},
        "generate-greedy",
        {"max_new_tokens": 2},
    )
    before = SuiteResult("qwen2_vl", "4.49.0", "/x", "2.13.0", "ci", examples_run=30)
    before.failures = [
        Failure("rope-deltas", "models/qwen2_vl/modeling_qwen2_vl.py:1724", "delta = ...", "err", ex),
        Failure("causal-mask", "models/qwen2_vl/modeling_qwen2_vl.py:1318", "mask = ...", "err", ex),
    ]
    after = SuiteResult("qwen2_vl", "4.49.0", "/y", "2.13.0", "ci", examples_run=20)
    m = verify.judge("qwen2_vl", ["rope-deltas"], {"rope-deltas": True}, before, after)
    return verify.VerifyResult("4.49.0", "2.13.0", verify.overall([m]).value, [m], 1.5, "/x", "ci")


def test_json_keeps_the_schema_the_matrix_reads() -> None:
    data = json.loads(json.dumps(_judged().to_json()))
    assert TOP_KEYS <= set(data)
    assert Status(data["status"]) is Status.REPRODUCED_FIXED
    (m,) = data["models"]
    assert MODEL_KEYS <= set(m) and m["examples_run"] == 50
    (r,) = m["rules"]
    assert RULE_KEYS <= set(r)
    assert r["failure_site"] == "transformers/models/qwen2_vl/modeling_qwen2_vl.py:1724" and r["fixed"] is True
    assert r["failing_layout"]["device_map"]["lm_head"] == "cuda:1"
    (f,) = m["other_findings"]
    assert {"hazard", "site", "example"} <= set(f) and f["hazard"] == "causal-mask"


def test_text_report_names_sites_examples_and_latent() -> None:
    text = verify.render(_judged())
    assert "reproduced yes, fixed yes" in text
    assert "transformers/models/qwen2_vl/modeling_qwen2_vl.py:1724" in text
    assert "causal-mask" in text and "shrunk example" in text
    latent = verify.judge(
        "m",
        ["rope-deltas"],
        {"rope-deltas": True},
        SuiteResult("m", "", "", "", "ci"),
        SuiteResult("m", "", "", "", "ci"),
    )
    assert latent.status == Status.LATENT.value
    r = verify.VerifyResult("x", "y", latent.status, [latent], 0.0)
    assert "latent" in verify.render(r)


@pytest.mark.slow
def test_cli_json_on_the_installed_release(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["verify", "--models", "qwen2_vl", "--max-examples", "3", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert TOP_KEYS <= set(data) and data["models"][0]["model"] == "qwen2_vl"
    assert data["models"][0]["examples_run"] >= 6  # both trees searched
    assert rc == (0 if Status(data["status"]).passed else 1)
