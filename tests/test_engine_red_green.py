"""Red to green on real releases: the rope-deltas patch turns the failing layouts green, tokens identical.

Each release runs in its own environment (``ropefix.releases.relenv``), once on its unpatched tree
and once on a light copy patched by the engine with the rope-deltas rule alone, through
``tests/fix_probe.py`` (the regression suite's oracle: a run over two simulated accelerators must
return the one-device run's tokens bit for bit). The layout is the one users hit: the vision tower
on cuda:0, the language model on cuda:1.

Shapes (CONTRIBUTING, "Code shapes by release"): 4.45/4.46 carry the deltas in the generation
arguments and shift positions built on the input ids' device; 4.47/4.48 store them and shift
positions built on the embeddings' device. CI runs one release of each shape (4.46.3, 4.47.1);
``ROPEFIX_RED_GREEN=all`` adds 4.45.2 (latent: its generation loop fails before the shift whenever
the shift could fail) and 4.48.3 (the 4.47 shape), each about half a minute more.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from releaseenv import release_python

from ropefix.fix import engine
from ropefix.prove.verify import light_copy
from ropefix.releases import sources
from ropefix.store import Store

pytestmark = [pytest.mark.network, pytest.mark.slow]

PROBE = Path(__file__).with_name("fix_probe.py")
GREEDY_CPU = "generate-greedy/text/1/vision-apart/cpu"
LOOP_CPU = "decode-loop/text/1/vision-apart/cpu"
EMBEDS_CPU = "embeds-generate/text/1/vision-apart/cpu"
GREEDY_GPU = "generate-greedy/text/1/vision-apart/cuda:0"
EXAMPLES = [GREEDY_CPU, LOOP_CPU, EMBEDS_CPU, GREEDY_GPU]

# release -> {example that fails at a rope-deltas line unpatched: the code of that line}
SHIFT = "position_ids = position_ids.add(delta)"
COMBINE = "delta = cache_position[0] + self.rope_deltas"
RED: dict[str, dict[str, str]] = {
    "4.45.2": {},
    "4.46.3": {EMBEDS_CPU: SHIFT},
    "4.47.1": {GREEDY_CPU: SHIFT, LOOP_CPU: SHIFT, GREEDY_GPU: SHIFT},
    "4.48.3": {GREEDY_CPU: COMBINE, LOOP_CPU: COMBINE, GREEDY_GPU: COMBINE, EMBEDS_CPU: SHIFT},
}
IN_CI = ["4.46.3", "4.47.1"]
EVERY = os.environ.get("ROPEFIX_RED_GREEN") == "all"


def probe(python: Path, tree: Path) -> dict[str, str]:
    """The probe's outcome per example, with ``tree`` (a folder holding ``transformers``) first on the path."""
    kit = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), str(kit)]), "OMP_NUM_THREADS": "1"}
    cmd = [str(python), "-W", "ignore", str(PROBE), "qwen2_vl", *EXAMPLES]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "version",
    [v if v in IN_CI or EVERY else pytest.param(v, marks=pytest.mark.skip("set ROPEFIX_RED_GREEN=all")) for v in RED],
)
def test_rope_deltas_patch_turns_the_failing_layouts_green(version: str, shared_store: Store, tmp_path: Path) -> None:
    tree = sources.release_tree(version, shared_store)
    pkg, _ = engine.package_dir(tree)
    python = release_python(shared_store, version)
    patched = light_copy(pkg, tmp_path / "patched", ["qwen2_vl"])
    report = engine.apply_tree(patched, models=["qwen2_vl"], rules=["rope-deltas"])
    assert "shift-unaligned" in {s.shape for ch in report.changes for s in ch.sites_fixed}

    before = probe(python, pkg.parent)
    after = probe(python, patched.parent)

    red = RED[version]
    for example, result in before.items():
        if example in red:  # red at the rope-deltas line unpatched ...
            assert result.startswith("red rope-deltas ") and red[example] in result, result
            assert after[example] == "green", (example, after[example])  # ... and the same tokens patched
        else:  # nothing else changes, except for the better
            assert not result.startswith("red rope-deltas "), (example, result)
            assert after[example] in ("green", result), (example, result, after[example])
    assert any(after[e] == "green" for e in EXAMPLES)  # something was compared on every release
