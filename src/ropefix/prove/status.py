"""Outcome values shared by verify, the matrix, the report and the PR body.

A cell of the validation matrix (one transformers release × one torch release) ends in one of
these. They are plain values: the CLI, JSON, Markdown, SVG/PNG and JUnit renderers read them.
"""

from __future__ import annotations

import enum


class Status(str, enum.Enum):
    REPRODUCED_FIXED = "reproduced-fixed"  # red unpatched, green patched: the fix is proven here
    REPRODUCED_OTHER_HAZARDS = "reproduced-other-hazards"  # red unpatched; patched still fails elsewhere
    LATENT = "latent"  # the bad pattern is in the code, but no layout the suite tried reproduces it
    NOT_AFFECTED = "not-affected"  # no affected site, nothing reproduces
    FIX_FAILED = "fix-failed"  # the patched tree fails at a site a rule claims to cover, or apply failed
    SKIPPED = "skipped"  # could not run (e.g. the pair cannot be installed together); reason given

    @property
    def passed(self) -> bool:
        """Whether this outcome is a success for CI (skips are not failures)."""
        return self in (Status.REPRODUCED_FIXED, Status.LATENT, Status.NOT_AFFECTED, Status.SKIPPED)


# One colour per status, used by every picture (colour-blind safe where possible).
COLOURS: dict[Status, str] = {
    Status.REPRODUCED_FIXED: "#1a9850",
    Status.REPRODUCED_OTHER_HAZARDS: "#fdae61",
    Status.LATENT: "#91bfdb",
    Status.NOT_AFFECTED: "#e0e0e0",
    Status.FIX_FAILED: "#d73027",
    Status.SKIPPED: "#ffffff",
}
