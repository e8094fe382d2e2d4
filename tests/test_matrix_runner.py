"""The runner against real tox with fake envs: ok, install failure, verify crash, bad result, unknowns.

The envs install nothing from an index (a missing package fails offline), so this stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from matrix_fixtures import verify_json

from ropefix.main import main
from ropefix.matrix import runner, toxenv
from ropefix.matrix.model import EnvSpec
from ropefix.prove.verdict import State

FIXED = json.dumps(verify_json(State.REPRODUCED_FIXED, "4.57.6", "2.13.0+cpu"))
LATENT = json.dumps(verify_json(State.LATENT, "5.0.0", "2.13.0+cpu"))


# A stand-in for `ropefix verify --json FILE`: copies a prepared result to where verify writes it.
WRITER = (
    "import os, shutil, sys; shutil.copy(sys.argv[1], os.path.join(os.environ['ROPEFIX_MATRIX_OUT'], sys.argv[2]))"
)


def _writer(tmp_path: Path, name: str, payload: str) -> str:
    (tmp_path / "writer.py").write_text(WRITER)
    (tmp_path / f"{name}.result").write_text(payload)
    return f"python {{tox_root}}{{/}}writer.py {{tox_root}}{{/}}{name}.result {{env_name}}.json"


def fake_tox_ini(tmp_path: Path) -> Path:
    ini = tmp_path / "tox.ini"
    ini.write_text(
        f"""[tox]
labels =
    quick = ok457, latent50, noinstall
    full = ok457, latent50, noinstall, crash, garbage

[testenv]
skip_install = true
set_env = PIP_NO_INDEX = 1
pass_env = ROPEFIX_MATRIX_OUT

[testenv:ok457]
deps =
commands = {_writer(tmp_path, "fixed", FIXED)}

[testenv:latent50]
commands = {_writer(tmp_path, "latent", LATENT)}

[testenv:noinstall]
deps =
    transformers==4.57.6
    torch==2.6.0
    ropefix-no-such-package==9.9.9
commands = python -c "raise SystemExit('must not run')"

[testenv:crash]
commands = python -c "raise SystemExit('Traceback: ModuleNotFoundError: no module named ropefix.prove.verify')"

[testenv:garbage]
commands = {_writer(tmp_path, "garbage", '{"status": "green"}')}
"""
    )
    return ini


@pytest.mark.slow
def test_runner_turns_each_kind_of_env_into_the_right_cell(tmp_path: Path) -> None:
    ini = fake_tox_ini(tmp_path)
    p = runner.plan(ini, ["full", "nightly"], ["ok457", "tf999-torch213"])
    assert p.unknown_labels == ("nightly",) and p.unknown_envs == ("tf999-torch213",)
    assert [s.name for s in p.specs] == ["ok457", "latent50", "noinstall", "crash", "garbage"]
    m = runner.run(p, runner.RunOptions(ini, tmp_path / "out", parallel=2))
    cells = {c.env: c for c in m.cells}
    assert [c.env for c in m.cells] == ["ok457", "latent50", "noinstall", "crash", "garbage", "tf999-torch213"]

    ok = cells["ok457"]
    assert ok.status is State.REPRODUCED_FIXED and ok.passed
    assert (ok.transformers, ok.torch) == ("4.57.6", "2.13.0")  # from the result; the +cpu local tag dropped
    assert ok.result.families[0].family == "qwen2_vl" and "reproduced-fixed: qwen2_vl" in ok.reason
    assert ok.timings.test_s > 0 and ok.timings.total_s >= ok.timings.test_s
    assert cells["latent50"].status is State.LATENT

    skipped = cells["noinstall"]
    assert skipped.status is State.SKIPPED and skipped.passed  # a skip is not a CI failure
    assert "install failed" in skipped.reason and "ropefix-no-such-package" in skipped.reason
    assert (skipped.transformers, skipped.torch) == ("4.57.6", "2.6.0")  # from tox.ini's pins

    crash = cells["crash"]
    assert crash.status is State.FIX_FAILED and not crash.passed
    assert "without writing crash.json" in crash.reason and "ModuleNotFoundError" in crash.reason
    assert cells["garbage"].status is State.FIX_FAILED and "schema" in cells["garbage"].reason
    assert cells["tf999-torch213"].status is State.SKIPPED and "declares no env" in cells["tf999-torch213"].reason
    assert not m.passed

    # the same results, collected as CI jobs would leave them, merge into the same cells
    merged = runner.merge(tmp_path / "out", toxenv.all_specs(ini))
    assert {c.env: c.status for c in merged.cells} == {c.env: c.status for c in m.cells if c.env != "tf999-torch213"}


@pytest.mark.slow
def test_command_writes_reports_and_exit_code_follows_the_cells(tmp_path: Path, monkeypatch) -> None:
    ini = fake_tox_ini(tmp_path)
    out = tmp_path / "out"
    monkeypatch.chdir(tmp_path)
    # quick: fixed + latent + an uninstallable pair -> passes (skips are not failures)
    assert main(["matrix", "--tox-ini", str(ini), "--out", str(out), "--label", "quick", "--label", "nope"]) == 0
    data = json.loads((out / "matrix.json").read_text())
    assert [c["status"] for c in data["cells"]] == ["reproduced-fixed", "latent", "skipped"]
    assert data["unknown_labels"] == ["nope"]
    for name in ("matrix.md", "matrix.svg", "matrix.png", "matrix.junit.xml"):
        assert (out / name).stat().st_size > 0
    # a crashing verify fails the run
    assert main(["matrix", "--tox-ini", str(ini), "--out", str(out), "--envs", "crash"]) == 1
    assert json.loads((out / "matrix.json").read_text())["cells"][0]["status"] == "fix-failed"


def test_bad_input_is_refused_before_anything_runs(tmp_path: Path, capsys) -> None:
    ini = fake_tox_ini(tmp_path)
    assert main(["matrix", "--tox-ini", str(tmp_path / "missing.ini")]) == 1
    assert "No tox.ini" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:  # an argparse error now, before anything runs
        main(["matrix", "--tox-ini", str(ini), "--parallel", "0"])
    assert usage.value.code == 2
    assert main(["matrix", "--tox-ini", str(ini), "--label", "nightly", "--out", str(tmp_path / "o")]) == 1
    assert "Nothing to run" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_interpret_install_failure_names_pips_error() -> None:
    tox_result = {
        "testenvs": {
            "e": {
                "setup": [
                    {
                        "run_id": "install_deps",
                        "retcode": 1,
                        "elapsed": 2.0,
                        "output": "Collecting torch==2.6.0\n",
                        "err": "ERROR: Could not find a version that satisfies the requirement torch==2.6.0\n"
                        "ERROR: No matching distribution found for torch==2.6.0\n",
                    }
                ],
                "result": {"duration": 3.0},
            }
        }
    }
    cell = runner.interpret(EnvSpec("e", "5.24.0", "2.6.0"), 1, tox_result, None, "", 3.0, Path("e.json"))
    assert cell.status is State.SKIPPED
    assert cell.reason == "install failed (install_deps): ERROR: No matching distribution found for torch==2.6.0"
    assert (cell.timings.install_s, cell.timings.create_s, cell.timings.total_s) == (2.0, 1.0, 3.0)


def test_envrun_keeps_verify_json_whole_or_not_at_all(tmp_path: Path, monkeypatch, capsys) -> None:
    import ropefix.main
    from ropefix.matrix import envrun

    seen = []

    def fake_main(argv):  # verify prints its JSON on stdout and exits 1 when a cell fails
        seen.append(argv)
        print(json.dumps(verify_json(State.FIX_FAILED)))
        return 1

    monkeypatch.setattr(ropefix.main, "main", fake_main)
    out = tmp_path / "m" / "e.json"
    assert envrun.main([str(out), "--models", "qwen2_vl"]) == 1
    assert seen == [["verify", "--json", "--models", "qwen2_vl"]]
    assert json.loads(out.read_text())["state"] == "fix-failed"

    monkeypatch.setattr(ropefix.main, "main", lambda argv: print("Traceback ...") or 3)
    out2 = tmp_path / "m" / "crash.json"
    assert envrun.main([str(out2)]) == 3
    assert not out2.exists() and not list(out2.parent.glob("*.part"))


@pytest.mark.slow
@pytest.mark.network
def test_one_real_env_runs_verify_against_its_installed_release(tmp_path: Path, shared_store) -> None:
    # The real tox.ini, the real kit and verify, on the full label's transformers 4.57.6 with the local
    # torch build; verify searches only a little (its depth is tested elsewhere). The env lives in the
    # shared test cache, so only the first run pays for the install.
    repo = Path(__file__).resolve().parents[1]
    name = "tf457-torch213"
    p = runner.plan(repo / "tox.ini", [], [name])
    assert [s.name for s in p.specs] == [name] and p.specs[0].transformers == "4.57.6"
    opts = runner.RunOptions(
        repo / "tox.ini",
        tmp_path / "matrix",
        kit_wheel=runner.build_kit_wheel(repo, tmp_path / "kit"),
        workdir=shared_store.path("results", "matrix-tox"),
        verify_args=("--models", "qwen2_vl", "--max-examples", "2"),
    )
    (cell,) = runner.run(p, opts).cells
    assert cell.result is not None, cell.reason  # verify ran in the env and wrote its JSON
    assert cell.transformers == "4.57.6" and cell.torch == "2.13.0"
    assert [f.family for f in cell.result.families] == ["qwen2_vl"]
    assert cell.status is cell.result.state
    assert cell.timings.test_s > 0 and cell.timings.install_s > 0


@pytest.mark.parametrize(
    ("tail", "line"),
    [
        (
            "ropefix: error: qwen2_5_vl not in transformers 4.45.2\nenvrun: verify printed no JSON (exit 1)\n",
            "ropefix",
        ),
        ("Traceback (most recent call last):\n  File x\nModuleNotFoundError: No module named 'y'\n", "ModuleNotFound"),
        ("Collecting a\nERROR: No matching distribution found for a==1\n", "ERROR: No matching"),
        ("just some output\nlast words\n", "last words"),
    ],
)
def test_error_line_picks_the_cause(tail: str, line: str) -> None:
    assert runner._error_line(tail).startswith(line)


def test_a_family_not_built_is_not_judged_says_why_and_keeps_the_pinned_torch() -> None:
    from ropefix.matrix.model import cell_from_result

    result = verify_json(State.NOT_JUDGED, "4.45.2", "unknown")
    result["families"][0].update(judged_pairs=[], reason="no tiny model could be built: no builder for 'qwen2_vl'")
    cell = cell_from_result(EnvSpec("tf445-torch213", "4.45.2", "2.13.0"), result, runner.Timings())
    assert (cell.status, cell.transformers, cell.torch) == (State.NOT_JUDGED, "4.45.2", "2.13.0")
    assert "not-judged: qwen2_vl" in cell.reason and not cell.passed
