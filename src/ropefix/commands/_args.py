"""Argument types every command shares: counts, durations, model lists (spaces or commas), rule lists.

Nonsense numbers (0, negative, NaN) are argparse errors (exit 2) before any work starts.
"""

from __future__ import annotations

import argparse
import math

from ropefix.errors import RopefixError


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def positive_float(text: str) -> float:
    """A duration in seconds: finite and above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, not {text}")
    return value


def add_models(p: argparse.ArgumentParser, help_text: str) -> None:
    p.add_argument("--models", nargs="+", metavar="MODEL", help=help_text + "; space- or comma-separated")


def models(values: list[str] | None) -> list[str] | None:
    """``["a,b", "c"]`` -> ``["a", "b", "c"]``; None when not given. Empty names are refused."""
    if values is None:
        return None
    found = [v.strip() for item in values for v in item.split(",")]
    if not any(found):
        raise RopefixError(
            f"--models {' '.join(values)!r} names nothing. Name model folders, e.g. `--models qwen2_vl qwen2_5_vl`, "
            "or leave the option out for all."
        )
    if not all(found):
        raise RopefixError(
            "--models got an empty name (a stray comma?). Name model folders, e.g. `--models qwen2_vl qwen2_5_vl`."
        )
    return found


def split(value: str | None) -> list[str] | None:
    """``a,b`` -> ["a", "b"] (``--rules``); None (the option was not given) means all. A value naming
    nothing is refused: it must not silently mean "all"."""
    if value is None:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise RopefixError(
            f"{value!r} names nothing. Give comma-separated names (e.g. --rules rope-deltas,causal-mask), or leave "
            "the option out for all."
        )
    return names
