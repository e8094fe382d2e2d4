"""The command line refuses nonsense before any work starts, and the commands it suggests can be pasted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import verdict_fixtures
from test_engine import make_tree
from upstream import FakeIndex, sdist_bytes

from ropefix.main import build_parser, main
from ropefix.prove import verdicts
from ropefix.prove.verdict import Report, State
from ropefix.releases import index


@pytest.mark.parametrize(
    "argv, option",
    [
        (["verify", "--max-examples", "-5"], "--max-examples"),
        (["verify", "--max-examples", "0"], "--max-examples"),
        (["run", "--max-examples", "0"], "--max-examples"),
        (["matrix", "--parallel", "0"], "--parallel"),
        (["matrix", "--timeout", "-1"], "--timeout"),
        (["matrix", "--timeout", "nan"], "--timeout"),
        (["verify", "--profile", "fast"], "--profile"),
    ],
)
def test_nonsense_numbers_are_argparse_errors(argv: list[str], option: str, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert option in err and "error:" in err


def test_the_suite_worker_refuses_a_non_positive_example_count(capsys) -> None:
    from ropefix.prove import suite

    with pytest.raises(SystemExit) as e:
        suite.main(["--model", "qwen2_vl", "--max-examples", "0"])
    assert e.value.code == 2 and "--max-examples" in capsys.readouterr().err


def test_a_models_list_that_names_nothing_is_refused(tmp_path: Path, capsys) -> None:
    root = make_tree(tmp_path)
    for argv in (["scan", str(root), "--models", ",,,"], ["apply", "--dry-run", str(root), "--models", " , "]):
        assert main(argv) == 1
        assert "names nothing" in capsys.readouterr().err
    assert main(["apply", "--dry-run", str(root), "--rules", ","]) == 1


def test_suggested_commands_are_shell_quoted(tmp_path: Path, capsys) -> None:
    root = make_tree(tmp_path / "my trees; rm -rf ~")
    assert main(["apply", "--check", str(root), "--models", "alpha_vl"]) == 1
    err = capsys.readouterr().err
    assert f"ropefix apply '{root}' --models alpha_vl" in err
    assert main(["scan", str(root)]) == 0
    assert f"ropefix apply '{root}'" in capsys.readouterr().out


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeIndex]:
    server = FakeIndex({v: sdist_bytes(v) for v in ("1.0.0", "1.0.1", "1.1.0")})
    monkeypatch.setenv(index.ENV_VAR, server.url)
    yield server
    server.stop()


def test_backport_takes_exact_releases_only(fake: FakeIndex, tmp_path: Path, monkeypatch, capsys) -> None:
    def proven(release: str, store: object = None) -> Report | None:  # as verify would judge: qwen2_vl proven
        known = release in ("1.0.0", "1.0.1", "1.1.0")
        return verdict_fixtures.report(State.REPRODUCED_FIXED, release=release) if known else None

    monkeypatch.setattr(verdicts, "lookup", proven)
    monkeypatch.chdir(tmp_path)
    assert main(["backport", "--to", "1.0"]) == 1
    err = capsys.readouterr().err
    assert "1.0 is not an exact release" in err and "1.0.0, 1.0.1" in err and "1.1.0" not in err
    assert list(tmp_path.iterdir()) == []  # nothing written, in the current folder least of all
    assert main(["backport", "--to", "v1.0.1"]) == 0  # the tag spelling is accepted
    assert "+++ b/src/transformers/models/qwen2_vl/modeling_qwen2_vl.py" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []  # without --out the patch goes to stdout
    assert main(["backport", "--to", "1.0.1", "--out", "p"]) == 0
    assert [p.name for p in (tmp_path / "p").iterdir()] == ["transformers-1.0.1.patch"]
