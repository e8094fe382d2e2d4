"""Argument types every command shares: positive counts, and model lists (space- or comma-separated)."""

from __future__ import annotations

import argparse

from ropefix.errors import RopefixError


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def add_models(p: argparse.ArgumentParser, help_text: str) -> None:
    p.add_argument("--models", nargs="+", metavar="MODEL", help=help_text + "; space- or comma-separated")


def models(values: list[str] | None) -> list[str] | None:
    """``["a,b", "c"]`` -> ``["a", "b", "c"]``; None when not given. Empty names are refused."""
    if values is None:
        return None
    found = [v.strip() for item in values for v in item.split(",")]
    if not all(found):
        raise RopefixError(
            "--models got an empty name (a stray comma?). Name model folders, e.g. `--models qwen2_vl qwen2_5_vl`."
        )
    return found
