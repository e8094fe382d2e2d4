"""The command line refuses nonsense before any work starts, and the commands it suggests can be pasted."""

from __future__ import annotations

import pytest

from ropefix.main import build_parser


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
