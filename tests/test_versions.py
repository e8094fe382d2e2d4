from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from packaging.version import Version

from ropefix.errors import RopefixError
from ropefix.releases.versions import nearest, resolve, sort

AVAILABLE = [
    "4.9.0", "4.10.0", "4.45.0", "4.45.2", "4.46.0", "4.46.3", "4.49.0", "4.50.0rc1", "4.50.0", "4.50.3",
    "4.51.0", "4.51.3", "4.57.0", "4.57.6", "5.0.0rc1", "5.0.0", "5.1.0",
]  # fmt: skip


def test_exact_release() -> None:
    assert resolve("4.49.0", AVAILABLE) == ["4.49.0"]


def test_exact_prerelease_only_when_named() -> None:
    assert resolve("5.0.0rc1", AVAILABLE) == ["5.0.0rc1"]
    assert "5.0.0rc1" not in resolve("4.45-latest", AVAILABLE)


def test_latest_is_newest_final() -> None:
    assert resolve("latest", [*AVAILABLE, "5.2.0rc1"]) == ["5.1.0"]


def test_range_takes_latest_patch_of_each_minor() -> None:
    assert resolve("4.45-4.51", AVAILABLE) == ["4.45.2", "4.46.3", "4.49.0", "4.50.3", "4.51.3"]


def test_range_to_latest() -> None:
    assert resolve("4.51-latest", AVAILABLE) == ["4.51.3", "4.57.6", "5.0.0", "5.1.0"]


def test_range_with_full_version_end_bounds_the_patch() -> None:
    assert resolve("4.45.0-4.50.0", AVAILABLE) == ["4.45.2", "4.46.3", "4.49.0", "4.50.0"]


def test_pep440_specifier() -> None:
    assert resolve(">=4.50,<4.52", AVAILABLE) == ["4.50.0", "4.50.3", "4.51.0", "4.51.3"]


def test_version_order_not_string_order() -> None:
    assert sort(["4.10.0", "4.9.0", "4.45.2"]) == ["4.9.0", "4.10.0", "4.45.2"]


def test_unknown_version_names_nearest_existing() -> None:
    with pytest.raises(RopefixError) as e:
        resolve("4.47.1", AVAILABLE)
    message = str(e.value)
    assert "4.47.1 is not a known release" in message
    assert "4.46.3" in message and "4.49.0" in message


def test_not_a_version() -> None:
    with pytest.raises(RopefixError, match="not a version"):
        resolve("four-point-nine", AVAILABLE)


def test_backwards_range() -> None:
    with pytest.raises(RopefixError, match="runs backwards"):
        resolve("4.57-4.45", AVAILABLE)


def test_empty_specifier_result() -> None:
    with pytest.raises(RopefixError, match="No final release satisfies"):
        resolve(">=9", AVAILABLE)


def test_bad_specifier() -> None:
    with pytest.raises(RopefixError, match="not a valid PEP 440 specifier"):
        resolve(">=4..5", AVAILABLE)


def test_nearest_around_the_gap() -> None:
    assert nearest("4.47.0", AVAILABLE, n=2) == ["4.46.3", "4.49.0"]


finals = st.lists(
    st.tuples(st.integers(3, 5), st.integers(0, 60), st.integers(0, 6)).map(lambda t: ".".join(map(str, t))),
    min_size=1,
    max_size=40,
)


@given(finals, st.integers(3, 5), st.integers(0, 60), st.integers(0, 60))
def test_range_is_one_latest_patch_per_minor_inside_span(available: list[str], major: int, a: int, b: int) -> None:
    lo, hi = sorted([a, b])
    spec = f"{major}.{lo}-{major}.{hi}"
    inside = [v for v in available if Version(v).major == major and lo <= Version(v).minor <= hi]
    if not inside:
        with pytest.raises(RopefixError):
            resolve(spec, available)
        return
    got = resolve(spec, available)
    minors = {Version(v).minor for v in inside}
    assert len(got) == len(minors)
    for v in got:
        same_minor = [w for w in inside if Version(w).minor == Version(v).minor]
        assert Version(v) == max(map(Version, same_minor))
