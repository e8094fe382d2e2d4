"""The lean core and the extras: what pyproject.toml declares, what each command imports, and the
one-line hint when an extra is missing.

Absence is simulated in a subprocess by a finder that refuses the extras' modules, as an
environment without them would; tests/test_packaging.py does it for real in a fresh virtualenv.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from ropefix import extras, main
from ropefix.fix import formatting

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "ropefix"
CORE = {"torch", "packaging"}  # import names of the core's distributions
# Options that reach past their command's extras, each through a lazy import (the hint then adds
# the extra of the module that was missing): scan --versions fetches release trees; matrix --sync-tox
# runs that scan and reads verify's default models (prove's modules load, its libraries do not).
# sweep draws its picture when matplotlib is there and says so when it is not. verify imports
# prove.verdicts to keep its report, whose ensure() (for backport and pr) fetches release trees.
REACH = {"scan": {"ship"}, "matrix": {"fix", "ship", "prove"}, "sweep": {"matrix"}, "verify": {"ship"}}
# What a core environment must not hold after the core's imports (filelock comes with torch itself).
EXTRA_MODULES = sorted(set(extras.PROVIDER) - {"filelock", "ruff"})


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_pyproject_declares_the_distributions_extras_lists() -> None:
    project = _pyproject()["project"]
    declared = {
        name: {Requirement(r).name for r in reqs}
        for name, reqs in project["optional-dependencies"].items()
        if name not in ("all", "test")
    }
    assert declared == {name: set(dists) for name, dists in extras.EXTRAS.items()}
    (everything,) = project["optional-dependencies"]["all"]
    assert Requirement(everything).name == "ropefix" and Requirement(everything).extras == set(extras.EXTRAS)
    assert {Requirement(r).name for r in project["dependencies"]} == CORE
    assert set(extras.COMMANDS) == set(main.COMMANDS)
    assert {e for needed in extras.COMMANDS.values() for e in needed} <= set(extras.EXTRAS)


@functools.cache
def _module_imports() -> dict[str, set[str]]:
    """Every ropefix module -> every name it imports, at the top or inside a function."""
    found: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        found[name] = names
    return found


def _third_party_reach(start: str, graph: dict[str, set[str]]) -> set[str]:
    """Top-level third-party modules ``start`` can import, following ropefix's own imports."""
    seen: set[str] = set()
    todo, third = [start], set()
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        for name in graph[mod]:
            if not name.startswith("ropefix"):
                top = name.partition(".")[0]
                if top not in sys.stdlib_module_names and top != "__future__":
                    third.add(top)
                continue
            parts = name.split(".")
            todo += [".".join(parts[:k]) for k in range(1, len(parts) + 1) if ".".join(parts[:k]) in graph]
    return third


@pytest.mark.parametrize("command", main.COMMANDS)
def test_each_command_imports_only_the_core_and_its_extras(command: str) -> None:
    """Static, so a new import anywhere under a command shows up here before a user's install misses it."""
    reach = _third_party_reach(f"ropefix.commands.{command}", _module_imports())
    allowed = set(CORE)
    for extra in {*extras.COMMANDS[command], *REACH.get(command, ())}:
        allowed |= set(extras.EXTRAS[extra].values())
    assert reach <= allowed, f"ropefix {command} imports {sorted(reach - allowed)}: add the extra to extras.COMMANDS"


@pytest.mark.parametrize("module", ["ropefix", "ropefix.hotfix", "ropefix.devices", "ropefix.pytest_plugin"])
def test_the_core_modules_reach_no_extra(module: str) -> None:
    reach = _third_party_reach(module, _module_imports())
    assert reach <= CORE | {"pytest"}, reach  # pytest: the plugin runs inside pytest only


BLOCK = """
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))
tried = []

class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            tried.append(name)
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Absent())
"""


CLI = "from ropefix.main import main; raise SystemExit(main(sys.argv[2:]))"


def _without_extras(
    code: str, *args: str, cwd: Path, blocked: list[str] = EXTRA_MODULES
) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter where every extra's module (or those ``blocked``) is missing.

    ``cwd``: an empty folder, so a command that wrongly starts writes nothing into the checkout.
    """
    return subprocess.run(
        [sys.executable, "-c", BLOCK + code, ",".join(blocked), *args],
        cwd=cwd,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_core_works_without_any_extra(tmp_path: Path) -> None:
    done = _without_extras(
        """
import contextlib, io, json
import ropefix, ropefix.pytest_plugin
cheap = "torch" not in sys.modules  # torch loads when the hotfix or the simulator is used
import torch
from ropefix import main
from ropefix.devices import simulate
fix = ropefix.hotfix(torch.nn.Linear(2, 2))  # the callable module, with nothing to guard here
with simulate(2):
    x = torch.ones(2, device="cuda:1")
    try:
        x + torch.ones(2, device="cuda:0")
        mixed = "no error"
    except RuntimeError as e:
        mixed = str(e)
tried_by_core = list(tried)  # the CLI below may try a command's extra, and registers that command as a stub
parser = main.build_parser()
helped = 0
for command in main.COMMANDS:
    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()) as out:
        parser.parse_args([command, "--help"])
    helped += f"usage: ropefix {command}" in out.getvalue()
out = {"tried": tried_by_core, "cheap": cheap, "patched": fix.patched, "mixed": mixed, "helped": helped}
print(json.dumps({**out, "version": ropefix.__version__}))
""",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["tried"] == [], "the core imported an extra's module"
    assert out["cheap"] and out["patched"] == [] and "found at least two devices" in out["mixed"]
    assert out["helped"] == len(main.COMMANDS) and out["version"]  # every command's --help, without its extra


def test_the_cli_starts_without_torch_or_the_installed_metadata() -> None:
    """Every `ropefix` call builds the parser; --version alone reads the metadata (20-250 ms here)."""
    code = (
        "import json, sys; before = set(sys.modules); import ropefix.main; ropefix.main.build_parser(); "
        "print(json.dumps(sorted(m for m in ('torch', 'importlib.metadata') if m in set(sys.modules) - before)))"
    )
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120)
    assert json.loads(done.stdout) == []


@pytest.mark.parametrize(
    ("argv", "wanted"),
    [
        (["scan", "."], "fix"),
        (["apply", "."], "fix"),
        (["checkout", "4.49.0", "--source", "git", "--repo", "nowhere"], "ship"),
        (["verify", "."], "fix,prove"),
        (["backport", "--to", "4.49.0"], "fix,ship"),
        (["run"], "fix,ship,prove"),
        (["sweep"], "fix,ship,prove"),
        (["matrix"], "matrix"),
    ],
)
def test_a_command_without_its_extra_says_what_to_install(argv: list[str], wanted: str, tmp_path: Path) -> None:
    done = _without_extras(CLI, *argv, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith(f"ropefix: error: `ropefix {argv[0]}` needs the ")
    assert lines[0].endswith(f"install with: pip install 'ropefix[{wanted}]'")


def test_a_command_does_not_start_without_every_extra_it_needs(tmp_path: Path) -> None:
    """run checks out and scans (fix, ship) before verify needs prove: it must refuse before the first step."""
    done = _without_extras(CLI, "run", cwd=tmp_path, blocked=["hypothesis", "transformers", "accelerate"])
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "ropefix: error: `ropefix run` needs the fix, ship and prove extras (hypothesis is not installed); "
        "install with: pip install 'ropefix[fix,ship,prove]'"
    )


def test_an_option_that_reaches_further_adds_its_extra(tmp_path: Path) -> None:
    """scan PATH needs fix; scan --versions also fetches release trees (ship)."""
    blocked = [m for m in EXTRA_MODULES if m not in ("libcst", "platformdirs")]  # the fix extra is there
    done = _without_extras(CLI, "scan", "--versions", "4.49.0", cwd=tmp_path, blocked=blocked)
    assert done.returncode == 1 and done.stderr.strip().endswith("pip install 'ropefix[fix,ship]'"), done.stderr


def test_ruff_missing_is_the_fix_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setattr(formatting.shutil, "which", lambda name: None)
    with pytest.raises(
        extras.MissingExtra, match=r"\(ruff is not installed\); install with: pip install 'ropefix\[fix\]'"
    ):
        formatting.ruff()
    with pytest.raises(extras.MissingExtra, match=r"`ropefix apply` needs the fix extra"), extras.needed_by("apply"):
        formatting.ruff()


def test_other_missing_modules_stay_what_they_are() -> None:
    """Only an absent top-level module of a known extra is a missing extra; anything else is a bug."""
    with pytest.raises(ModuleNotFoundError), extras.needed_by("scan"):
        raise ModuleNotFoundError("No module named 'nosuchthing'", name="nosuchthing")
    with pytest.raises(ModuleNotFoundError), extras.needed_by("verify"):  # installed, a release lacks a model
        raise ModuleNotFoundError("No module named 'transformers.models.nope'", name="transformers.models.nope")


def test_the_version_is_the_installed_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    import ropefix

    installed = importlib.metadata.version("ropefix")
    assert ropefix.__version__ == installed
    with pytest.raises(SystemExit) as stop:
        main.main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"ropefix {installed}"


def test_a_tree_that_was_never_installed_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    import ropefix

    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    monkeypatch.setitem(ropefix.__dict__, "__version__", "cached")  # so teardown puts the real state back
    monkeypatch.delitem(ropefix.__dict__, "__version__")
    assert ropefix.__version__ == ropefix.UNKNOWN_VERSION


def test_a_command_whose_module_needs_its_extra_is_a_stub_that_says_so(tmp_path: Path) -> None:
    """scan's module imports the engine (libcst): without fix it is registered as a stub taking any arguments."""
    done = _without_extras(CLI, "scan", "--versions", "4.49.0", "--json", cwd=tmp_path)
    assert done.returncode == 1 and done.stderr.strip().endswith("pip install 'ropefix[fix]'"), done.stderr
    helped = _without_extras(CLI, "scan", "--help", cwd=tmp_path)
    assert helped.returncode == 0 and "pip install 'ropefix[fix]'" in helped.stdout
    listed = _without_extras(CLI, "--help", cwd=tmp_path)
    assert "scan" in listed.stdout and "(not installed: pip install 'ropefix[fix]')" in listed.stdout
    bogus = _without_extras(CLI, "cache", "dir", "--bogus", cwd=tmp_path)  # a real command still refuses
    assert bogus.returncode == 2 and "unrecognized arguments: --bogus" in bogus.stderr
