"""hotfix: red/green under the simulator, on synthetic modules and on real affected releases."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from releaseenv import release_python

import ropefix
from ropefix import devices
from ropefix import hotfix as hf
from ropefix.errors import RopefixError  # noqa: F401 - the module's public errors stay importable
from ropefix.store import Store

DEVICE_ERROR = "Expected all tensors to be on the same device"


class HazardModel(torch.nn.Module):
    """Synthetic stand-in: stores deltas at prefill and adds them to cache_position[0] when decoding."""

    def __init__(self) -> None:
        super().__init__()
        self.rope_deltas = None

    def forward(self, ids: torch.Tensor, cache_position: torch.Tensor | None = None) -> torch.Tensor:
        if self.rope_deltas is None or cache_position is None:
            self.rope_deltas = ids[:, :1] * 0 + 3
            return ids
        return cache_position[0] + self.rope_deltas


class SafeModel(torch.nn.Module):
    """Keeps deltas too, but never adds them to cache_position: the hotfix leaves it alone."""

    def __init__(self) -> None:
        super().__init__()
        self.rope_deltas = None

    def forward(self, ids: torch.Tensor, cache_position: torch.Tensor | None = None) -> torch.Tensor:
        return ids + (0 if self.rope_deltas is None else self.rope_deltas.to(ids.device))


class Outer(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.model = inner

    def forward(self, ids: torch.Tensor, cache_position: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(ids, cache_position=cache_position)


def _decode(model: torch.nn.Module) -> torch.Tensor:
    ids = torch.ones(1, 4, dtype=torch.long, device="cuda:1")
    model(ids, cache_position=torch.arange(4, device="cuda:1"))  # prefill: deltas land on cuda:1
    return model(ids[:, -1:], cache_position=torch.tensor([4], device="cuda:0"))


def test_import_stays_cheap_and_hotfix_is_callable() -> None:
    code = "import sys, ropefix; assert 'torch' not in sys.modules; assert callable(ropefix.hotfix); print('ok')"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "ok\n"
    assert ropefix.hotfix_class is hf.hotfix_class


def test_synthetic_red_then_green_with_instance_hotfix() -> None:
    with devices.simulate(n=2):
        with pytest.raises(RuntimeError, match=DEVICE_ERROR):
            _decode(Outer(HazardModel()))
        model = Outer(HazardModel())
        fix = ropefix.hotfix(model)
        assert fix.active and fix.patched == ["model"]
        out = _decode(model)
        assert devices.virtual_device(out) == torch.device("cuda:0") and out.item() == 7
        fix.remove()
        with pytest.raises(RuntimeError, match=DEVICE_ERROR):
            _decode(model)


def test_class_hotfix_guards_every_instance_until_removed() -> None:
    with devices.simulate(n=2):
        fix = hf.hotfix_class(HazardModel)
        try:
            assert "HazardModel" in fix.patched and "SafeModel" not in fix.patched
            assert _decode(Outer(HazardModel())).item() == 7
        finally:
            fix.remove()
        with pytest.raises(RuntimeError, match=DEVICE_ERROR):
            _decode(Outer(HazardModel()))


def test_no_op_where_not_needed_and_without_cache_position() -> None:
    assert not ropefix.hotfix(torch.nn.Linear(2, 2)).active
    assert not ropefix.hotfix(Outer(SafeModel())).active
    model = HazardModel()
    ropefix.hotfix(model)
    ids = torch.ones(1, 3, dtype=torch.long)
    model(ids)  # a plain forward without cache_position (training) is untouched
    assert model(ids).equal(ids)


@pytest.mark.network
@pytest.mark.slow
@pytest.mark.parametrize("version", ["4.49.0", "4.57.6", "5.1.0", "5.3.0"])  # quick matrix affected + 4.57
def test_real_release_red_without_green_with(version: str, shared_store: Store) -> None:
    """Affected (the engine's scan says so): red without, green with. Safe: the hotfix changes nothing."""
    py = release_python(shared_store, version)
    probe = Path(__file__).with_name("hotfix_probe.py")
    cmd = [py, "-W", "ignore", probe, "qwen2_vl"]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["version"] == version
    assert result["hazardous"] == result["scan_affected"]  # the hotfix guards exactly what the engine would fix
    if result["hazardous"]:
        assert result["none"].startswith("red") and "rope_deltas" in result["none"]
        assert result["instance"] == "green" and result["class"] == "green"
        assert result["none-again"] == result["none"]  # remove() restores the original classes
    else:
        assert result["patched"] == []
        assert result["instance"] == result["none"] == result["class"]


class KwargsModel(torch.nn.Module):
    """Synthetic stand-in for the oldest shape: deltas travel in the generation kwargs."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return ids

    def prepare_inputs_for_generation(self, ids, cache_position=None, rope_deltas=None):
        return cache_position[0] + rope_deltas if cache_position is not None and rope_deltas is not None else 0


def test_deltas_passed_as_generation_arguments_are_aligned() -> None:
    with devices.simulate(n=2):
        model = KwargsModel()
        kwargs = {
            "cache_position": torch.tensor([4], device="cuda:0"),
            "rope_deltas": torch.ones(1, 1, device="cuda:1"),
        }
        with pytest.raises(RuntimeError, match=DEVICE_ERROR):
            model.prepare_inputs_for_generation(None, **kwargs)
        fix = ropefix.hotfix(model)
        assert fix.active
        out = model.prepare_inputs_for_generation(None, **kwargs)
        assert devices.virtual_device(out) == torch.device("cuda:0") and out.item() == 5
        fix.remove()
        assert "prepare_inputs_for_generation" not in model.__dict__
