"""Progress and messages for long work: everything goes to stderr, so stdout stays machine-readable."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def info(msg: str) -> None:
    # one write per line: print() writes the text and the newline apart, so lines from two threads could join
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def progress(items: Iterable[T], label: str, total: int | None = None, name: Callable[[T], str] = str) -> Iterator[T]:
    """Yield ``items`` while printing ``[i/n] label: name(item) (elapsed)`` for each one."""
    items = list(items) if total is None else items
    n = total if total is not None else len(items)  # type: ignore[arg-type]
    start = time.monotonic()
    for i, item in enumerate(items, 1):
        info(f"[{i}/{n}] {label}: {name(item)} ({time.monotonic() - start:.1f}s)")
        yield item
    info(f"{label}: {n} done in {time.monotonic() - start:.1f}s")
