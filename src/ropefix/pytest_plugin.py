"""pytest plugin: the ``simulated_devices`` fixture, registered as the ``ropefix_devices`` entry point.

    def test_split(simulated_devices):             # cuda:0 and cuda:1 exist, on the CPU
        x = torch.ones(2, device=simulated_devices.devices[1])

    @pytest.mark.ropefix_devices(4)                # this test gets four devices
    def test_four(simulated_devices): ...

Options: ``--ropefix-devices=N`` sets the default number of devices (2);
``--ropefix-real-devices`` hands out the machine's real CUDA devices instead, and skips tests
that need more than it has.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from ropefix.commands._args import positive_int

if TYPE_CHECKING:  # torch loads only when a test asks for the fixture, not on every pytest start
    import torch

MARKER = "ropefix_devices"


@dataclass
class RealDevices:
    """The real counterpart of ``ropefix.devices.Simulator``: same fields, real hardware."""

    n: int
    kind: str = "cuda"
    devices: list[Any] = field(default_factory=list)
    simulated: bool = False

    def device_of(self, t: torch.Tensor) -> torch.device:
        return t.device


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ropefix", "ropefix device simulator")
    group.addoption(
        "--ropefix-devices",
        type=positive_int,
        default=2,
        metavar="N",
        help="number of devices the simulated_devices fixture provides (default 2)",
    )
    group.addoption(
        "--ropefix-real-devices",
        action="store_true",
        default=False,
        help="give simulated_devices the real CUDA devices; tests needing more than exist are skipped",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MARKER}(n): the number of devices simulated_devices provides to this test")


def _wanted(request: pytest.FixtureRequest) -> int:
    marker = request.node.get_closest_marker(MARKER)
    n = marker.args[0] if marker and marker.args else request.config.getoption("--ropefix-devices")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise pytest.UsageError(f"ropefix_devices needs a whole number of devices of at least 1, not {n!r}")
    return n


@pytest.fixture
def simulated_devices(request: pytest.FixtureRequest) -> Iterator[object]:
    """``n`` CUDA devices: simulated on the CPU, or real ones with ``--ropefix-real-devices``."""
    import torch

    from ropefix.devices import simulate

    n = _wanted(request)
    if request.config.getoption("--ropefix-real-devices"):
        have = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if have < n:
            pytest.skip(f"--ropefix-real-devices: this test needs {n} CUDA devices and the machine has {have}")
        yield RealDevices(n=n, devices=[torch.device("cuda", i) for i in range(n)])
        return
    with simulate(n) as sim:
        yield sim
