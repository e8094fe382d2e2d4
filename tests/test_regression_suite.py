"""The regression suite: classification of failures, and red before / green after on an affected release.

The red/green tests run against the transformers release tox's ``tests`` env pins (``RED_RELEASE``),
where the reproducer finds the bug; elsewhere they are skipped with the reason. Each suite run
happens in a subprocess with the tree first on the path, as ``ropefix verify`` does it.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from ropefix.fix import hazards
from ropefix.prove import suite, verify
from ropefix.prove.verdict import State

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

MODEL_FILE = "models/qwen2_vl/modeling_qwen2_vl.py"


@pytest.mark.parametrize(
    ("file", "code", "function", "hazard"),
    [
        (MODEL_FILE, "delta = cache_position[0] + self.rope_deltas", "forward", "rope-deltas"),
        (
            MODEL_FILE,
            "delta = cache_position[0] + self.model.rope_deltas",
            "prepare_inputs_for_generation",
            "rope-deltas",
        ),
        (
            MODEL_FILE,
            "vision_positions = position_ids + delta.expand_as(position_ids)",
            "prepare_inputs_for_generation",
            "rope-deltas",
        ),
        (
            MODEL_FILE,
            "position_ids[..., i, attention_mask[i] == 1] = llm_positions",
            "get_rope_index",
            "rope-index-scatter",
        ),
        (MODEL_FILE, "t_index = torch.arange(llm_grid_t).view(-1, 1)", "get_rope_index", "rope-index"),
        # the omni thinkers' prefill (4.52-4.56): a "delta" line, but no stored deltas and no cache_position
        (MODEL_FILE, "rope_deltas = rope_deltas - delta0", "forward", "prefill-deltas"),
        (
            MODEL_FILE,
            "causal_mask = torch.arange(target_length) > cache_position.reshape(-1, 1)",
            "_update_causal_mask",
            "causal-mask",
        ),
        (
            MODEL_FILE,
            "inputs_embeds = inputs_embeds.masked_scatter(image_mask, image_embeds)",
            "forward",
            "embedding-merge",
        ),
        (MODEL_FILE, "inv_freq_expanded = self.inv_freq[None, :, None].float()", "forward", "rotary"),
        (MODEL_FILE, "pos_ids = torch.cat(pos_ids, dim=0)", "rot_pos_emb", "vision-positions"),
        ("generation/utils.py", "unfinished = unfinished & ~stop(input_ids, scores)", "_sample", "generation-utils"),
        (MODEL_FILE, "x = a + b", "some_helper", "device-mismatch:some_helper"),
    ],
)
def test_hazard_names_follow_the_failing_line(file: str, code: str, function: str, hazard: str) -> None:
    assert hazards.classify(hazards.Site(file, function, code)) == hazard


def test_every_rule_declares_a_hazard_of_the_catalogue() -> None:
    from ropefix.fix.rules import REGISTRY

    assert {r.hazard for r in REGISTRY.values()} <= set(hazards.NAMES)
    assert verify.rule_of_hazard()["rope-deltas"] == "rope-deltas"


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
        where, site = suite.site_of(e.__traceback__, str(root))
    assert (where, site) == ("models/m.py:2", hazards.Site("models/m.py", "inner", "raise RuntimeError('x')"))


# ---------------------------------------------------------------- red before, green after (subprocesses)


@pytest.mark.slow
@needs_red
@pytest.mark.parametrize("model", MODELS)
def test_red_unpatched_green_patched(model: str) -> None:
    result = verify.verify(None, [model], "ci")
    fam = result.family(model)
    v = fam.verdict("rope-deltas")
    # red: the reproducer fails at the stored-deltas line of this model, on the unpatched tree or once another
    # rule's fix let the run get that far (an image prompt fails in get_rope_index first)
    assert v.pattern_present and v.reproduced and "rope-deltas" not in v.proof.tree
    assert v.proof.site.startswith(f"transformers/models/{model}/modeling_{model}.py:")
    line = int(v.proof.site.rsplit(":", 1)[1])  # read against the release as published, whatever tree it failed on
    source = (_installed() / "models" / model / f"modeling_{model}.py").read_text().splitlines()
    assert "rope_deltas" in source[line - 1] and source[line - 1].strip() == v.proof.failure.code
    assert len(set(v.proof.failure.example.layout["device_map"].values())) > 1
    # green: the proof's layout passes on the patched copy with results identical to the reference, no
    # example fails at that hazard, no working path broke; judged on decoding paths
    assert v.state is State.REPRODUCED_FIXED, v.after
    assert "the proof's layout passes" in v.after
    assert fam.broken_paths == () and v.decode_judged > 0
    assert not [x for x in fam.findings if x.tree == "patched" and x.hazard == "rope-deltas"]
    assert fam.state is State.REPRODUCED_FIXED and fam.examples_run > 0
    # the third arm: the layouts that failed at the rope-deltas line pass with ropefix.hotfix in every order
    assert fam.hotfix_holds is True, [(h.order, h.failure) for h in fam.hotfix]


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


# ---------------------------------------------------------------- the seed examples


@needs_red
def test_the_search_starts_with_what_a_user_runs_first() -> None:
    """The towers-apart layout with inputs on the CPU, one text prompt, every decoding path: found at once
    (a random search of 1 example would rarely draw it), before hypothesis draws anything."""
    runner = suite.Runner("qwen2_vl", 0, False)
    first = suite.seeds(runner)
    assert [path for *_, path, _ in first] == list(suite.SEED_PATHS)
    layout = first[0][0]
    towers = set(runner.info.units.towers)
    assert layout.input_device == "cpu" and towers
    assert {d for n, d in layout.device_map.items() if n in towers} == {0}
    assert {d for n, d in layout.device_map.items() if n not in towers} == {1}
    result = suite.search("qwen2_vl", max_examples=1)
    assert "rope-deltas" in {f.hazard for f in result.failures}


# ---------------------------------------------------------------- direct entries change no finding


@pytest.mark.slow
@needs_red
def test_the_committed_failing_layouts_fail_the_same_with_and_without_direct_entries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every layout the committed 4.49.0 verdicts prove a failure on (the unpatched tree's proofs) and every
    layout the hotfix arm ran: replayed with the simulator's direct entries and with every call routed by
    torch through the mode, each gives the same failure (hazard, site, error) or the same pass."""
    import functools

    from ropefix import devices
    from ropefix.prove import verdicts

    report = verdicts.committed(RED_RELEASE)
    assert report is not None
    examples: list[tuple[str, dict]] = []
    for fam in report.families:
        for v in fam.verdicts:
            if v.proof is not None and v.proof.tree == "unpatched":
                examples.append((fam.family, asdict(v.proof.failure.example)))
        examples += [(fam.family, {**asdict(h.example), "arm": "placed"}) for h in fam.hotfix]
    examples = list({json.dumps(e, sort_keys=True): (m, e) for m, e in examples}.values())  # one per layout
    assert len(examples) >= 4

    def outcomes() -> list[tuple[str, ...] | None]:
        runners = {model: suite.Runner(model) for model, _ in examples}
        found = []
        for model, example in examples:
            failure = runners[model].replay(example)
            found.append(None if failure is None else (failure.hazard, failure.site, failure.error))
        return found

    direct = outcomes()
    monkeypatch.setattr(devices, "simulate", functools.partial(devices.simulate, direct_entries=False))
    assert outcomes() == direct
    assert sum(f is not None and f[0] == "rope-deltas" for f in direct) >= 2  # the failures are there to compare
