"""Upstream's PR checks, run one by one on a checkout, each with its own exit code.

The gate differs by release: older Makefiles have ``fixup``/``repo-consistency``, newer ones
``check-repo``; some of their lines ignore failures (``-`` prefixes, ``|| true``). So the gate is
only detected (and named in the checklist), and every underlying check is run here directly:
ruff format and ruff check on the touched files, and the repository scripts under ``utils/``
(modular conversion, copies) where the tree has them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ropefix import proc

# utils/ scripts that check what a model PR touches, in the order upstream's gates run them.
REPO_SCRIPTS = ("check_copies.py", "check_modular_conversion.py", "check_dummies.py", "check_repo.py")


@dataclass(frozen=True)
class Check:
    name: str
    command: str
    rc: int | None  # None: not run (reason in ``note``)
    note: str = ""

    @property
    def status(self) -> str:
        return "not run" if self.rc is None else "pass" if self.rc == 0 else f"fail (exit {self.rc})"


def detect_gate(tree: Path) -> str:
    """Which PR gate the tree's Makefile declares: ``check-repo``, ``repo-consistency``/``fixup``, or none."""
    makefile = tree / "Makefile"
    if not makefile.exists():
        return "none (no Makefile in this tree)"
    targets = set(re.findall(r"^([\w-]+):", makefile.read_text(errors="replace"), re.MULTILINE))
    for gate in ("check-repo", "repo-consistency", "fixup"):
        if gate in targets:
            return f"make {gate}"
    return "none (Makefile without a known gate)"


def run_checks(tree: Path, touched: list[str]) -> list[Check]:
    py = [p for p in touched if p.endswith(".py")]
    ruff = [proc.python(), "-m", "ruff"]
    checks = [
        _run(tree, "ruff format --check", [*ruff, "format", "--check", *py]),
        _run(tree, "ruff check", [*ruff, "check", *py]),
    ]
    for script in REPO_SCRIPTS:
        path = tree / "utils" / script
        if path.exists():
            checks.append(_run(tree, f"python utils/{script}", [proc.python(), f"utils/{script}"]))
        else:
            checks.append(Check(f"python utils/{script}", "", None, "utils/ not in this tree (sdist-built)"))
    return checks


def _run(tree: Path, name: str, cmd: list[str]) -> Check:
    done = proc.run(cmd, cwd=tree, timeout=900)
    tail = (done.out + done.err).strip().splitlines()[-3:]
    return Check(name, " ".join(cmd[2:] if cmd[1:2] == ["-m"] else cmd), done.rc, " / ".join(tail)[:300])


def render(checks: list[Check], gate: str) -> str:
    rows = [f"| `{c.name}` | {c.status} | {c.note.replace('|', '/')} |" for c in checks]
    failed = [c for c in checks if c.rc not in (0, None)]
    return "\n".join(
        [
            "# Upstream checks",
            "",
            (
                f"Gate in this tree's Makefile: `{gate}` (its lines are run one by one below; some Makefile lines "
                "ignore failures, these do not)."
            ),
            "",
            "| check | result | note |",
            "| --- | --- | --- |",
            *rows,
            "",
            f"{len(failed)} failing." if failed else "No check failed.",
            "",
        ]
    )
