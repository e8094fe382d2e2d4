"""An interpreter for one transformers release, next to this environment's torch and ropefix.

Old releases pin dependencies this environment does not have (``requests``, an older
``huggingface_hub`` and ``tokenizers``), so their trees cannot be imported here. A release env is
a ``venv --without-pip`` whose ``.pth`` adds this interpreter's site-packages (torch, accelerate,
the kit) *after* its own; ``pip --python`` installs ``transformers==X`` with the dependencies that
release pins, which then shadow ours. Built once per release into the cache (``results/``),
complete or not at all, and reused. Used by ``ropefix run`` and ``ropefix pr --python``.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import sysconfig
from pathlib import Path

from ropefix import proc, ui
from ropefix.errors import RopefixError
from ropefix.files import atomic_write
from ropefix.store import Store


def python_for(version: str, store: Store | None = None) -> Path:
    store = store or Store()
    here = sysconfig.get_paths()["purelib"]
    key = hashlib.sha256(f"{sys.prefix}|{here}".encode()).hexdigest()[:10]
    dest = store.path("results", f"tf-env-{version}-{key}")
    py = dest / "bin" / "python"
    with store.lock(f"tf-env-{version}"):
        if (dest / ".complete").exists():
            return py
        shutil.rmtree(dest, ignore_errors=True)
        ui.info(f"building an environment for transformers {version} (once; its pinned dependencies from the index)")
        try:
            proc.run([sys.executable, "-m", "venv", "--without-pip", dest], check=True)
            site = proc.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True)
            atomic_write(Path(site.out.strip(), "ropefix-base.pth"), f"import site; site.addsitedir({here!r})\n")
            ruff = Path(sys.executable).parent / "ruff"  # the engine formats with the ruff beside python
            if ruff.exists():
                (dest / "bin" / "ruff").symlink_to(ruff)
            pip = [sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-compile"]
            proc.run([*pip, f"transformers=={version}"], check=True, timeout=900)
        except RopefixError as e:
            shutil.rmtree(dest, ignore_errors=True)
            raise RopefixError(
                f"Could not build an environment for transformers {version}: {str(e).splitlines()[0]} "
                "Check that the package index is reachable (pip), or pass an interpreter that imports that release."
            ) from e
        (dest / ".complete").touch()
    return py
