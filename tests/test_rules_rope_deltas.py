"""The rope-deltas rule on synthetic code shapes (tests/snippets/, written for ropefix)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ropefix.devices import simulate
from ropefix.errors import RopefixError
from ropefix.fix import engine
from ropefix.fix.rules import AFFECTED, FIXED, REGISTRY, SAFE, UNKNOWN, select

SNIPPETS = Path(__file__).parent / "snippets"
RULES = select(None)

# What the engine must report in each shape: (line, shape, status), in line order.
EXPECTED = {
    "store_then_add.py": [(8, "store-unaligned", AFFECTED), (10, "combine-cache-position", AFFECTED)],
    "add_then_move.py": [
        (9, "store-expression", UNKNOWN),
        (11, "store-unaligned", AFFECTED),
        (15, "combine-cache-position", AFFECTED),
    ],
    "generation_kwargs.py": [(4, "combine-cache-position", AFFECTED)],
    "inner_model_attr.py": [
        (15, "store-unaligned", AFFECTED),
        (17, "combine-int-offset", SAFE),
        (18, "combine-cache-position", AFFECTED),
    ],
    # 4.47/4.48: the delta made from cache_position shifts positions built on the embeddings' device
    "shift_after_delta.py": [
        (11, "store-unaligned", AFFECTED),
        (14, "combine-cache-position", AFFECTED),
        (18, "shift-unaligned", AFFECTED),
    ],
    # 4.45/4.46: the deltas travel in the generation arguments; positions on the input ids' device
    "shift_generation_kwargs.py": [(9, "combine-cache-position", AFFECTED), (12, "shift-unaligned", AFFECTED)],
    # 5.2's ernie4_5_vl_moe: the stored deltas, reshaped where they are, shift positions built elsewhere
    "shift_stored_deltas.py": [(11, "store-without-cache-position", FIXED), (17, "shift-unaligned", AFFECTED)],
    # later omni models: the stored deltas only ever meet an int cache length: nothing to fix
    "int_offset_only.py": [(10, "store-unaligned", SAFE), (12, "combine-int-offset", SAFE)],
    # 5.2+: generation positions and deltas made from the same inputs
    "generation_positions.py": [
        (20, "combine-generation-positions", SAFE),
        (21, "store-without-cache-position", SAFE),
    ],
    # the companion rule's shape (tests/test_rules_causal_mask.py): no rope-deltas site in it
    "causal_mask.py": [
        (7, "mask-range-vs-cache-position", AFFECTED),
        (9, "mask-range-vs-cache-position", AFFECTED),
        (11, "mask-range-on-cache-device", FIXED),
    ],
    "rope_index_scatter.py": [(8, "index-mask-aligned", FIXED), (10, "index-mask-unaligned", AFFECTED)],
    # cache_position is a local here, not a parameter: the store is shown, not guessed at
    "local_cache_position.py": [(7, "store-cache-position-local", UNKNOWN), (8, "combine-cache-position", AFFECTED)],
    "without_cache_position.py": [(10, "store-without-cache-position", FIXED), (12, "combine-other", UNKNOWN)],
    "naive_one_liner.py": [
        (8, "store-naive-to", AFFECTED),
        (10, "combine-cache-position", AFFECTED),
        (19, "store-aligned", FIXED),
    ],
}


def source(name: str) -> str:
    return (SNIPPETS / name).read_text()


def found(text: str) -> list[tuple[int, str, str]]:
    return [(f.line, f.shape, f.status) for _, f in engine.rewrite(text, RULES, fix=False).findings]


def load(text: str) -> dict:
    scope: dict = {}
    exec(compile(text, "<snippet>", "exec"), scope)  # noqa: S102 - our own synthetic snippet
    return scope


def test_registry_lists_rope_deltas_first() -> None:
    assert list(REGISTRY) == ["rope-deltas", "causal-mask", "rope-index-scatter"]
    with pytest.raises(RopefixError, match="Unknown rule"):
        select("no-such-rule")


def test_every_snippet_has_expectations() -> None:
    assert sorted(p.name for p in SNIPPETS.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_scan_reports_each_site_with_line_shape_and_status(name: str) -> None:
    assert found(source(name)) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_apply_fixes_every_affected_site_and_is_idempotent(name: str) -> None:
    before = source(name)
    once = engine.rewrite(before, RULES, fix=True).text
    compile(once, name, "exec")
    after = found(once)
    assert [s for s in after if s[2] == AFFECTED] == []
    # every site stays visible after the fix: nothing is silently dropped. An unknown store may turn
    # safe, because every addition in the model now moves the deltas first
    assert len(after) == len(EXPECTED[name])
    unknown = [s[1] for s in EXPECTED[name] if s[2] == UNKNOWN]
    assert [s[1] for s in after if s[2] in (UNKNOWN, SAFE) and s[1] in unknown] == unknown
    assert engine.rewrite(once, RULES, fix=True).text == once
    if any(s[2] == AFFECTED for s in EXPECTED[name]):
        assert once != before
    # one line per site where it fits in 119 columns; every line stays within upstream's limit
    assert max(len(ln) for ln in once.splitlines()) <= 119


def test_the_fix_reads_as_one_guarded_line() -> None:
    once = engine.rewrite(source("store_then_add.py"), RULES, fix=True).text
    assert (
        "self.rope_deltas = rope_deltas if cache_position is None else rope_deltas.to(cache_position.device)" in once
    )
    assert "delta = cache_position[0] + self.rope_deltas.to(cache_position.device) if cache_position" in once


def test_safety_check_rejects_the_naive_one_liner() -> None:
    naive = source("naive_one_liner.py")
    outcome = engine.rewrite(naive, RULES, fix=False)
    assert (8, "store-naive-to", AFFECTED) in [(f.line, f.shape, f.status) for _, f in outcome.findings]
    assert outcome.problems and "cache_position may be None" in outcome.problems[0]
    # the gate that guards every write refuses code holding it ...
    with pytest.raises(RopefixError, match="safety check"):
        engine.check_text("naive.py", naive, RULES)
    # ... and passes the engine's own rewrite of it
    engine.check_text("naive.py", engine.rewrite(naive, RULES, fix=True).text, RULES)


def test_naive_one_liner_crashes_without_cache_position_and_the_fix_does_not() -> None:
    ids = torch.ones(2, 4, dtype=torch.long)
    naive = load(source("naive_one_liner.py"))["Decoder"]()
    with pytest.raises(AttributeError):  # 'NoneType' object has no attribute 'device'
        naive.positions(ids, cache_position=None)
    fixed = load(engine.rewrite(source("naive_one_liner.py"), RULES, fix=True).text)["Decoder"]()
    assert fixed.positions(ids, cache_position=None) is None
    assert fixed.rope_deltas.tolist() == [[2], [2]]


@pytest.mark.parametrize("name", ["store_then_add.py", "naive_one_liner.py"])
def test_plain_forward_without_cache_position_keeps_working(name: str) -> None:
    """The paths that worked before (no cache_position: plain forward, training) still work."""
    ids = torch.ones(2, 4, dtype=torch.long)
    patched = load(engine.rewrite(source(name), RULES, fix=True).text)["Decoder"]()
    assert patched.positions(ids) is None
    assert patched.positions(ids) is None  # a second call without cache_position reuses nothing


def test_split_devices_fail_before_and_pass_after_the_fix() -> None:
    """Red/green on simulated devices: deltas kept on cuda:0, decoding positions on cuda:1."""
    before, after = source("store_then_add.py"), engine.rewrite(source("store_then_add.py"), RULES, fix=True).text
    with simulate(2):
        ids = torch.ones(2, 4, dtype=torch.long, device="cuda:0")
        prefill = torch.arange(4, device="cuda:1")
        step = torch.tensor([4], device="cuda:1")
        red = load(before)["Decoder"]()
        red.rope_deltas = None
        red.positions(ids, cache_position=prefill * 0)  # prefill stores deltas on ids' device
        with pytest.raises(RuntimeError, match="Expected all tensors to be on the same device"):
            red.positions(ids, cache_position=step)
        green = load(after)["Decoder"]()
        green.positions(ids, cache_position=prefill * 0)
        delta = green.positions(ids, cache_position=step)
        assert delta.device == torch.device("cuda:1")
        assert delta.tolist() == [[6], [6]]


def test_inner_model_attribute_red_green_on_simulated_devices() -> None:
    before = source("inner_model_attr.py")
    after = engine.rewrite(before, RULES, fix=True).text
    with simulate(2):
        ids = torch.ones(1, 3, dtype=torch.long, device="cuda:0")
        red = load(before)["Outer"]()
        red.prepare(ids, cache_position=torch.tensor([0], device="cuda:1"))
        with pytest.raises(RuntimeError, match="same device"):
            red.prepare(ids, cache_position=torch.tensor([3], device="cuda:1"))
        green = load(after)["Outer"]()
        green.prepare(ids, cache_position=torch.tensor([0], device="cuda:1"))
        delta, _ = green.prepare(ids, cache_position=torch.tensor([3], device="cuda:1"))
        assert delta.tolist() == [[6]]


def test_reasons_say_why_each_site_has_its_status() -> None:
    reasons = {f.shape: f.reason for _, f in engine.rewrite(source("int_offset_only.py"), RULES, fix=False).findings}
    assert reasons == {
        "store-unaligned": "the stored deltas only meet an int cache length",
        "combine-int-offset": "a Python int cache length: no second device",
    }
    shifted = {f.shape: f.reason for _, f in engine.rewrite(source("shift_after_delta.py"), RULES, fix=False).findings}
    assert "the model combines them: `cache_position[0] + self.rope_deltas`" in shifted["store-unaligned"]
    assert shifted["shift-unaligned"] == "delta (cache_position + deltas) meets position_ids, built on another device"


@pytest.mark.parametrize("name", ["int_offset_only.py", "generation_positions.py"])
def test_safe_stores_are_left_alone(name: str) -> None:
    assert engine.rewrite(source(name), RULES, fix=True).text == source(name)


def test_the_shift_fix_joins_the_block_that_makes_the_delta_a_tensor() -> None:
    """4.47/4.48: the move lands where upstream put it from 4.49 on, inside ``if cache_position is not None``."""
    once = engine.rewrite(source("shift_after_delta.py"), RULES, fix=True).text.splitlines()
    at = once.index("        if cache_position is not None:  # an int otherwise")
    assert once[at + 1 : at + 4] == [
        "            delta = delta.repeat_interleave(batch // delta.shape[0], dim=0)",
        "            delta = delta.to(position_ids.device)",
        "        position_ids = position_ids.add(delta)",
    ]
    kwargs = engine.rewrite(source("shift_generation_kwargs.py"), RULES, fix=True).text
    assert (
        "    if cache_position is not None and rope_deltas is not None:\n"
        "        delta = delta.to(position_ids.device)\n"
        "    # the deltas arrive with the generation arguments" in kwargs
    )


def test_shift_red_green_on_simulated_devices() -> None:
    """4.47 shape: deltas and cache_position on cuda:0, positions on the embeddings' cuda:1."""
    before, after = (
        source("shift_after_delta.py"),
        engine.rewrite(source("shift_after_delta.py"), RULES, fix=True).text,
    )
    with simulate(2):
        ids = torch.ones(2, 4, dtype=torch.long, device="cuda:0")
        embeds = torch.zeros(2, 1, 8, device="cuda:1")
        results = []
        for text in (before, after):
            model = load(text)["Decoder"]()
            model.positions(ids, embeds, cache_position=torch.arange(4, device="cuda:0"))
            results.append(lambda m=model: m.positions(ids, embeds, cache_position=torch.tensor([4], device="cuda:0")))
        with pytest.raises(RuntimeError, match="Expected all tensors to be on the same device"):
            results[0]()
        shifted = results[1]()
        assert shifted.device == torch.device("cuda:1") and shifted.tolist() == [[6], [6]]
        assert load(after)["Decoder"]().positions(ids, embeds) is None  # no cache_position: no move


def test_stored_deltas_shift_red_green_on_simulated_devices() -> None:
    """5.2 ernie4_5_vl_moe shape: deltas stored on the input ids' cuda:0, positions on the embeddings' cuda:1."""
    before = source("shift_stored_deltas.py")
    after = engine.rewrite(before, RULES, fix=True).text
    assert "        delta = delta.to(position_ids.device)\n        position_ids = (position_ids + delta)" in after
    with simulate(2):
        ids = torch.ones(2, 4, dtype=torch.long, device="cuda:0")
        embeds = torch.zeros(2, 1, 8, device="cuda:1")
        calls = []
        for text in (before, after):
            model = load(text)["Decoder"]()
            model.positions(ids, embeds)
            calls.append(lambda m=model: m.positions(ids, embeds, past_length=4))
        with pytest.raises(RuntimeError, match="Expected all tensors to be on the same device"):
            calls[0]()
        shifted = calls[1]()
        assert shifted.device == torch.device("cuda:1") and shifted.tolist() == [[6], [6]]


def test_generation_kwargs_shift_red_green_on_simulated_devices() -> None:
    """4.45/4.46 shape: cache_position and the deltas on the CPU, the next input ids on cuda:0."""
    before = load(source("shift_generation_kwargs.py"))["prepare"]
    after = load(engine.rewrite(source("shift_generation_kwargs.py"), RULES, fix=True).text)["prepare"]
    with simulate(2):
        ids = torch.ones(2, 1, dtype=torch.long, device="cuda:0")
        kwargs = {"cache_position": torch.tensor([5]), "rope_deltas": torch.tensor([[-1], [1]])}
        with pytest.raises(RuntimeError, match="Expected all tensors to be on the same device"):
            before(ids, **kwargs)
        shifted = after(ids, **kwargs)
        assert shifted.device == torch.device("cuda:0") and shifted.tolist() == [[4], [6]]
        assert after(ids, cache_position=torch.tensor([5])).tolist() == [[0], [0]]  # no deltas: int 0, no move
