"""The one place ropefix runs subprocesses: every call returns (rc, out, err), failures say everything."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ropefix.errors import RopefixError


@dataclass(frozen=True)
class Completed:
    cmd: tuple[str, ...]
    rc: int
    out: str
    err: str

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def describe(self) -> str:
        return (
            f"command: {' '.join(self.cmd)}\nreturn code: {self.rc}\n"
            f"stdout:\n{self.out.rstrip() or '(none)'}\nstderr:\n{self.err.rstrip() or '(none)'}"
        )


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without GIT_* variables that would redirect git (hooks leak them)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    if extra:
        env.update(extra)
    return env


def run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = False,
    input: str | None = None,
    timeout: float | None = None,
) -> Completed:
    """Run ``cmd``; with ``check`` a non-zero exit raises RopefixError carrying command, code and output."""
    args = tuple(str(c) for c in cmd)
    try:
        p = subprocess.run(  # the exit code is judged below, with the output in the error
            args,
            check=False,
            cwd=cwd,
            env=clean_env(env),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except FileNotFoundError as e:
        raise RopefixError(f"Could not run {args[0]!r}: {e.strerror}. Install it or put it on PATH, then retry.")
    done = Completed(args, p.returncode, p.stdout, p.stderr)
    if check and not done.ok:
        raise RopefixError(f"A command ropefix needs failed.\n{done.describe()}")
    return done


def python() -> str:
    """The interpreter running ropefix (subprocess checks run in the same environment)."""
    return sys.executable
