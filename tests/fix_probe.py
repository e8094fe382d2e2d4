"""Run inside an environment holding one transformers release: fixed examples, unpatched or patched.

    python fix_probe.py MODEL EXAMPLE...      # EXAMPLE = path/kind/batch/layout/input_device

The tree under test is whatever ``transformers`` is first on ``PYTHONPATH``. Each example goes
through the regression suite's own oracle (``ropefix.prove.suite.Runner``): a run placed over two
simulated accelerators must return the unsplit model's tokens. Prints one JSON object
{example: outcome}, the outcome being ``green`` (compared, identical), ``red <hazard> <site> | <code>``,
``not-compared: <error>`` (the path fails unsplit, so there is nothing to compare) or
``not-placeable: <why>`` (accelerate refused the layout).

The tiny model's family is named here rather than discovered: releases before 4.47 keep the deltas
in the generation arguments, not on the model, so discovery (which looks for stored deltas) passes
them by.
"""

from __future__ import annotations

import json
import sys

from ropefix.prove import layouts, suite
from ropefix.prove.callpaths import Shape
from ropefix.prove.tinymodels import Family, Prompt

CLASSES = {
    "qwen2_vl": ("Qwen2VLForConditionalGeneration", "Qwen2VLConfig"),
    "qwen2_5_vl": ("Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLConfig"),
}


def layout(runner: suite.Runner, kind: str, input_device: str) -> layouts.Layout:
    u = runner.units
    if kind == "vision-apart":  # the towers on cuda:0, the language model on cuda:1
        dmap = layouts.vision_apart(u, 0, [], 2)
    elif kind == "one":
        dmap = {n: 0 for n in u.names}
    else:
        raise SystemExit(f"unknown layout {kind}")
    return layouts.Layout(kind, dmap, input_device, 2)


def outcome(runner: suite.Runner, example: str) -> str:
    path, kind, batch, where, input_device = example.split("/")
    b = int(batch)
    grid = (1, 2 * runner.tiny.merge, 2 * runner.tiny.merge)
    prompt = Prompt(kind=kind, batch=b, length=4, pad=1 if b > 1 else 0, grid=grid)
    shape = Shape(max_new_tokens=3, num_beams=2 if path == "generate-beams" else 1)
    ref = runner.reference(prompt, path, shape)
    if not ref.ok:
        return f"not-compared: {ref.error[:200]}"
    placed = layout(runner, where, input_device)
    failure = runner.check(placed, prompt, path, shape)
    if runner.unplaceable:
        return f"not-placeable: {next(iter(runner.unplaceable.values()))}"
    if failure is None:
        return "green"
    return f"red {failure.hazard} {failure.site} | {failure.code}"


def main(argv: list[str]) -> int:
    model, examples = argv[0], argv[1:]
    cls, cfg = CLASSES[model]
    runner = suite.Runner(Family(model, cls, cfg, f"transformers.models.{model}.modeling_{model}"))  # type: ignore[arg-type]
    print(json.dumps({ex: outcome(runner, ex) for ex in examples}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
