"""The package as users get it: ``python -m build`` makes a wheel and an sdist that ``twine check``
accepts; the wheel goes into a fresh virtualenv, core first (the hotfix, the simulator and the
pytest plugin work, the kit's libraries are absent, a command names the extra to install), then
``[all]`` (one command of each extra runs).

One build and one virtualenv (core first, then [all] on top): about 2-3 minutes on 2 cores, most of
it installing torch (the local CPU wheel, pinned) and [all]'s libraries.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from ropefix.prove.verdict import State

pytestmark = [pytest.mark.slow, pytest.mark.network]

REPO = Path(__file__).resolve().parents[1]
TORCH = "torch==2.13.0"  # the local CPU build; an unpinned torch would be a multi-GB CUDA download
KIT = ("tox", "ruff", "matplotlib", "libcst", "GitPython", "hypothesis", "transformers", "PyYAML", "accelerate")


def _run(*cmd: object, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(c) for c in cmd],
        cwd=cwd,
        env={**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, **(env or {})},  # the venv's own ropefix
        check=False,
        capture_output=True,
        text=True,
        timeout=900,
    )


def _ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, f"{done.args}: exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sdist, and the wheel built from it (so the sdist is proven complete enough to build)."""
    out = tmp_path_factory.mktemp("dist")
    _ok(_run(sys.executable, "-m", "build", "--outdir", out, REPO))
    (wheel,) = out.glob("ropefix-*.whl")
    (sdist,) = out.glob("ropefix-*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


def test_the_distributions_pass_twine_and_hold_what_they_should(dists: dict[str, Path]) -> None:
    print(_ok(_run(sys.executable, "-m", "twine", "check", "--strict", dists["wheel"], dists["sdist"])))
    with zipfile.ZipFile(dists["wheel"]) as whl:
        names = whl.namelist()
        meta = whl.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {"ropefix"}
    assert not [n for n in names if "/patches/" in n or n.startswith(("tests/", "patches/"))]
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "ropefix/data/verdicts/transformers-4.49.0.json" in names  # the committed verdicts backport reads
    assert "License-Expression: Apache-2.0" in meta and "Requires-Dist: torch>=2.4" in meta
    assert 'Requires-Dist: libcst>=1.1; extra == "fix"' in meta
    with tarfile.open(dists["sdist"]) as sdist:
        top = {m.name.split("/", 1)[1] for m in sdist.getmembers() if "/" in m.name}
    # what the tests, the matrix and the build need travels with the source
    for needed in ("LICENSE", "CHANGELOG.md", "pyproject.toml", "tox.ini", "patches/index.json", "tests/conftest.py"):
        assert needed in top, needed
    assert "src/ropefix/extras.py" in top and "tests/snippets/store_then_add.py" in top


def test_a_tree_without_git_metadata_still_builds(tmp_path: Path) -> None:
    """A clone without tags gets 0.1.devN+g<hash> from git; an exported tree has no git at all, and
    setuptools-scm's fallback version applies instead of a failed build."""
    tree = tmp_path / "export"
    shutil.copytree(REPO / "src", tree / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, tree / name)
    _ok(_run(sys.executable, "-m", "build", "--sdist", "--outdir", tmp_path / "out", tree))
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["ropefix-0.1.0.dev0.tar.gz"]


def _site(venv: Path) -> Path:
    return next((venv / "lib").glob("python*/site-packages"))


def _installed(venv: Path) -> set[str]:
    return {p.name.split("-")[0].lower() for p in _site(venv).glob("*.dist-info")}


def _pip(venv: Path, *args: object) -> str:
    # this interpreter's pip drives the venv (no pip inside it); no bytecode: torch compiles for a minute
    return _ok(
        _run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "-q", "--no-compile", *args)
    )


def test_core_then_all_in_one_fresh_virtualenv(dists: dict[str, Path], tmp_path: Path) -> None:
    venv, py, cli = tmp_path / "venv", tmp_path / "venv" / "bin" / "python", tmp_path / "venv" / "bin" / "ropefix"
    env = {"ROPEFIX_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    _ok(_run(sys.executable, "-m", "venv", "--without-pip", venv))
    _pip(venv, TORCH)
    _pip(venv, dists["wheel"])

    core_mb = _size_mb(venv)

    # --- the core: nothing of the kit is there; the plugin, the simulator and the hotfix work
    assert not _installed(venv) & {k.lower() for k in KIT}, _installed(venv)
    version = _ok(_run(cli, "--version", env=env)).strip()
    assert version.startswith("ropefix ") and version.split()[1] in dists["wheel"].name
    missing = _run(cli, "scan", REPO, env=env)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert missing.stderr.strip() == (
        "ropefix: error: `ropefix scan` needs the fix extra (libcst is not installed); "
        "install with: pip install 'ropefix[fix]'"
    )
    _pip(venv, "pytest")  # a project of the plugin's audience: its own tests, ropefix's core
    (tmp_path / "proj").mkdir()
    shutil.copy(REPO / "tests" / "lean_probe.py", tmp_path / "proj" / "test_lean.py")
    ran = _ok(_run(py, "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=tmp_path / "proj", env=env))
    assert "2 passed" in ran, ran

    # --- [all]: every command's libraries; one command of each extra
    _pip(venv, f"{dists['wheel']}[all]")
    assert {k.lower() for k in KIT} <= _installed(venv)
    tree = _upstream(tmp_path / "upstream")
    out = _ok(
        _run(cli, "checkout", "4.49.0", "--source", "git", "--repo", tree, "--into", tmp_path / "co", env=env)
    )  # ship: GitPython
    assert out.split("\t")[:4] == ["4.49.0", "git", "v4.49.0", "ropefix/v4.49.0"]
    assert _run(cli, "apply", tmp_path / "co", "--check", env=env).returncode == 1  # fix: libcst, ruff
    _ok(_run(cli, "apply", tmp_path / "co", env=env))
    fixed = (tmp_path / "co" / MODEL_FILE).read_text()
    assert "rope_deltas.to(cache_position.device)" in fixed
    _ok(_run(cli, "apply", tmp_path / "co", "--check", env=env))
    workflow = tmp_path / "wf.yml"  # matrix: tox, PyYAML
    _ok(_run(cli, "matrix", "--tox-ini", REPO / "tox.ini", "--emit-gha", workflow, env=env))
    assert "tf449-torch213" in workflow.read_text()
    verdict = _run(cli, "verify", "--models", "qwen2_vl", "--max-examples", "1", "--json", "--no-save", env=env)
    report = json.loads(verdict.stdout)  # prove: the suite ran on the installed transformers
    (family,) = report["families"]
    assert family["family"] == "qwen2_vl" and family["examples_run"] > 0, verdict.stderr
    assert report["kit"] == version.split()[1]  # the report names the kit by its installed version
    assert verdict.returncode == (0 if State(family["state"]).passed() else 1), family
    print(f"installed: core {core_mb} MB, with [all] {_size_mb(venv)} MB")


def _size_mb(venv: Path) -> int:
    return sum(p.stat().st_size for p in venv.rglob("*") if p.is_file() and not p.is_symlink()) // 2**20


MODEL_FILE = "src/transformers/models/alpha_vl/modeling_alpha_vl.py"


def _upstream(where: Path) -> Path:
    """A transformers-shaped git repository with one affected model file, tagged v4.49.0."""
    (where / MODEL_FILE).parent.mkdir(parents=True)
    (where / "src/transformers/__init__.py").write_text("")
    shutil.copy(REPO / "tests/snippets/store_then_add.py", where / MODEL_FILE)
    git = ["git", "-C", where, "-c", "user.name=t", "-c", "user.email=t@t"]
    _ok(_run("git", "init", "-q", where))
    _ok(_run(*git, "add", "-A"))
    _ok(_run(*git, "commit", "-q", "-m", "release"))
    _ok(_run(*git, "tag", "v4.49.0"))
    return where
