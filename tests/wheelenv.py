"""A real transformers release installed from its wheel into a throw-away virtual environment.

The wheel is downloaded once into the shared test cache; each environment is a fresh
``venv --without-pip`` filled by this interpreter's pip (``pip --python``), with ``--no-deps``
and ``--no-compile``: file-level install/revert needs the files and the RECORD, not a working import.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ropefix.store import Store

WHEEL_RELEASE = "4.49.0"  # the release the install and backport tests install from its wheel


def wheel(store: Store, version: str) -> Path:
    folder = store.path("downloads", "wheels")
    found = sorted(folder.glob(f"transformers-{version}-*.whl"))
    if not found:
        with store.lock("wheels"):
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", "--no-deps", f"transformers=={version}", "-d", folder],
                check=True,
            )
        found = sorted(folder.glob(f"transformers-{version}-*.whl"))
    return found[0]


def make_env(where: Path, whl: Path) -> Path:
    """Create a venv at ``where`` holding ``whl``; returns its site-packages folder."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", where], check=True)
    py = where / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps", "--no-compile", whl], check=True
    )
    out = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return Path(out)
