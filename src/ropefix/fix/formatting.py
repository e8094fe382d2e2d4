"""Format rewritten lines the way upstream does (ruff format, line length 119), and only those lines.

Formatting whole upstream files would drag in every difference between upstream's ruff and
ours; ``ruff format --range`` touches the logical lines we rewrote and nothing else.
"""

from __future__ import annotations

import io
import shutil
import sys
import tempfile
import tokenize
from pathlib import Path

from ropefix import proc
from ropefix.errors import RopefixError
from ropefix.extras import MissingExtra

LINE_LENGTH = 119  # upstream's setting in its pyproject.toml


def ruff() -> str:
    beside = Path(sys.executable).parent / "ruff"
    found = str(beside) if beside.exists() else shutil.which("ruff")
    if not found:
        raise MissingExtra("ruff")  # rewritten code is formatted by ruff, which the fix extra installs
    return found


def logical(text: str, lines: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Widen 1-based inclusive line ranges to whole statements (ruff formats a range only when it
    holds the statement from its first to its last line)."""
    spans: list[tuple[int, int]] = []
    first = None
    skip = (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT)
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if first is None and tok.type not in skip:
            first = tok.start[0]
        if tok.type == tokenize.NEWLINE and first is not None:
            spans.append((first, tok.end[0]))
            first = None
    out = []
    for a, b in lines:
        hit = [s for s in spans if s[0] <= b and s[1] >= a]
        out.append((min([a, *(s[0] for s in hit)]), max([b, *(s[1] for s in hit)])))
    return out


def format_lines(text: str, lines: list[tuple[int, int]]) -> str:
    """``text`` with the statements on the 1-based inclusive ``lines`` ranges run through ``ruff format``."""
    if not lines:
        return text
    lines = logical(text, lines)
    with tempfile.TemporaryDirectory(prefix="ropefix-fmt-") as tmp:
        path = Path(tmp) / "code.py"
        path.write_text(text)
        # bottom to top: a range that grows or shrinks does not move the ones above it
        for first, last in sorted(set(lines), reverse=True):
            # ``--range=A-B`` ends at column 1 of line B, so B = last + 1 covers the last line whole
            done = proc.run(
                [
                    ruff(),
                    "format",
                    "--isolated",
                    "--no-cache",
                    f"--line-length={LINE_LENGTH}",
                    f"--range={first}-{last + 1}",
                    path,
                ]
            )
            if not done.ok:
                raise RopefixError(f"ruff could not format rewritten code (a bug in a rule).\n{done.describe()}")
        return path.read_text()
