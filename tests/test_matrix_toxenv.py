"""tox.ini as the matrix's data: release selection from a scan, the generated block, the real tox.ini."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from packaging.version import Version

from ropefix.errors import RopefixError
from ropefix.matrix import toxenv

REPO = Path(__file__).resolve().parents[1]


def test_parse_config_deps_and_pins() -> None:
    text = (
        "[testenv:tests]\ndeps = \n\n[testenv:tf457-torch213]\ndeps =\n  transformers==4.57.6\n  torch==2.13.0\n"
        "  accelerate\n\n[testenv:odd]\ndeps = six\n"
    )
    deps = toxenv.parse_config_deps(text)
    assert deps == {
        "tests": [],
        "tf457-torch213": ["transformers==4.57.6", "torch==2.13.0", "accelerate"],
        "odd": ["six"],
    }
    spec = toxenv.spec_from_deps("tf457-torch213", deps["tf457-torch213"])
    assert (spec.transformers, spec.torch) == ("4.57.6", "2.13.0")
    assert toxenv.spec_from_deps("odd", ["six"]).transformers == "?"


def test_selection_follows_the_scan() -> None:
    scan = {
        "4.45.0": True,
        "4.45.2": True,
        "4.49.0": True,
        "4.57.5": True,
        "4.57.6": True,
        "5.0.0": True,
        "5.1.0": False,
        "5.2.0": False,
        "5.24.0": False,
    }
    sel = toxenv.select_releases(scan)
    assert sel.full == ("4.45.2", "4.49.0", "4.57.6", "5.0.0", "5.1.0", "5.24.0")
    assert sel.quick == ("4.45.2", "5.0.0", "5.1.0")
    assert sel.reasons["5.1.0"] == "first release the scan finds safe"
    # with the scan narrowed to verify's models, quick holds the newest release verify can go red on
    focus = {v: Version(v) < Version("4.50") for v in scan}
    sel = toxenv.select_releases(scan, focus)
    assert sel.quick == ("4.49.0", "5.0.0", "5.1.0") and "verify's models" in sel.reasons["4.49.0"]
    # and the oldest release where all of verify's models are affected: the oldest shape, red first
    complete = {v: Version("4.49") <= Version(v) < Version("4.58") for v in scan}
    sel = toxenv.select_releases(scan, focus, complete)
    assert sel.quick == ("4.49.0", "5.0.0", "5.1.0")
    complete = {v: Version("4.45") <= Version(v) < Version("4.58") for v in scan}
    sel = toxenv.select_releases(scan, {v: v == "4.57.6" for v in scan}, complete)
    assert sel.quick == ("4.45.2", "4.57.6", "5.0.0", "5.1.0")
    assert "oldest where all of verify's models" in sel.reasons["4.45.2"]
    # nothing safe yet: the latest (affected) closes the list
    sel = toxenv.select_releases({"4.49.0": True, "4.50.3": True})
    assert sel.full == ("4.49.0", "4.50.3") and "latest" in sel.reasons["4.50.3"]


versions = st.tuples(st.sampled_from([4, 5]), st.integers(0, 30), st.integers(0, 5)).map(
    lambda t: "{}.{}.{}".format(*t)
)


@given(st.dictionaries(versions, st.booleans(), min_size=1, max_size=25))
def test_selection_invariants(scan: dict[str, bool]) -> None:
    sel = toxenv.select_releases(scan)
    latest = max(scan, key=Version)
    assert latest in sel.full and set(sel.quick) <= set(sel.full) and 1 <= len(sel.quick) <= 4
    for v in sel.full:  # one env per minor: the minor's latest patch
        same_minor = [w for w in scan if Version(w).release[:2] == Version(v).release[:2]]
        if scan[v]:
            assert v == max(same_minor, key=Version)
    for v, hit in scan.items():  # every minor whose latest patch is affected is in the matrix
        same_minor = [w for w in scan if Version(w).release[:2] == Version(v).release[:2]]
        if hit and v == max(same_minor, key=Version):
            assert v in sel.full


def test_parse_scan_shapes() -> None:
    assert toxenv.parse_scan({"4.49.0": True}) == {"4.49.0": True}
    assert toxenv.parse_scan({"releases": [{"version": "4.49.0", "affected": True}]}) == {"4.49.0": True}
    # what `ropefix scan --versions ... --json` prints: per release, its sites and their status
    scan = {
        "5.3.0": {
            "files_scanned": 9,
            "sites": [{"model": "m", "status": "fixed"}, {"model": "n", "status": "affected"}],
        },
        "5.4.0": {"files_scanned": 9, "sites": [{"model": "m", "status": "fixed"}, {"status": "unknown-shape"}]},
        "5.5.0": {"files_scanned": 9, "sites": []},
    }
    assert toxenv.parse_scan(scan) == {"5.3.0": True, "5.4.0": False, "5.5.0": False}
    assert toxenv.parse_scan(scan, ("m",)) == {"5.3.0": False, "5.4.0": False, "5.5.0": False}
    # the release axis follows one rule: a companion rule's sites alone do not make a release affected
    scan["5.5.0"]["sites"] = [{"model": "m", "rule": "causal-mask", "status": "affected"}]
    scan["5.3.0"]["sites"][1]["rule"] = "rope-deltas"
    assert toxenv.parse_scan(scan, rule="rope-deltas") == {"5.3.0": True, "5.4.0": False, "5.5.0": False}
    assert toxenv.parse_scan(scan) == {"5.3.0": True, "5.4.0": False, "5.5.0": True}
    with pytest.raises(RopefixError, match="names no releases"):
        toxenv.parse_scan({"oops": 1})


def test_block_is_replaced_in_place_and_sync_is_idempotent(tmp_path: Path) -> None:
    sel = toxenv.select_releases({"4.49.0": True, "4.57.6": True, "5.0.0": False, "5.24.0": False})
    block = toxenv.render_block(sel, ["2.6.0", "2.13.0"], "2.13.0")
    rest = "\n[testenv:tests]\ncommands = pytest\n"
    once = toxenv.replace_block(rest, block)
    assert once.endswith(rest) and once.startswith(toxenv.BEGIN)
    assert toxenv.replace_block(once, block) == once
    ini = tmp_path / "tox.ini"
    ini.write_text(once)
    # tox itself must read what we generate: labels and factor-conditional pins
    assert toxenv.list_envs(ini, "quick") == ["tf449-torch213", "tf457-torch213", "tf50-torch213"]
    # every release on the newest torch; the older torch on the oldest and newest affected only
    assert sorted(toxenv.list_envs(ini, "full")) == [
        "tf449-torch213",
        "tf449-torch26",
        "tf457-torch213",
        "tf457-torch26",
        "tf50-torch213",
        "tf524-torch213",
    ]
    specs = toxenv.all_specs(ini)
    assert (specs["tf524-torch26"].transformers, specs["tf524-torch26"].torch) == ("5.24.0", "2.6.0")
    assert "tests" in specs
    broken = once.replace(toxenv.END, "")
    with pytest.raises(RopefixError, match="broken generated block"):
        toxenv.replace_block(broken, block)


def test_the_repos_tox_ini_quick_label_is_ci_sized() -> None:
    quick = toxenv.list_envs(REPO / "tox.ini", "quick")
    full = toxenv.list_envs(REPO / "tox.ini", "full")
    specs = toxenv.all_specs(REPO / "tox.ini")
    assert 2 <= len(quick) <= 4 and set(quick) <= set(full)
    # the quick label uses only the local CPU torch (any other torch is a ~1 GB download)
    assert {specs[e].torch for e in quick} == {toxenv.QUICK_TORCH}
    assert {specs[e].torch for e in full} == set(toxenv.TORCHES)
    assert "tests" in specs  # scripts/test's env survives every sync


def _recorded_selection(block: str) -> tuple[toxenv.Selection, list[str], str]:
    """The selection, torch releases and quick torch a generated block records (comments, labels, pins)."""
    reasons = dict(re.findall(r"^#   (\S+): (.*)$", block, re.MULTILINE))
    quick, quick_torch = re.search(r"quick = tf\{([^}]*)\}-torch(\d+)", block).groups()
    all_torch = re.search(r"^\[testenv:tf\{[^}]*\}-torch\{([^}]*)\}\]", block, re.MULTILINE)[1].split(",")
    edges = re.search(r"full = tf\{[^}]*\}-torch\d+(?:, tf\{([^}]*)\})?", block)[1] or ""
    pins = dict(re.findall(r"^    (torch\d+): torch==(\S+)$", block, re.MULTILINE))
    picked = tuple(v for v in reasons if toxenv.tf_factor(v)[2:] in quick.split(","))
    on_edges = tuple(v for v in reasons if toxenv.tf_factor(v)[2:] in edges.split(","))
    selection = toxenv.Selection(full=tuple(reasons), quick=picked, reasons=reasons, edges=on_edges)
    return selection, [pins[f"torch{t}"] for t in all_torch], pins[f"torch{quick_torch}"]


def test_the_repos_tox_ini_block_is_what_the_renderer_writes() -> None:
    """A change to render_block goes into tox.ini too (`ropefix matrix --sync-tox`), never by hand alone."""
    text = (REPO / "tox.ini").read_text()
    block = text[text.index(toxenv.BEGIN) : text.index(toxenv.END) + len(toxenv.END)] + "\n"
    assert toxenv.render_block(*_recorded_selection(block)) == block
    # every env installs the kit with verify's extras (a lean install has neither the suite nor the engine)
    assert f"extras = {', '.join(toxenv.ENV_EXTRAS)}\n" in block and set(toxenv.ENV_EXTRAS) == {"fix", "prove"}
