"""A Python environment where a given transformers release is importable next to this one's torch and ropefix.

A ``venv --without-pip`` whose ``.pth`` adds this interpreter's site-packages (torch, accelerate, the
editable ropefix) *after* its own; ``pip --python`` then installs ``transformers==X`` there with the
dependencies that release pins (an older huggingface_hub, tokenizers, requests), which shadow ours.
Built once per release into the shared test cache and reused.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import sysconfig
from pathlib import Path

from ropefix.store import Store


def release_python(store: Store, version: str) -> Path:
    here = sysconfig.get_paths()["purelib"]
    key = hashlib.sha256(f"{sys.prefix}|{here}".encode()).hexdigest()[:10]
    dest = store.path("results", f"tf-env-{version}-{key}")
    py = dest / "bin" / "python"
    with store.lock(f"tf-env-{version}"):
        if (dest / ".complete").exists():
            return py
        subprocess.run(["rm", "-rf", str(dest)], check=True)
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", dest], check=True)
        site = subprocess.run(
            [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        Path(site, "ropefix-base.pth").write_text(f"import site; site.addsitedir({here!r})\n")
        subprocess.run(
            [sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-compile", f"transformers=={version}"],
            check=True,
        )
        (dest / ".complete").touch()
    return py
