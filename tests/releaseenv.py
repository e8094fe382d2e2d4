"""Test helper: ``ropefix.releases.relenv`` environments kept in the shared test cache between runs."""

from __future__ import annotations

from pathlib import Path

from ropefix.releases import relenv
from ropefix.store import Store


def release_python(store: Store, version: str) -> Path:
    return relenv.python_for(version, store)
