"""Simulated accelerators on the CPU: ``with simulate(n=2) as sim:`` and ``cuda:0``, ``cuda:1`` exist.

Tensors carry a virtual device (kept on their storage, see ``storage``); all arithmetic runs on the
CPU, so results are bit-identical to a plain CPU run, while mixing devices raises PyTorch's own
errors. ``torch.cuda`` answers for the virtual devices (``cuda_api``), so accelerate's
``dispatch_model`` and ``infer_auto_device_map`` place models as they would on a real machine.
Built on torch's public extension point ``torch.overrides.TorchFunctionMode``; the ``torch.cuda``
functions, accelerate's hook moves (``accel``) and the names of the hottest torch calls (``direct``:
they reach the mode's handler without torch's round trip) are patched for the duration of the
context only. CUDA kernels that take dtypes the CPU's refuse give CUDA's result on simulated devices
(``kernels``).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from ropefix.devices import accel, direct
from ropefix.devices.cuda_api import CudaFacade, patched
from ropefix.devices.mode import DeviceMode
from ropefix.devices.storage import device_of
from ropefix.errors import RopefixError

__all__ = ["Simulator", "simulate", "virtual_device"]

KINDS = ("cuda",)
DEFAULT_MEMORY = 16 * 2**30
_active = threading.Lock()


@dataclass
class Simulator:
    """What ``simulate`` yields: the virtual devices and a way to ask where a tensor is."""

    n: int
    kind: str
    memory: int
    devices: list[torch.device] = field(default_factory=list)
    mode: DeviceMode | None = None
    simulated: bool = True

    def device_of(self, t: torch.Tensor) -> torch.device:
        """The device ``t`` is on, inside or outside the simulation."""
        return virtual_device(t)


def virtual_device(t: torch.Tensor) -> torch.device:
    """The (virtual) device of ``t``; usable after the simulation ended, e.g. in test reports."""
    with torch._C.DisableTorchFunction():  # read storages and real devices, not the simulation's answers
        return device_of(t)


@contextlib.contextmanager
def _threads_enter(mode: DeviceMode) -> Iterator[None]:
    """Threads started during the simulation run inside it too.

    Torch function modes are per thread, and libraries load weights in thread pools
    (transformers' ``from_pretrained``); without this their tensors would miss the simulation.
    """
    original = threading.Thread.run

    def run(thread: threading.Thread) -> None:
        with mode:
            original(thread)

    threading.Thread.run = run  # type: ignore[method-assign]
    try:
        yield
    finally:
        threading.Thread.run = original  # type: ignore[method-assign]


@contextlib.contextmanager
def simulate(
    n: int = 2, kind: str = "cuda", memory: int = DEFAULT_MEMORY, *, direct_entries: bool = True
) -> Iterator[Simulator]:
    """Simulate ``n`` devices ``{kind}:0 .. {kind}:{n-1}`` of ``memory`` bytes each on the CPU.

    ``direct_entries=False`` leaves every torch call to torch's routing through the mode (the
    same handlers, slower; see ``direct``): the differential tests compare the two.
    """
    if kind not in KINDS:
        raise RopefixError(
            f"the device simulator cannot simulate {kind!r} devices; it simulates {', '.join(KINDS)}. "
            'Call simulate(n, kind="cuda").'
        )
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise RopefixError(f"the device simulator needs a whole number of devices of at least 1, not {n!r}.")
    if isinstance(memory, bool) or not isinstance(memory, int) or memory <= 0:
        raise RopefixError(f"the simulated device memory must be a positive number of bytes, not {memory!r}.")
    if not _active.acquire(blocking=False):
        raise RopefixError(
            "a device simulation is already running; simulations do not nest (torch.cuda can only "
            "answer for one machine). Use the simulator you already have."
        )
    try:
        facade = CudaFacade(n, memory)
        mode = DeviceMode(kind, n, facade)
        sim = Simulator(n=n, kind=kind, memory=memory, devices=list(mode.devices), mode=mode)
        entries = direct.patched(mode) if direct_entries else contextlib.nullcontext()
        with patched(facade), accel.patched(mode), _threads_enter(mode), entries, mode:
            yield sim
    finally:
        _active.release()
