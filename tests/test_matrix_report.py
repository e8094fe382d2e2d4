"""The matrix's reports rendered from fixture results: table, picture colours, JUnit, JSON round trip."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from matrix_fixtures import sample_matrix, verify_json

from ropefix.matrix import report
from ropefix.matrix.model import Matrix
from ropefix.prove.render import COLOURS
from ropefix.prove.verdict import State

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Matrix, Path]:
    out = tmp_path_factory.mktemp("report")
    m = sample_matrix()
    report.write_all(m, out)
    return m, out


def test_all_five_reports_are_written_and_non_empty(written: tuple[Matrix, Path]) -> None:
    _, out = written
    for name in report.FILES:
        assert (out / name).stat().st_size > 200, name
    assert not list(out.glob("*.part")), "temporary files must not survive"


def test_markdown_table_is_release_by_torch_in_version_order() -> None:
    m = sample_matrix()
    md = report.render_md(m)
    lines = md.splitlines()
    assert lines[0] == "| transformers \\ torch | 2.6.0 | 2.13.0 |"  # 2.6 before 2.13: version, not string order
    rows = [line for line in lines[2:5]]
    assert [r.split("|")[1].strip() for r in rows] == ["4.49.0", "4.57.6", "5.24.0"]
    assert "reproduced-fixed" in rows[0].split("|")[2] and "not-judged" in rows[0].split("|")[3]
    assert "fix-failed" in rows[1].split("|")[3]
    assert "skipped" in rows[2].split("|")[2]
    assert "**FAIL**" in md  # one fix-failed cell fails the matrix
    assert "Unknown labels (tox.ini has no env under them): nightly." in md
    assert "No matching distribution found for torch==2.6.0" in md  # the skip's reason is shown
    # provenance: when, which label, which kit the envs ran (the verdicts' kit)
    assert f"Generated {m.generated} (label full) by ropefix 0.0.0." in md


def test_svg_cells_have_their_status_colour(written: tuple[Matrix, Path]) -> None:
    m, out = written
    root = ET.parse(out / "matrix.svg").getroot()
    groups = {g.get("id"): g for g in root.iter(f"{SVG}g") if g.get("id", "").startswith("cell-")}
    assert set(groups) == {report.cell_gid(c.env) for c in m.cells}
    for c in m.cells:
        path = groups[report.cell_gid(c.env)].find(f"{SVG}path")
        fill = re.search(r"fill:\s*(#[0-9a-fA-F]{6})", path.get("style", ""))
        assert fill and fill.group(1).lower() == COLOURS[c.status], c.env


def test_png_shows_every_status_colour(written: tuple[Matrix, Path]) -> None:
    import matplotlib.image

    img = matplotlib.image.imread(out_png := written[1] / "matrix.png")
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = {tuple(round(float(v) * 255) for v in px[:3]) for px in img.reshape(-1, img.shape[-1])}
    for status in State:
        rgb = tuple(int(COLOURS[status][i : i + 2], 16) for i in (1, 3, 5))
        assert rgb in pixels, status


def test_picture_of_a_single_cell_has_only_that_cells_colour(tmp_path: Path) -> None:
    m = sample_matrix()
    one = Matrix(cells=(m.cells[0],))
    report.draw(one, tmp_path / "m.svg", tmp_path / "m.png")
    svg = (tmp_path / "m.svg").read_text()
    cells = re.findall(r'<g id="cell-[^"]+">\s*<path[^>]*style="[^"]*fill:\s*(#[0-9a-f]{6})', svg)
    assert cells == [COLOURS[State.REPRODUCED_FIXED]]


def test_junit_is_valid_and_says_which_cells_fail(written: tuple[Matrix, Path]) -> None:
    m, out = written
    root = ET.parse(out / "matrix.junit.xml").getroot()
    suite = root.find("testsuite")
    assert suite.get("tests") == str(len(m.cells))
    cases = suite.findall("testcase")
    assert len(cases) == len(m.cells)
    by_env = {c.get("name").split(" ")[0]: c for c in cases}
    for cell in m.cells:
        case = by_env[cell.env]
        assert (case.find("skipped") is not None) == (cell.status is State.SKIPPED)
        assert (case.find("failure") is not None) == (not cell.passed and cell.status is not State.SKIPPED)
    failing = {c.env for c in m.cells if not c.passed}
    assert failing == {"tf449-torch213", "tf457-torch213"}  # not judged and fix failed
    assert suite.get("failures") == "2" and suite.get("skipped") == "1"


def test_json_round_trips(written: tuple[Matrix, Path]) -> None:
    m, out = written
    data = json.loads((out / "matrix.json").read_text())
    back = Matrix.from_dict(data)
    assert back.cells == m.cells
    assert data["passed"] is False and data["counts"]["skipped"] == 1
    assert data["unknown_labels"] == ["nightly"]


def test_a_cell_says_what_its_verdict_says() -> None:
    from ropefix.matrix.model import EnvSpec, Timings, cell_from_result

    cell = cell_from_result(EnvSpec("e", "4.57.6", "2.13.0"), verify_json(State.LATENT), Timings())
    assert cell.status is State.LATENT and cell.reason == "latent: qwen2_vl"
    assert cell.result is not None and cell.result.families[0].judged == 4
