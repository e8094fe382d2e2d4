"""The regression suite: classification of failures, and red before / green after on an affected release.

The red/green tests run against the transformers release tox's ``tests`` env pins (``RED_RELEASE``),
where the reproducer finds the bug; elsewhere they are skipped with the reason. Each suite run
happens in a subprocess with the tree first on the path, as ``ropefix verify`` does it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ropefix.prove import suite, verify
from ropefix.prove.status import Status

# The release the red/green tests prove the fix on: found by running the reproducer over releases
# (see the report in README's "Regression suite" section); tox's tests env pins it.
RED_RELEASE = "4.49.0"
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
        (
            "vision_positions = position_ids + delta.expand_as(position_ids)",
            "prepare_inputs_for_generation",
            "rope-deltas",
        ),
        ("position_ids[..., i, attention_mask[i] == 1] = llm_positions", "get_rope_index", "rope-index-scatter"),
        (
            "causal_mask = torch.arange(target_length) > cache_position.reshape(-1, 1)",
            "_update_causal_mask",
            "causal-mask",
        ),
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
    exec(compile(src.read_text(), str(src), "exec"), ns)  # noqa: S102 - a module file the test wrote itself
    try:
        ns["outer"]()
    except RuntimeError as e:
        site, code, function = suite.site_of(e.__traceback__, str(root))
    assert (site, code, function) == ("models/m.py:2", "raise RuntimeError('x')", "inner")


def _example() -> suite.Example:
    return suite.Example(
        "qwen2_vl",
        {"kind": "contiguous", "n_devices": 2, "input_device": "cuda:1", "device_map": {"a": "cuda:0"}},
        {"kind": "text", "batch": 1, "length": 2, "pad": 0, "padding_side": "left", "grid": [1, 2, 2], "seed": 0},
        "generate-greedy",
        {"max_new_tokens": 1},
    )


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


# ---------------------------------------------------------------- red before, green after (subprocesses)


@pytest.mark.slow
@needs_red
@pytest.mark.parametrize("model", MODELS)
def test_red_unpatched_green_patched(model: str) -> None:
    result = verify.verify(None, [model], "ci")
    (m,) = result.models
    (rule,) = [r for r in m.rules if r.rule == "rope-deltas"]
    # red: the reproducer fails on the unpatched tree, at the stored-deltas line of this model
    assert rule.pattern_present and rule.reproduced
    assert rule.failure_site.startswith(f"transformers/models/{model}/modeling_{model}.py:")
    line = int(rule.failure_site.rsplit(":", 1)[1])
    source = (_installed() / "models" / model / f"modeling_{model}.py").read_text().splitlines()
    assert "rope_deltas" in source[line - 1]
    assert len(set(rule.failing_layout["device_map"].values())) > 1
    # green: on the patched copy no example fails at that hazard, every placed run equals the
    # one-device run (an output mismatch would count against `fixed`), no working path broke
    assert rule.fixed is True
    assert m.broken_paths == []
    assert not [o for o in m.other_findings if o["tree"] == "patched" and o["hazard"] == "rope-deltas"]
    assert m.status in (Status.REPRODUCED_FIXED.value, Status.REPRODUCED_OTHER_HAZARDS.value)
    assert m.examples_run > 0


# ---------------------------------------------------------------- the naive one-liner

NAIVE_FROM = "self.rope_deltas = rope_deltas"
NAIVE_TO = "self.rope_deltas = rope_deltas.to(cache_position.device)"
PLAIN_FORWARD = """
import torch
from ropefix.prove import callpaths, tinymodels
tiny = tinymodels.build("qwen2_vl")
for kind in ("text", "image"):
    try:
        callpaths.call("forward", tiny.model, tinymodels.inputs(tiny, tinymodels.Prompt(kind=kind)), callpaths.Shape())
        print(kind, "ok")
    except Exception as e:
        print(kind, "FAILED", type(e).__name__, e)
"""


def _stored_where_cache_position_is_a_parameter(src: str) -> bool:
    import ast

    for fn in ast.walk(ast.parse(src)):
        if (
            isinstance(fn, ast.FunctionDef)
            and NAIVE_FROM in (ast.get_source_segment(src, fn) or "")
            and "cache_position" in [a.arg for a in fn.args.args + fn.args.kwonlyargs]
        ):
            return True
    return False


def _plain_forward(pkg: Path) -> str:
    from ropefix import proc

    kit = Path(suite.__file__).resolve().parents[2]
    env = {"PYTHONPATH": f"{pkg.parent}:{kit}", "OMP_NUM_THREADS": "1", "TRANSFORMERS_VERBOSITY": "error"}
    done = proc.run([sys.executable, "-c", PLAIN_FORWARD], env=env, check=True)
    return done.out


@pytest.mark.slow
def test_naive_one_liner_breaks_plain_forward_without_cache_position(tmp_path: Path) -> None:
    pkg = _installed()
    target = pkg / "models" / "qwen2_vl" / "modeling_qwen2_vl.py"
    if not _stored_where_cache_position_is_a_parameter(target.read_text()):
        pytest.skip(f"transformers {verify.version_of(pkg)} has no cache_position where it stores rope_deltas")
    # untouched copy: a plain forward (no cache_position, as in training) works
    clean = verify.light_copy(pkg, tmp_path / "clean", ["qwen2_vl"])
    assert _plain_forward(clean).split() == ["text", "ok", "image", "ok"]
    # the widely quoted one-liner, applied to a copy: the same call now raises where it stores the deltas
    naive = verify.light_copy(pkg, tmp_path / "naive", ["qwen2_vl"])
    edited = naive / "models" / "qwen2_vl" / "modeling_qwen2_vl.py"
    edited.write_text(edited.read_text().replace(NAIVE_FROM, NAIVE_TO))
    out = _plain_forward(naive)
    assert "text FAILED AttributeError" in out and "image FAILED AttributeError" in out
    assert "'NoneType' object has no attribute 'device'" in out
