"""Verify results (verdict reports, as JSON) and a sample matrix, for the matrix tests."""

from __future__ import annotations

from typing import Any

from verdict_fixtures import report

from ropefix.matrix.model import Cell, Matrix, Timings
from ropefix.prove.verdict import Report, State


def verify_json(
    state: State, transformers: str = "4.57.6", torch: str = "2.13.0+cpu", hazards: tuple[str, ...] = ()
) -> dict[str, Any]:
    return report(state, transformers, torch, hazards).to_json()


def sample_matrix() -> Matrix:
    """One cell of every state over 3 transformers × 2 torch releases."""
    grid = [
        ("4.49.0", "2.6.0", State.REPRODUCED_FIXED),
        ("4.49.0", "2.13.0", State.NOT_JUDGED),
        ("4.57.6", "2.6.0", State.LATENT),
        ("4.57.6", "2.13.0", State.FIX_FAILED),
        ("5.24.0", "2.6.0", State.SKIPPED),
        ("5.24.0", "2.13.0", State.NOT_AFFECTED),
    ]
    cells = []
    for tf, torch, state in grid:
        env = f"tf{tf.replace('.', '')[:3]}-torch{torch.replace('.', '')[:3]}"
        reason = (
            "install failed: ERROR: No matching distribution found for torch==2.6.0" if state is State.SKIPPED else "x"
        )
        result = None if state is State.SKIPPED else Report.from_json(verify_json(state, tf, torch))
        cells.append(Cell(env, tf, torch, state, reason, Timings(1.0, 20.0, 5.0, 26.0), result))
    return Matrix(cells=tuple(cells), labels=("full",), unknown_labels=("nightly",), duration_s=60.0)
