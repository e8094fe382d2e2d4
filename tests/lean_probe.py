"""Copied into a project whose environment holds ropefix's core and pytest only, and run there by
tests/test_packaging.py: the plugin's fixture, the simulator and the hotfix work without any extra.

The model is the hazard's shape in a few lines (a core environment has no transformers): deltas kept at
prefill on the device of that step's inputs, added to ``cache_position[0]`` when decoding elsewhere.
"""

from __future__ import annotations

import sys

import torch

import ropefix

EXTRAS = ("transformers", "hypothesis", "accelerate", "libcst", "git", "platformdirs", "tox", "matplotlib", "yaml")
MISMATCH = "Expected all tensors to be on the same device, but found at least two devices, cuda:1 and cuda:0!"


class Decoder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rope_deltas = None

    def forward(self, x: torch.Tensor, cache_position: torch.Tensor | None = None) -> torch.Tensor:
        if self.rope_deltas is None:  # prefill: the deltas stay where that step's inputs were
            self.rope_deltas = torch.zeros(1, dtype=torch.long, device=x.device)
            return x
        return x + (cache_position[0] + self.rope_deltas)


def decode(model: Decoder) -> str:
    """Prefill on cuda:0, then one decoding step on cuda:1: where the output is, or the error."""
    model.rope_deltas = None
    model(torch.ones(1, device="cuda:0"))
    try:
        return str(model(torch.ones(1, device="cuda:1"), cache_position=torch.tensor([3], device="cuda:1")).device)
    except RuntimeError as e:
        return str(e)


def test_the_hotfix_on_simulated_devices(simulated_devices) -> None:
    model = Decoder()
    assert decode(model) == MISMATCH
    fix = ropefix.hotfix(model)
    assert fix.patched == ["Decoder"]
    assert decode(model) == "cuda:1"
    fix.remove()
    assert decode(model) == MISMATCH


def test_no_extra_was_imported() -> None:  # runs last: nothing above reached for the kit's libraries
    assert [m for m in EXTRAS if m in sys.modules] == []
