"""Verify JSON results as the verify engineer's schema fixes them, for the matrix tests."""

from __future__ import annotations

from typing import Any

from ropefix.matrix.model import Cell, Matrix, Timings
from ropefix.prove.status import Status


def verify_json(
    status: Status,
    transformers: str = "4.57.6",
    torch: str = "2.13.0+cpu",
    reproduced: bool = True,
    hazards: tuple[str, ...] = (),
) -> dict[str, Any]:
    return {
        "transformers": transformers,
        "torch": torch,
        "status": status.value,
        "models": [
            {
                "model": "qwen2_vl",
                "rules": [
                    {
                        "rule": "rope-deltas",
                        "pattern_present": True,
                        "reproduced": reproduced,
                        "failing_layout": {"model.embed_tokens": 0, "lm_head": 1} if reproduced else None,
                        "failure_site": "modeling_qwen2_vl.py:1214" if reproduced else None,
                        "fixed": True if reproduced else None,
                    }
                ],
                "other_findings": [
                    {"hazard": h, "site": "modeling_qwen2_vl.py:900", "example": "layout {...}"} for h in hazards
                ],
                "examples_run": 12,
            }
        ],
        "duration_s": 3.5,
    }


def sample_matrix() -> Matrix:
    """One cell of every status over 3 transformers × 2 torch releases (one pair missing)."""
    grid = [
        ("4.49.0", "2.6.0", Status.REPRODUCED_FIXED),
        ("4.49.0", "2.13.0", Status.REPRODUCED_OTHER_HAZARDS),
        ("4.57.6", "2.6.0", Status.LATENT),
        ("4.57.6", "2.13.0", Status.FIX_FAILED),
        ("5.24.0", "2.6.0", Status.SKIPPED),
        ("5.24.0", "2.13.0", Status.NOT_AFFECTED),
    ]
    cells = []
    for tf, torch, status in grid:
        env = f"tf{tf.replace('.', '')[:3]}-torch{torch.replace('.', '')[:3]}"
        reason = (
            "install failed: ERROR: No matching distribution found for torch==2.6.0"
            if status is Status.SKIPPED
            else "x"
        )
        result = None if status is Status.SKIPPED else verify_json(status, tf, torch)
        cells.append(Cell(env, tf, torch, status, reason, Timings(1.0, 20.0, 5.0, 26.0), result))
    return Matrix(cells=tuple(cells), labels=("full",), unknown_labels=("nightly",), duration_s=60.0)
