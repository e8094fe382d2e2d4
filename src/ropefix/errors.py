"""The two kinds of failure: expected ones (a short message, exit 1) and bugs (a log for a report)."""

from __future__ import annotations


class RopefixError(Exception):
    """An expected failure: bad input, an unreachable index, a dirty tree.

    The message is one paragraph that says what was wrong and what to do next;
    ``main`` prints it and exits with status 1. Nothing is left half-done when it is raised.
    """

    exit_code = 1
