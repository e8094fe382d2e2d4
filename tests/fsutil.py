"""File-system helpers for tests: a folder this process cannot write to, even as root."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """``folder`` refuses new files for the block: mode 0o555, or ``chattr +i`` for root (which ignores modes)."""
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", folder], check=False, capture_output=True).returncode != 0:
            pytest.skip("running as root without chattr: cannot make a folder read-only")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", folder], check=True)
    else:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
