"""Verdicts built as verify builds them (ropefix.prove.verdict values), for tests of their consumers."""

from __future__ import annotations

from ropefix.prove.verdict import Example, Failure, FamilyReport, Finding, Proof, Report, State, Verdict

SITE = "models/qwen2_vl/modeling_qwen2_vl.py:1724"
PAIRS = ("generate-greedy/text", "generate-greedy/image", "decode-loop/text", "forward/text")


def example(model: str = "qwen2_vl", devices: int = 2, input_device: str = "cpu") -> Example:
    dmap = {"model.visual": "cuda:0", "model.language_model": f"cuda:{devices - 1}", "lm_head": f"cuda:{devices - 1}"}
    return Example(
        model,
        {"kind": "vision-apart", "n_devices": devices, "input_device": input_device, "device_map": dmap},
        {"kind": "text", "batch": 1, "length": 2, "pad": 0, "padding_side": "left", "grid": [1, 2, 2], "seed": 0},
        "generate-greedy",
        {"max_new_tokens": 2, "num_beams": 1, "num_return_sequences": 1},
    )


def failure(hazard: str = "rope-deltas", site: str = SITE, devices: int = 2, model: str = "qwen2_vl") -> Failure:
    return Failure(
        hazard, site, "delta = cache_position[0] + self.rope_deltas", "RuntimeError: ...", example(model, devices)
    )


def family(
    state: State,
    name: str = "qwen2_vl",
    release: str = "4.49.0",
    torch: str = "2.13.0",
    hazards: tuple[str, ...] = (),
    judged: tuple[str, ...] = PAIRS,
) -> FamilyReport:
    """A family whose rope-deltas verdict is ``state`` (with a proof when reproduced)."""
    proof = Proof(failure(model=name), "unpatched") if state in (State.REPRODUCED_FIXED, State.FIX_FAILED) else None
    decode = sum(1 for p in judged if not p.startswith("forward/"))
    v = Verdict(
        release,
        torch,
        name,
        "rope-deltas",
        state,
        len(judged),
        decode,
        (f"src/transformers/{SITE}",) if state is not State.NOT_AFFECTED else (),
        proof,
        "passes" if state is State.REPRODUCED_FIXED else ("fails at x" if state is State.FIX_FAILED else ""),
        "why",
    )
    findings = tuple(
        Finding(failure(h, "models/qwen2_vl/modeling_qwen2_vl.py:900", model=name), "unpatched") for h in hazards
    )
    reason = "no tiny model could be built: X" if state is State.NOT_JUDGED and not judged else ""
    return FamilyReport(name, state, (v,), findings, judged, {}, 12, (), (), reason)


def report(state: State, release: str = "4.57.6", torch: str = "2.13.0+cpu", hazards: tuple[str, ...] = ()) -> Report:
    return Report(release, torch, "0.0.0", "ci", (family(state, release=release, torch=torch, hazards=hazards),), 3.5)
