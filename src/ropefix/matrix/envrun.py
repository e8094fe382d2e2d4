"""What a matrix env runs: ``python -m ropefix.matrix.envrun OUT.json [verify args]``.

It runs ``ropefix verify --json`` (every family the scan flags, unless told) against the env's installed transformers and keeps its JSON in
OUT.json (written whole or not at all), so the runner can tell "verify said X" from "verify
crashed". The exit code is verify's.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

from ropefix.files import atomic_write


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m ropefix.matrix.envrun OUT.json [verify args]", file=sys.stderr)
        return 2
    out, rest = Path(argv[0]), argv[1:]
    from ropefix.main import main as ropefix_main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = ropefix_main(["verify", "--json", *rest])
    text = buf.getvalue()
    sys.stdout.write(text)
    try:
        json.loads(text)
    except ValueError:
        print(f"envrun: verify printed no JSON (exit {rc}); {out.name} not written", file=sys.stderr)
        return rc or 1
    atomic_write(out, text)
    return rc


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
