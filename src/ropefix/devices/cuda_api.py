"""The ``torch.cuda`` answers a simulated machine gives, patched in for the simulation only.

accelerate and transformers ask ``torch.cuda`` how many devices exist and how much memory each
has before they place anything; these functions answer for the virtual devices. ``patched``
installs them on the ``torch.cuda`` module and puts every original back on exit, whatever
happens inside.
"""

from __future__ import annotations

import contextlib
import time
from collections import namedtuple
from collections.abc import Callable, Iterator
from typing import Any

import torch

# What get_device_properties returns: the fields accelerate and transformers read.
DeviceProperties = namedtuple(
    "DeviceProperties", "name total_memory major minor multi_processor_count is_integrated gcnArchName"
)


class Stream:
    """A stream on a simulated device: work is synchronous on the CPU, so there is nothing to wait for."""

    def __init__(self, device: Any = None, priority: int = 0, **kwargs: Any) -> None:
        self.device = device
        self.priority = priority

    def synchronize(self) -> None:
        pass

    def wait_stream(self, stream: Stream) -> None:
        pass

    def wait_event(self, event: Event) -> None:
        pass

    def record_event(self, event: Event | None = None) -> Event:
        return event or Event()

    def query(self) -> bool:
        return True


class Event:
    """An event on a simulated device; ``elapsed_time`` measures the host's clock."""

    def __init__(self, enable_timing: bool = False, blocking: bool = False, interprocess: bool = False) -> None:
        self.at: float | None = None

    def record(self, stream: Stream | None = None) -> None:
        self.at = time.perf_counter()

    def synchronize(self) -> None:
        pass

    def wait(self, stream: Stream | None = None) -> None:
        pass

    def query(self) -> bool:
        return True

    def elapsed_time(self, end: Event) -> float:
        if self.at is None or end.at is None:
            raise RuntimeError("Both events must be recorded before calculating elapsed time.")
        return (end.at - self.at) * 1000.0


class CudaFacade:
    """``torch.cuda`` as seen on a machine with ``n`` simulated devices of ``memory`` bytes each."""

    def __init__(self, n: int, memory: int) -> None:
        self.n = n
        self.memory = memory
        self.current = 0

    def _index(self, device: Any = None) -> int:
        if device is None:
            return self.current
        if isinstance(device, int):
            idx = device
        else:
            dev = torch.device(device)
            idx = self.current if dev.index is None else dev.index
        if not 0 <= idx < self.n:
            raise RuntimeError("CUDA error: invalid device ordinal")
        return idx

    def functions(self) -> dict[str, Callable[..., Any]]:
        facade = self

        class device:
            def __init__(self, dev: Any) -> None:
                self.idx = -1 if dev is None or dev == -1 else facade._index(dev)
                self.prev = -1

            def __enter__(self) -> None:
                self.prev = facade.current
                if self.idx >= 0:
                    facade.current = self.idx

            def __exit__(self, *exc: object) -> None:
                facade.current = self.prev

        class device_of(device):  # mirrors torch.cuda.device_of: the device of a tensor
            def __init__(self, obj: torch.Tensor) -> None:
                super().__init__(obj.get_device() if obj.is_cuda else -1)

        def set_device(dev: Any) -> None:
            facade.current = facade._index(dev)

        def props(dev: Any = None) -> DeviceProperties:
            facade._index(dev)
            return DeviceProperties("ropefix simulated GPU", facade.memory, 8, 0, 1, 0, "")

        def check(dev: Any = None) -> None:
            facade._index(dev)

        def zero(dev: Any = None) -> int:
            facade._index(dev)
            return 0  # nothing is allocated on a virtual device

        return {
            "is_available": lambda: True,
            # False: torch.cuda._lazy_call then queues its callbacks (real CUDA calls) instead of running them
            "is_initialized": lambda: False,
            "device_count": lambda: facade.n,
            "current_device": lambda: facade.current,
            "set_device": set_device,
            "device": device,
            "device_of": device_of,
            "synchronize": check,
            "get_device_name": lambda dev=None: props(dev).name,
            "get_device_properties": props,
            "get_device_capability": lambda dev=None: (props(dev).major, props(dev).minor),
            "is_bf16_supported": lambda including_emulation=True: True,
            "mem_get_info": lambda dev=None: (facade.memory, props(dev).total_memory),
            "memory_allocated": zero,
            "max_memory_allocated": zero,
            "memory_reserved": zero,
            "max_memory_reserved": zero,
            "empty_cache": lambda: None,
            "reset_peak_memory_stats": check,
            "ipc_collect": lambda: None,
            # randomness comes from the CPU generator; per-device generators do not exist here
            "manual_seed": lambda seed: None,
            "manual_seed_all": lambda seed: None,
            "seed": lambda: None,
            "seed_all": lambda: None,
            "get_rng_state": lambda dev="cuda": torch.get_rng_state(),
            "set_rng_state": lambda state, dev="cuda": None,
            "Stream": Stream,
            "Event": Event,
            "current_stream": lambda dev=None: Stream(facade._index(dev)),
            "default_stream": lambda dev=None: Stream(facade._index(dev)),
            "stream": lambda s=None: contextlib.nullcontext(s),
        }


@contextlib.contextmanager
def patched(facade: CudaFacade) -> Iterator[None]:
    module = torch.cuda
    missing = object()
    saved = {name: getattr(module, name, missing) for name in facade.functions()}
    try:
        for name, fn in facade.functions().items():
            setattr(module, name, fn)
        yield
    finally:
        for name, old in saved.items():
            if old is missing:
                delattr(module, name)
            else:
                setattr(module, name, old)
