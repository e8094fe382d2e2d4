"""Render a Matrix: matrix.json, matrix.md (the table a PR body embeds), matrix.svg/png (the
release × torch grid, one colour per status, a legend) and matrix.junit.xml for CI systems.

The ``render_*`` functions are pure; ``write_all`` is the one place files are written, each to a
temporary file first so no half-written report survives.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from ropefix.files import atomic_open, atomic_write
from ropefix.matrix.model import Matrix
from ropefix.prove.render import COLOURS, LABELS, MARKS
from ropefix.prove.verdict import State

FILES = ("matrix.json", "matrix.md", "matrix.svg", "matrix.png", "matrix.junit.xml")


def render_json(m: Matrix) -> str:
    return json.dumps(m.to_dict(), indent=2, sort_keys=False) + "\n"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_md(m: Matrix) -> str:
    """A transformers × torch table, then one line per cell with its reason and timings."""
    cols = m.cols()
    out = ["| transformers \\ torch | " + " | ".join(cols) + " |", "| --- |" + " --- |" * len(cols)]
    for row in m.rows():
        cells = []
        for col in cols:
            c = m.cell(row, col)
            cells.append(f"{MARKS[c.status]} {c.status.value}" if c else "")
        out.append(f"| {row} | " + " | ".join(cells) + " |")
    counts = "; ".join(f"{n} {LABELS[s]}" for s, n in m.counts().items() if n)
    out += ["", f"**{'PASS' if m.passed else 'FAIL'}**: {len(m.cells)} envs ({counts}) in {m.duration_s:.0f}s."]
    if m.unknown_labels:
        out.append(f"Unknown labels (tox.ini has no env under them): {', '.join(m.unknown_labels)}.")
    kits = sorted({c.result.kit for c in m.cells if c.result is not None})
    labels = ", ".join(m.labels) or "the envs named"
    out.append(f"Generated {m.generated} (label {labels}) by ropefix {', '.join(kits) or 'unknown'}.")
    out += ["", "<details><summary>per env</summary>", ""]
    out += ["| env | transformers | torch | status | details | create s | install s | test s |"]
    out += ["| --- | --- | --- | --- | --- | ---: | ---: | ---: |"]
    for c in m.cells:
        t = c.timings
        out.append(
            f"| {c.env} | {c.transformers} | {c.torch} | {c.status.value} | {_md_escape(c.reason)} "
            f"| {t.create_s:.1f} | {t.install_s:.1f} | {t.test_s:.1f} |"
        )
    out += ["", "</details>", "", "Legend: " + "; ".join(f"{MARKS[s]} {s.value}: {LABELS[s]}" for s in State)]
    return "\n".join(out) + "\n"


def render_junit(m: Matrix) -> str:
    """One testcase per env; failures for cells that do not pass, <skipped> with the reason."""
    suite = ET.Element(
        "testsuite",
        name="ropefix-matrix",
        tests=str(len(m.cells)),
        failures=str(sum(not c.passed for c in m.cells)),
        errors="0",
        skipped=str(sum(c.status is State.SKIPPED for c in m.cells)),
        time=f"{m.duration_s:.3f}",
        timestamp=m.generated,
    )
    for c in m.cells:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"matrix.transformers-{c.transformers}",
            name=f"{c.env} (transformers {c.transformers}, torch {c.torch})",
            time=f"{c.timings.total_s:.3f}",
        )
        if c.status is State.SKIPPED:
            ET.SubElement(case, "skipped", message=c.reason)
        elif not c.passed:
            fail = ET.SubElement(case, "failure", message=f"{c.status.value}: {c.reason}", type=c.status.value)
            fail.text = c.result.dumps() if c.result else c.reason
        ET.SubElement(case, "system-out").text = f"status: {c.status.value}\n{c.reason}"
    root = ET.Element("testsuites", name="ropefix matrix")
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def cell_gid(env: str) -> str:
    """The SVG id of an env's cell (tests and tools find a cell's colour by it)."""
    return f"cell-{env}"


@dataclass(frozen=True)
class GridCell:
    state: State
    label: str = ""  # text inside the square (empty: none)
    gid: str = ""  # SVG id, so tests and tools find a cell's colour


def draw(m: Matrix, svg: Path, png: Path) -> None:
    """The release × torch grid, one colour per status, a legend with every status."""
    rows, cols = m.rows(), m.cols()
    cells = {
        (row, col): GridCell(c.status, c.status.value, cell_gid(c.env))
        for row in rows
        for col in cols
        if (c := m.cell(row, col)) is not None
    }
    title = f"ropefix matrix: {'PASS' if m.passed else 'FAIL'} ({len(m.cells)} envs)"
    size = (2.2 + 1.6 * len(cols) + 3.2, 1.2 + 0.45 * max(1, len(rows)))
    labels = ([f"transformers {r}" for r in rows], [f"torch {c}" for c in cols])
    _draw(rows, cols, cells, labels, title, size, list(State), svg, png)


def draw_grid(
    rows: list[str], cols: list[str], states: dict[tuple[str, str], State], title: str, svg: Path, png: Path
) -> None:
    """Any rows x columns grid of verdict states (the sweep's release x family picture), one colour per state."""
    cells = {k: GridCell(s) for k, s in states.items()}
    size = (2.2 + 0.55 * len(cols) + 3.2, 1.2 + 0.28 * max(1, len(rows)))
    used = [s for s in State if s in set(states.values())]
    _draw(rows, cols, cells, (rows, cols), title, size, used, svg, png, small=True)


def _draw(
    rows: list[str],
    cols: list[str],
    cells: dict[tuple[str, str], GridCell],
    labels: tuple[list[str], list[str]],
    title: str,
    size: tuple[float, float],
    legend: list[State],
    svg: Path,
    png: Path,
    small: bool = False,
) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on CI machines
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Rectangle

    fig, ax = plt.subplots(figsize=size)
    for y, row in enumerate(rows):
        for x, col in enumerate(cols):
            c = cells.get((row, col))
            if c is None:
                continue
            rect = Rectangle((x, y), 1, 1, facecolor=COLOURS[c.state], edgecolor="#444444", linewidth=0.8)
            if c.gid:
                rect.set_gid(c.gid)
            ax.add_patch(rect)
            if c.label:
                dark = c.state in (State.REPRODUCED_FIXED, State.FIX_FAILED, State.NOT_JUDGED)
                colour = "white" if dark else "#222222"
                ax.text(x + 0.5, y + 0.5, c.label, ha="center", va="center", fontsize=7, color=colour)
    ax.set_xlim(0, max(1, len(cols)))
    ax.set_ylim(max(1, len(rows)), 0)  # oldest release on top, as in the table
    font = 7 if small else None
    ax.set_xticks([x + 0.5 for x in range(len(cols))], labels[1], rotation=60 if small else 0, fontsize=font)
    ax.set_yticks([y + 0.5 for y in range(len(rows))], labels[0], fontsize=font)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(title, fontsize=9 if small else None)
    handles = [Patch(facecolor=COLOURS[s], edgecolor="#444444", label=LABELS[s]) for s in legend]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize=7 if small else 8)
    fig.tight_layout()
    with atomic_open(svg) as fh:
        fig.savefig(fh, format="svg")
    with atomic_open(png) as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)


def write_all(m: Matrix, out_dir: Path) -> list[Path]:
    """Write the five reports into ``out_dir``; returns their paths."""
    paths = [out_dir / name for name in FILES]
    for path, text in ((paths[0], render_json(m)), (paths[1], render_md(m)), (paths[4], render_junit(m))):
        atomic_write(path, text)
    draw(m, paths[2], paths[3])
    return paths
