"""The validation matrix as values: env specs, cells, the whole matrix. Pure: no I/O here.

A cell is one tox env (one transformers release × one torch release). Its status comes from the
env's ``ropefix verify --json`` result, or says why there is none (install failed, verify crashed).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from packaging.version import InvalidVersion, Version

from ropefix.prove.status import Status

UNKNOWN = "?"


@dataclass(frozen=True)
class EnvSpec:
    """A tox env of the matrix and the releases its deps pin (``?`` when it pins none)."""

    name: str
    transformers: str = UNKNOWN
    torch: str = UNKNOWN


@dataclass(frozen=True)
class Timings:
    """Seconds spent in one env: making the virtualenv, installing into it, running verify."""

    create_s: float = 0.0
    install_s: float = 0.0
    test_s: float = 0.0
    total_s: float = 0.0


@dataclass(frozen=True)
class Cell:
    env: str
    transformers: str
    torch: str
    status: Status
    reason: str = ""  # why a cell is skipped or failed without a verify result; a summary otherwise
    timings: Timings = field(default_factory=Timings)
    result: dict[str, Any] | None = None  # the env's verify JSON, as written

    @property
    def passed(self) -> bool:
        return self.status.passed

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = self.status.value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Cell:
        return cls(
            env=d["env"],
            transformers=d["transformers"],
            torch=d["torch"],
            status=Status(d["status"]),
            reason=d.get("reason", ""),
            timings=Timings(**d.get("timings", {})),
            result=d.get("result"),
        )


@dataclass(frozen=True)
class Matrix:
    cells: tuple[Cell, ...]
    labels: tuple[str, ...] = ()
    unknown_labels: tuple[str, ...] = ()  # asked for, but tox.ini declares no env under them
    duration_s: float = 0.0
    generated: str = field(
        default_factory=lambda: datetime.datetime.now(datetime.timezone.utc).isoformat("T", "seconds")
    )

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.cells)

    def rows(self) -> list[str]:
        """transformers releases, oldest first (version order, not string order)."""
        return _version_order(c.transformers for c in self.cells)

    def cols(self) -> list[str]:
        return _version_order(c.torch for c in self.cells)

    def cell(self, transformers: str, torch: str) -> Cell | None:
        for c in self.cells:
            if c.transformers == transformers and c.torch == torch:
                return c
        return None

    def counts(self) -> dict[Status, int]:
        return {s: sum(c.status is s for c in self.cells) for s in Status}

    def to_dict(self) -> dict[str, Any]:
        return {
            "generated": self.generated,
            "labels": list(self.labels),
            "unknown_labels": list(self.unknown_labels),
            "duration_s": round(self.duration_s, 3),
            "passed": self.passed,
            "counts": {s.value: n for s, n in self.counts().items()},
            "cells": [c.to_dict() for c in self.cells],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Matrix:
        return cls(
            cells=tuple(Cell.from_dict(c) for c in d["cells"]),
            labels=tuple(d.get("labels", ())),
            unknown_labels=tuple(d.get("unknown_labels", ())),
            duration_s=float(d.get("duration_s", 0.0)),
            generated=d.get("generated", ""),
        )


def _version_order(versions: Iterable[str]) -> list[str]:
    def key(v: str) -> tuple[int, Version | str]:
        try:
            return (0, Version(v))
        except InvalidVersion:
            return (1, v)  # "?" and other unparsable names go last

    return sorted(set(versions), key=key)


class BadResult(ValueError):
    """A verify JSON that does not follow the schema (the env's verify is broken or too old)."""


def summarize(result: dict[str, Any]) -> str:
    """One short line for a cell: which models reproduced and where other hazards remain."""
    models = result.get("models") or []
    reproduced = sorted({m["model"] for m in models if any(r.get("reproduced") for r in m.get("rules", []))})
    latent = sorted(
        {
            m["model"]
            for m in models
            if m["model"] not in reproduced and any(r.get("pattern_present") for r in m.get("rules", []))
        }
    )
    hazards = sorted({f["hazard"] for m in models for f in m.get("other_findings", [])})
    skipped = [
        f"{m['model']} skipped ({(m.get('notes') or ['no reason given'])[0]})"
        for m in models
        if m.get("status") == "skipped"
    ]
    parts = skipped
    if reproduced:
        parts.append("reproduced: " + ", ".join(reproduced))
    if latent:
        parts.append("latent: " + ", ".join(latent))
    if hazards:
        parts.append("other hazards: " + ", ".join(hazards))
    return "; ".join(parts) or "checked: " + (", ".join(m["model"] for m in models) or "no models")


def _release(reported: object, pinned: str) -> str:
    """What verify saw installed when it says (minus a local tag: 2.13.0+cpu is 2.13.0), else the pin."""
    try:
        return str(Version(str(reported)).public)
    except InvalidVersion:
        return pinned


def cell_from_result(spec: EnvSpec, result: dict[str, Any], timings: Timings) -> Cell:
    """The cell for an env whose verify wrote ``result`` (raises BadResult when it is malformed)."""
    try:
        status = Status(result["status"])
        models = result["models"]
        if not isinstance(models, list) or not all(isinstance(m, dict) and "model" in m for m in models):
            raise BadResult("'models' must be a list of objects with a 'model' name")
    except (KeyError, ValueError, TypeError) as e:
        raise BadResult(f"verify result does not follow the schema: {e}") from e
    return Cell(
        env=spec.name,
        # the result says what was really installed; the spec says what was asked for
        transformers=_release(result.get("transformers"), spec.transformers),
        torch=_release(result.get("torch"), spec.torch),
        status=status,
        reason=summarize(result),
        timings=timings,
        result=result,
    )
