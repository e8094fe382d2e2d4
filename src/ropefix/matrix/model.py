"""The validation matrix as values: env specs, cells, the whole matrix. Pure: no I/O here.

A cell is one tox env (one transformers release × one torch release). Its state is the state of the
env's verify ``Report`` (``ropefix.prove.verdict``), or says why there is none (install failed, verify
crashed).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from packaging.version import InvalidVersion, Version

from ropefix.errors import RopefixError
from ropefix.prove import render
from ropefix.prove.verdict import Report, State

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
    status: State
    reason: str = ""  # why a cell is skipped or failed without a verify result; a summary otherwise
    timings: Timings = field(default_factory=Timings)
    result: Report | None = None  # the env's verify report

    @property
    def passed(self) -> bool:
        return self.status.passed()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = self.status.value
        d["result"] = self.result.to_json() if self.result else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Cell:
        return cls(
            env=d["env"],
            transformers=d["transformers"],
            torch=d["torch"],
            status=State(d["status"]),
            reason=d.get("reason", ""),
            timings=Timings(**d.get("timings", {})),
            result=Report.from_json(d["result"], f"the matrix cell {d['env']}") if d.get("result") else None,
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

    def counts(self) -> dict[State, int]:
        return {s: sum(c.status is s for c in self.cells) for s in State}

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


def _release(reported: object, pinned: str) -> str:
    """What verify saw installed when it says (minus a local tag: 2.13.0+cpu is 2.13.0), else the pin."""
    try:
        return str(Version(str(reported)).public)
    except InvalidVersion:
        return pinned


def cell_from_result(spec: EnvSpec, result: dict[str, Any], timings: Timings) -> Cell:
    """The cell for an env whose verify wrote ``result`` (raises BadResult when it is no current verdict)."""
    try:
        report = Report.from_json(result, f"{spec.name}'s verify result")
    except RopefixError as e:
        raise BadResult(str(e).split(". ", 1)[0]) from e
    return Cell(
        env=spec.name,
        # the report says what was really installed; the spec says what was asked for
        transformers=_release(report.release, spec.transformers),
        torch=_release(report.torch, spec.torch),
        status=report.state,
        reason=render.summary(report),
        timings=timings,
        result=report,
    )
