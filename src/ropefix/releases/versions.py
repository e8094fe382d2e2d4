"""Turn what a user types (``4.49.0``, ``latest``, ``4.49-4.57``, ``>=4.50,<4.52``) into releases.

Pure: the caller passes the releases that exist (from the index or from git tags).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from ropefix.errors import RopefixError

LATEST = "latest"
# ``4.49-4.57``, ``4.49.0-4.57.6``, ``4.45-latest``: both ends are versions (or ``latest``).
_RANGE = re.compile(r"^\s*(?P<lo>\d+(?:\.\d+){0,2})\s*-\s*(?P<hi>\d+(?:\.\d+){0,2}|latest)\s*$")
_SPEC_START = ("<", ">", "=", "!", "~")


def parse(text: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion as e:
        raise RopefixError(
            f"{text!r} is not a version. Use a release such as 4.49.0, 'latest', a range such as "
            "4.49-4.57 (the latest patch of each minor in that span) or a PEP 440 specifier such as '>=4.50,<4.52'."
        ) from e


def sort(versions: Iterable[str]) -> list[str]:
    """Releases in version order (not string order: 4.9 < 4.10); unparsable names are dropped."""
    parsed = []
    for v in set(versions):
        try:
            parsed.append((Version(v), v))
        except InvalidVersion:
            continue
    return [v for _, v in sorted(parsed)]


def stable(versions: Iterable[str]) -> list[str]:
    """Final releases only (no a/b/rc/dev), in version order."""
    return [v for v in sort(versions) if not Version(v).is_prerelease]


def nearest(wanted: str, available: Iterable[str], n: int = 4) -> list[str]:
    """The ``n`` existing releases closest to ``wanted`` in version order (for error messages)."""
    ordered = sort(available)
    if not ordered:
        return []
    try:
        key = Version(wanted)
    except InvalidVersion:
        return ordered[-n:]
    keys = [Version(v) for v in ordered]
    at = bisect.bisect_left(keys, key)
    lo = max(0, min(at - n // 2, len(ordered) - n))
    return ordered[lo : lo + n]


def resolve(spec: str, available: Iterable[str]) -> list[str]:
    """The concrete releases ``spec`` names, oldest first; never empty (RopefixError instead).

    - ``4.49.0``: that release (pre-releases only this way, by their exact name);
    - ``latest``: the newest final release;
    - ``4.49-4.57`` / ``4.45-latest``: the latest patch of each minor in that span (ends inclusive;
      a full ``X.Y.Z`` end bounds the patch too);
    - ``>=4.50,<4.52`` (any PEP 440 specifier set): every final release it admits.
    """
    available = sort(available)
    if not available:
        raise RopefixError("No transformers releases are known (the index gave none). Check the index URL and retry.")
    finals = stable(available)
    text = spec.strip()
    if text == LATEST:
        if not finals:
            raise RopefixError("The index lists no final transformers release; name a pre-release exactly.")
        return [finals[-1]]
    if m := _RANGE.match(text):
        return _span(text, m["lo"], m["hi"], finals)
    if text.startswith(_SPEC_START):
        return _specifier(text, finals)
    wanted = parse(text)
    for v in available:
        if Version(v) == wanted:
            return [v]
    raise RopefixError(
        f"transformers {text} is not a known release. Nearest existing: {', '.join(nearest(text, finals or available))}. "
        "Pick one of those (or run `ropefix checkout latest`)."
    )


def exact(text: str, available: Iterable[str]) -> str:
    """One release named exactly, as ``4.51.3`` or its tag ``v4.51.3``. A prefix such as ``4.51`` is refused with
    the releases it could mean (PEP 440 would read it as 4.51.0, silently)."""
    name = text.strip().removeprefix("v")
    known = sort(available)
    if name in known:
        return name
    parse(name)  # garbage gets the usual explanation
    if re.fullmatch(r"\d+(\.\d+)?", name):
        series = [v for v in known if v.startswith(f"{name}.")]
        if series:
            raise RopefixError(
                f"{text} is not an exact release: it could mean any of the {name}.x releases ({', '.join(series)}). "
                f"Name one, e.g. {series[-1]}."
            )
    raise RopefixError(
        f"transformers {name} is not a known release. Nearest existing: {', '.join(nearest(name, known))}. "
        "Name one of those exactly."
    )


def _span(text: str, lo: str, hi: str, finals: list[str]) -> list[str]:
    low = parse(lo)
    high = Version(finals[-1]) if hi == LATEST else parse(hi)
    if low > high:
        raise RopefixError(f"The range {text!r} runs backwards; write the older release first, e.g. 4.49-4.57.")
    # A bare ``X.Y`` upper end means "all of minor X.Y"; ``X.Y.Z`` stops at that patch.
    hi_exact = hi != LATEST and hi.count(".") >= 2
    best: dict[tuple[int, int], tuple[Version, str]] = {}
    for name in finals:
        v = Version(name)
        minor = (v.major, v.minor)
        if minor < (low.major, low.minor) or v < low:
            continue
        if (hi_exact and v > high) or minor > (high.major, high.minor):
            continue
        if minor not in best or v > best[minor][0]:
            best[minor] = (v, name)
    if not best:
        raise RopefixError(f"No final release falls in {text!r}. Nearest existing: {', '.join(nearest(lo, finals))}.")
    return [best[k][1] for k in sorted(best)]


def _specifier(text: str, finals: list[str]) -> list[str]:
    try:
        spec = SpecifierSet(text)
    except InvalidSpecifier as e:
        raise RopefixError(f"{text!r} is not a valid PEP 440 specifier (example: '>=4.50,<4.52').") from e
    picked = [v for v in finals if Version(v) in spec]
    if not picked:
        raise RopefixError(f"No final release satisfies {text!r}. Newest existing: {', '.join(finals[-4:])}.")
    return picked
