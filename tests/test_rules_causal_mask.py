"""The causal-mask companion rule: red/green on simulated devices, mRoPE files only, rule selection."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ropefix.devices import simulate
from ropefix.fix import engine
from ropefix.fix.rules import AFFECTED, select

SNIPPET = (Path(__file__).parent / "snippets" / "causal_mask.py").read_text()


def load(text: str):
    scope: dict = {}
    exec(compile(text, "<snippet>", "exec"), scope)  # noqa: S102 - our own synthetic snippet
    return scope["build_mask"]


def test_mask_range_fails_across_devices_before_and_passes_after() -> None:
    fixed = engine.rewrite(SNIPPET, select("causal-mask"), fix=True).text
    with simulate(2):
        cache_position = torch.arange(3, 5)  # inputs left on the CPU, as the failing layout had them
        with pytest.raises(RuntimeError, match="Expected all tensors to be on the same device"):
            load(SNIPPET)(None, 2, 5, "cuda:1", cache_position, window=4)
        mask = load(fixed)(None, 2, 5, "cuda:1", cache_position, window=4)
        assert mask.device == torch.device("cuda:1")
    # same values as the one-device run of the unpatched code
    assert torch.equal(mask, load(SNIPPET)(None, 2, 5, "cpu", cache_position, window=4))


def test_only_files_holding_mrope_deltas_are_touched() -> None:
    plain = SNIPPET.replace("rope_deltas", "unused")
    assert engine.rewrite(plain, select(None), fix=False).findings == []
    found = engine.rewrite(SNIPPET, select(None), fix=False).findings
    assert [(r, f.status) for r, f in found if f.status == AFFECTED] == [("causal-mask", AFFECTED)] * 2


def test_rules_select_which_hazards_are_rewritten() -> None:
    only_rope = engine.rewrite(SNIPPET, select("rope-deltas"), fix=True).text
    assert only_rope == SNIPPET
    both = engine.rewrite(SNIPPET, select(None), fix=True).text
    assert both.count("cache_position.to(device)") == 2
    assert engine.rewrite(both, select(None), fix=True).text == both
