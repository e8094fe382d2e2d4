"""The regression suite: classification of failures, and red before / green after on an affected release.

The red/green tests run against the transformers release tox's ``tests`` env pins (``RED_RELEASE``),
where the reproducer finds the bug; elsewhere they are skipped with the reason. Each suite run
happens in a subprocess with the tree first on the path, as ``ropefix verify`` does it.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest

from ropefix import suite, verify
from ropefix.status import Status

# The release the red/green tests prove the fix on: found by running the reproducer over releases
# (see the report in README's "Regression suite" section); tox's tests env pins it.
RED_RELEASE = "4.57.6"
MODELS = ["qwen2_vl", "qwen2_5_vl"]


def _installed() -> Path:
    return verify.package_of(None)


needs_red = pytest.mark.skipif(
    verify.version_of(_installed()) != RED_RELEASE,
    reason=f"red/green runs on transformers {RED_RELEASE} (tox -e tests pins it); "
    f"{verify.version_of(_installed())} is installed",
)


# ---------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    ("code", "function", "hazard"),
    [
        ("delta = cache_position[0] + self.rope_deltas", "forward", "rope-deltas"),
        ("delta = cache_position[0] + self.model.rope_deltas", "prepare_inputs_for_generation", "rope-deltas"),
        ("vision_positions = position_ids + delta.expand_as(position_ids)", "prepare_inputs_for_generation",
         "rope-deltas"),
        ("position_ids[..., i, attention_mask[i] == 1] = llm_positions", "get_rope_index", "rope-index-scatter"),
        ("causal_mask = torch.arange(target_length) > cache_position.reshape(-1, 1)", "_update_causal_mask",
         "causal-mask"),
        ("x = a + b", "some_helper", "device-mismatch:some_helper"),
    ],
)
def test_hazard_names_follow_the_failing_line(code: str, function: str, hazard: str) -> None:
    assert suite.hazard_of(code, function) == hazard


def test_site_is_the_innermost_frame_inside_the_tree(tmp_path: Path) -> None:
    root = tmp_path / "transformers"
    (root / "models").mkdir(parents=True)
    src = root / "models" / "m.py"
    src.write_text("def inner():\n    raise RuntimeError('x')\n\ndef outer():\n    inner()\n")
    ns: dict = {}
    exec(compile(src.read_text(), str(src), "exec"), ns)
    try:
        ns["outer"]()
    except RuntimeError as e:
        site, code, function = suite.site_of(e.__traceback__, str(root))
    assert (site, code, function) == ("models/m.py:2", "raise RuntimeError('x')", "inner")


def _example() -> suite.Example:
    return suite.Example("qwen2_vl", {"kind": "contiguous", "n_devices": 2, "input_device": "cuda:1",
                                      "device_map": {"a": "cuda:0"}},
                         {"kind": "text", "batch": 1, "length": 2, "pad": 0, "padding_side": "left",
                          "grid": [1, 2, 2], "seed": 0}, "generate-greedy", {"max_new_tokens": 1})


def _result(failures: list[tuple[str, str]], baseline: dict[str, str] | None = None) -> suite.SuiteResult:
    r = suite.SuiteResult("qwen2_vl", "x", "/x", "t", "ci", examples_run=5)
    r.failures = [suite.Failure(h, s, "code", "err", _example()) for h, s in failures]
    r.baseline_errors = baseline or {}
    return r


RD = ("rope-deltas", "models/qwen2_vl/modeling_qwen2_vl.py:10")
MASK = ("causal-mask", "masking_utils.py:5")


@pytest.mark.parametrize(
    ("present", "before", "after", "status"),
    [
        (True, [RD], [], Status.REPRODUCED_FIXED),
        (True, [RD, MASK], [MASK], Status.REPRODUCED_OTHER_HAZARDS),
        (True, [RD], [RD], Status.FIX_FAILED),
        (True, [], [], Status.LATENT),
        (False, [], [], Status.NOT_AFFECTED),
        (False, [MASK], [MASK], Status.NOT_AFFECTED),
    ],
)
def test_verdicts(present: bool, before: list, after: list, status: Status) -> None:
    m = verify.judge("qwen2_vl", ["rope-deltas"], {"rope-deltas": present}, _result(before), _result(after))
    assert m.status == status.value
    rule = m.rules[0]
    assert rule.reproduced == (RD in before)
    assert rule.failure_site == (f"transformers/{RD[1]}" if RD in before else None)
    if MASK in before:  # other hazards are findings, never dropped
        assert any(o["hazard"] == "causal-mask" for o in m.other_findings)


def test_a_fix_that_breaks_a_working_path_fails() -> None:
    broke = {"forward/text": "AttributeError: 'NoneType' object has no attribute 'device'"}
    m = verify.judge("qwen2_vl", ["rope-deltas"], {"rope-deltas": True}, _result([RD]), _result([], broke))
    assert m.status == Status.FIX_FAILED.value
    assert m.broken_paths == ["forward/text"] and m.rules[0].fixed is False
