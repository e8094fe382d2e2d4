"""What each optional extra installs, which extras each command needs, and the hint when one is missing.

``pip install ropefix`` is the lean core (torch and packaging): ``import ropefix``, ``ropefix.hotfix``,
``ropefix.devices.simulate`` and the pytest plugin. The kit's commands need extras, one per stage;
a command that spans stages needs the union, listed in ``COMMANDS`` (README, *Install*). pyproject.toml
declares the same distributions (tests/test_extras.py holds the two together and checks ``COMMANDS``
against what each command's modules import).

``needed_by`` checks a command's extras before it starts and turns a missing module found later (an
option that reaches further, a tool such as ruff) into one ``RopefixError`` line naming the
``pip install`` to run.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
from collections.abc import Iterator

from ropefix.errors import RopefixError

# extra -> {distribution: what ropefix imports or runs from it}. platformdirs and filelock are the
# cache's (ropefix.store), which the fix engine (scan memo) and the release sources both use.
EXTRAS: dict[str, dict[str, str]] = {
    "fix": {"libcst": "libcst", "ruff": "ruff", "platformdirs": "platformdirs", "filelock": "filelock"},
    "ship": {"GitPython": "git", "platformdirs": "platformdirs", "filelock": "filelock"},
    "prove": {"hypothesis": "hypothesis", "transformers": "transformers", "accelerate": "accelerate"},
    "matrix": {"tox": "tox", "matplotlib": "matplotlib", "PyYAML": "yaml"},
}

# command -> the extras it needs. Options that reach further add theirs when they run (the hint
# then names both): `scan --versions` and `matrix --sync-tox` fetch release trees (ship, and fix
# for the scan).
COMMANDS: dict[str, tuple[str, ...]] = {
    "cache": ("ship",),
    "checkout": ("ship",),
    "scan": ("fix",),
    "apply": ("fix",),
    "patches": ("fix", "ship"),
    "verify": ("fix", "prove"),  # the suite runs on a copy the engine patched
    "sweep": ("fix", "ship", "prove"),  # verify per release and family; the picture also wants matplotlib (matrix)
    "backport": ("fix", "ship"),
    "pr": ("fix", "ship"),
    "run": ("fix", "ship", "prove"),  # checkout, scan, apply, verify, pr
    "matrix": ("matrix",),
}

# the module (or tool) -> the first extra that brings it
PROVIDER: dict[str, str] = {}
for _extra, _dists in EXTRAS.items():
    for _module in _dists.values():
        PROVIDER.setdefault(_module, _extra)


class MissingExtra(RopefixError):
    """A module or tool of an extra is not installed; the message is the one line to act on."""

    def __init__(self, module: str, command: str | None = None) -> None:
        self.module, self.command = module, command
        wanted = [*COMMANDS.get(command or "", ())]
        if PROVIDER[module] not in wanted:
            wanted.append(PROVIDER[module])
        wanted.sort(key=list(EXTRAS).index)
        who = f"`ropefix {command}`" if command else "this"
        names = " and ".join([", ".join(wanted[:-1]), wanted[-1]] if len(wanted) > 1 else wanted)
        super().__init__(
            f"{who} needs the {names} extra{'s' if len(wanted) > 1 else ''} ({module} is not installed); "
            f"install with: pip install 'ropefix[{','.join(wanted)}]'"
        )


def absent(module: str) -> bool:
    """Whether ``module`` cannot be imported here (without importing it)."""
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):  # a broken or blocked package is as good as missing
        return True


def require(module: str) -> None:
    """Raise ``MissingExtra`` when ``module`` (a tool run as ``python -m module``) is not installed."""
    if absent(module):
        raise MissingExtra(module)


@contextlib.contextmanager
def needed_by(command: str | None) -> Iterator[None]:
    """Refuse to start ``command`` without its extras; within the block, an extra's module that turns
    out to be missing (an option that reaches further) becomes ``MissingExtra`` for ``command`` too.

    Checked up front because some commands run for minutes or in subprocesses (``run`` checks out and
    scans before its verify step; a child's ImportError would never reach this process). Only a
    top-level module of a known extra that is really absent qualifies: a missing submodule of an
    installed package (``transformers.models.x`` on an old release) stays what it is.
    """
    for extra in COMMANDS.get(command or "", ()):
        for module in EXTRAS[extra].values():
            if absent(module):
                raise MissingExtra(module, command)
    try:
        yield
    except MissingExtra as e:
        if e.command is None and command:
            raise MissingExtra(e.module, command) from e
        raise
    except ModuleNotFoundError as e:
        module = absent_extra_module(e)
        if module is not None:
            raise MissingExtra(module, command) from e
        raise


def absent_extra_module(error: ModuleNotFoundError) -> str | None:
    """The extra's top-level module ``error`` is about, when it is really not installed; else None."""
    top = (error.name or "").partition(".")[0]
    return top if top in PROVIDER and absent(top) else None


def register_stub(sub: argparse._SubParsersAction, command: str, error: ModuleNotFoundError) -> bool:
    """Register ``command``, whose module cannot be imported without its extra, as a stub that takes any
    arguments and refuses with the hint (its --help shows it too). False when ``error`` is not that."""
    module = absent_extra_module(error)
    if module is None:
        return False
    hint = MissingExtra(module, command)
    p = sub.add_parser(
        command, help=f"(not installed: {str(hint).rpartition('install with: ')[2]})", description=str(hint)
    )
    p.add_argument("args", nargs="*", help=argparse.SUPPRESS)

    def refuse(args: argparse.Namespace) -> int:
        raise hint

    p.set_defaults(func=refuse, stub=True)
    return True
