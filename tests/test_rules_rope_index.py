"""The rope-index-scatter companion rule: red/green on simulated devices, get_rope_index only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ropefix.devices import simulate
from ropefix.fix import engine
from ropefix.fix.rules import select

SNIPPET = (Path(__file__).parent / "snippets" / "rope_index_scatter.py").read_text()


def load(text: str):
    scope: dict = {}
    exec(compile(text, "<snippet>", "exec"), scope)  # noqa: S102 - our own synthetic snippet
    return scope["Model"]()


def test_mask_indexing_fails_across_devices_before_and_passes_after() -> None:
    fixed = engine.rewrite(SNIPPET, select("rope-index-scatter"), fix=True).text
    assert "position_ids[..., i, attention_mask[i].to(position_ids.device) == 1] = " in fixed
    ids = torch.ones(2, 4, dtype=torch.long)
    with simulate(2):
        mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]], device="cuda:1")  # the mask went to the embeddings
        with pytest.raises(IndexError, match="same device as the indexed tensor"):
            load(SNIPPET).get_rope_index(ids, mask)
        positions, deltas = load(fixed).get_rope_index(ids, mask)
    expected, expected_deltas = load(SNIPPET).get_rope_index(ids, mask.cpu())  # the one-device run
    assert torch.equal(positions, expected) and torch.equal(deltas, expected_deltas)


def test_only_get_rope_index_in_mrope_files_is_looked_at() -> None:
    renamed = SNIPPET.replace("def get_rope_index", "def other_helper")
    assert engine.rewrite(renamed, select("rope-index-scatter"), fix=False).findings == []
    plain = SNIPPET.replace("rope_deltas", "offsets")
    assert engine.rewrite(plain, select("rope-index-scatter"), fix=False).findings == []
