"""Regression tests in upstream's own style, for each model the PR fixes.

Two tests per model, in a ``unittest.TestCase`` with upstream's decorators: a CPU test for the
path without ``cache_position`` (plain forward after a prefill kept the deltas: the quoted
one-liner breaks it), and a ``@require_torch_multi_accelerator`` test that loads the model split
the way users split it (``from_pretrained(..., device_map=...)``, vision tower on the first
accelerator, language model on the second), generates, and compares with the unsplit model
(skipped without two devices).

The tiny config and the device map each test uses are computed from the tree itself
(``ropefix.prove.tinymodels`` and ``ropefix.prove.layouts`` run in a subprocess with the tree first on
``PYTHONPATH``) and written out as plain literals, so the test needs nothing from ropefix.
"""

from __future__ import annotations

import json
import os
import pprint
from dataclasses import dataclass
from pathlib import Path

from ropefix import proc
from ropefix.files import atomic_write

TEST_IMPORTS = ("require_torch", "require_torch_multi_accelerator", "torch_device")
STDLIB_IMPORTS = ("tempfile", "unittest")


@dataclass(frozen=True)
class Target:
    """One model to test: its folder, its classes, and its tiny config (or why there is none)."""

    name: str
    model_class: str = ""
    config_class: str = ""
    config: dict | None = None
    device_map: dict | None = None
    problem: str = ""


_PROBE = r"""
import importlib, inspect, json, re, sys
from ropefix.prove import layouts, tinymodels
out = {}
for name in sys.argv[1:]:
    try:
        fam = tinymodels.family(name)
        config = tinymodels.tiny_config(fam)
        cfg = config.to_diff_dict()
        # token ids the modeling code reads from the config but older configs only get from config.json
        source = inspect.getsource(importlib.import_module(fam.module))
        spare = tinymodels.VOCAB - 1
        for attr in sorted(set(re.findall(r"config\.(\w+_token_id)", source))):
            if getattr(config, attr, None) is None:
                cfg[attr], spare = spare, spare - 1
        for key in ("transformers_version", "architectures", "_name_or_path", "model_type"):
            cfg.pop(key, None)
        model = getattr(importlib.import_module(fam.module), fam.model_class)(config)
        out[name] = {
            "model_class": fam.model_class,
            "config_class": fam.config_class,
            "config": cfg,
            "device_map": layouts.towers_apart(model),
        }
    except Exception as e:  # reported per model in the PR body, never hidden
        out[name] = {"problem": f"{type(e).__name__}: {e}"[:300]}
print(json.dumps(out))
"""


def targets(tree: Path, models: list[str], python: str | None = None) -> list[Target]:
    """Tiny configs for ``models``, computed with the tree at ``tree`` importable (``python`` runs it)."""
    if not models:
        return []
    env = {"PYTHONPATH": os.pathsep.join([str(tree / "src"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    done = proc.run([python or proc.python(), "-W", "ignore", "-c", _PROBE, *models], env=env, timeout=600)
    if not done.ok:
        why = (done.err.strip().splitlines() or ["no output"])[-1][:300]
        return [Target(m, problem=f"the tree does not import here ({why})") for m in models]
    found = json.loads(done.out.strip().splitlines()[-1])
    return [Target(m, **found[m]) for m in models]


def camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def test_path(tree: Path, name: str) -> tuple[Path, bool]:
    """The model's existing upstream test file, or the new file we add; and whether it exists."""
    existing = tree / "tests" / "models" / name / f"test_modeling_{name}.py"
    if existing.exists():
        return existing, True
    return tree / "tests" / "models" / name / f"test_rope_deltas_{name}.py", False


def test_class(t: Target) -> str:
    config = pprint.pformat(t.config, width=100, sort_dicts=True)
    return f'''

@require_torch
class {camel(t.name)}RopeDeltasDeviceTest(unittest.TestCase):
    """The `rope_deltas` kept at prefill must follow `cache_position` to its device (models split with `device_map`)."""

    def get_model(self):
        config = {t.config_class}(**{config})
        torch.manual_seed(0)
        return {t.model_class}(config).eval()

    def get_inputs(self, device):
        input_ids = torch.arange(1, 7, device=device)[None]
        return {{"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}}

    def test_forward_without_cache_position_after_prefill(self):
        # training and scoring call forward without `cache_position`: keeping deltas must not break them
        model = self.get_model().to(torch_device)
        inputs = self.get_inputs(torch_device)
        with torch.no_grad():
            expected = model(**inputs, use_cache=False).logits
            model(**inputs, cache_position=torch.arange(6, device=torch_device), use_cache=True)
            logits = model(**inputs, use_cache=False).logits
        torch.testing.assert_close(logits, expected)

    @require_torch_multi_accelerator
    def test_generate_with_the_model_split_across_accelerators(self):
        # vision tower on the first accelerator, language model on the second: the prefill keeps
        # `rope_deltas` where its inputs are, decoding adds them to `cache_position` on the other one
        model = self.get_model()
        with tempfile.TemporaryDirectory() as tmp_dir:
            model.save_pretrained(tmp_dir)
            split_model = {t.model_class}.from_pretrained(tmp_dir, device_map={t.device_map!r}).eval()
        expected = model.to(torch_device).generate(**self.get_inputs(torch_device), max_new_tokens=3, do_sample=False)
        output = split_model.generate(**self.get_inputs(split_model.device), max_new_tokens=3, do_sample=False)
        self.assertEqual(output.tolist(), expected.tolist())
'''


def new_file(t: Target) -> str:
    return f'''# Copyright 2026 The HuggingFace Team. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Multi-device regression tests for the {t.name} `rope_deltas`."""

import tempfile
import unittest

from transformers import is_torch_available
from transformers.testing_utils import {", ".join(TEST_IMPORTS)}


if is_torch_available():
    import torch

    from transformers import {t.config_class}, {t.model_class}
{test_class(t)}'''


def add_to_existing(text: str, t: Target) -> str:
    """Append the test class to an upstream test file, importing what it needs at the top."""
    lines = text.splitlines(keepends=True)
    extra = [f"import {m}\n" for m in STDLIB_IMPORTS if f"import {m}\n" not in text]
    names = [n for n in TEST_IMPORTS if n not in text]
    if names:
        extra.append(f"from transformers.testing_utils import {', '.join(names)}\n")
    if t.config_class not in text or t.model_class not in text:
        extra.append(f"from transformers import {t.config_class}, {t.model_class}, is_torch_available\n")
    if "import torch\n" not in text:
        extra.append("if is_torch_available():\n    import torch\n")
    last_import = max((i for i, ln in enumerate(lines) if ln.startswith(("import ", "from "))), default=0)
    return "".join(lines[: last_import + 1] + extra + lines[last_import + 1 :]) + test_class(t)


def write(tree: Path, t: Target) -> Path:
    path, exists = test_path(tree, t.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, add_to_existing(path.read_text(), t) if exists else new_file(t))
    # imports sorted and code formatted with the tree's own ruff settings, as `make style` would
    # (only the import rule is fixed: the rest of upstream's file is not ours to touch)
    ruff = [proc.python(), "-m", "ruff"]
    proc.run([*ruff, "check", "-q", "--fix", "--select", "I001", path], cwd=tree, check=True)
    proc.run([*ruff, "format", "-q", path], cwd=tree, check=True)
    return path
