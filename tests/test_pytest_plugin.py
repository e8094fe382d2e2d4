"""The pytest plugin, exercised through pytester as another project would use it.

The inner runs are in-process (fast; the plugin is found through its entry point either way).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

# Imported here, in the outer session: pytester's in-process runs drop modules first imported
# inside them, and importing torch's C extension a second time crashes the interpreter.
import ropefix.devices  # noqa: F401

pytest_plugins = ["pytester"]

SPLIT_TEST = """
import pytest
import torch

REAL = {name: getattr(torch.cuda, name) for name in ("device_count", "is_available", "current_device")}
REAL_COUNT = torch.cuda.device_count()

def test_default(simulated_devices):
    assert simulated_devices.n == 2 and torch.cuda.device_count() == 2
    x = torch.ones(2, device="cuda:1")
    assert simulated_devices.device_of(x) == torch.device("cuda", 1)
    with pytest.raises(RuntimeError, match="found at least two devices, cuda:1 and cuda:0!"):
        x + torch.ones(2, device="cuda:0")

@pytest.mark.ropefix_devices(3)
def test_marked(simulated_devices):
    assert simulated_devices.n == 3 and torch.ones(1, device="cuda:2").device.index == 2

def test_gone_after(simulated_devices):
    pass

def test_no_fixture_no_simulation():
    # after three simulated tests: the very functions torch had before, answering for the real machine
    assert {name: getattr(torch.cuda, name) for name in REAL} == REAL
    assert torch.cuda.device_count() == REAL_COUNT
    assert not torch.ones(1).is_cuda
"""


def test_fixture_and_marker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SPLIT_TEST)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)


def test_option_sets_the_default_number(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import torch
        def test_four(simulated_devices):
            assert simulated_devices.n == 4 and torch.cuda.device_count() == 4
        """
    )
    pytester.runpytest("--ropefix-devices=4").assert_outcomes(passed=1)


def test_real_devices_skip_when_the_machine_has_too_few(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest, torch
        @pytest.mark.ropefix_devices(64)
        def test_needs_many(simulated_devices):
            assert not simulated_devices.simulated
        """
    )
    result = pytester.runpytest("--ropefix-real-devices", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*needs 64 CUDA devices and the machine has*"])


def test_real_devices_are_real_where_present(pytester: pytest.Pytester) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine: the real-device path is covered by the skip test")
    pytester.makepyfile(
        """
        import torch
        def test_real(simulated_devices):
            assert not simulated_devices.simulated
            assert torch.ones(1, device=simulated_devices.devices[0]).is_cuda
        """
    )
    pytester.runpytest("--ropefix-real-devices", "--ropefix-devices=1").assert_outcomes(passed=1)


def test_bad_marker_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        @pytest.mark.ropefix_devices(0)
        def test_zero(simulated_devices):
            pass
        """
    )
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(["*ropefix_devices needs a whole number of devices*"])
    assert result.ret != 0


HEAVY = ("torch", "transformers", "hypothesis", "libcst", "git", "accelerate", "matplotlib", "yaml", "numpy", "tox")


def test_loading_the_plugin_imports_nothing_heavy() -> None:
    """Everyone who installs ropefix gets the plugin in every pytest run, so loading it must cost next to nothing.

    pytest is imported first, as it is when pytest loads its plugins; ``-X importtime`` reports the
    plugin's own cumulative time (about 1.5 ms here; torch alone takes seconds).
    """
    code = f"import json, sys, pytest, ropefix.pytest_plugin; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], check=True, capture_output=True, text=True, timeout=120
    )
    assert json.loads(done.stdout) == []
    (cumulative_us,) = [
        int(line.split("|")[1]) for line in done.stderr.splitlines() if line.endswith("| ropefix.pytest_plugin")
    ]
    assert cumulative_us < 100_000, f"importing ropefix.pytest_plugin took {cumulative_us / 1000:.1f} ms"
