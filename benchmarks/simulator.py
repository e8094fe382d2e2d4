"""Device simulator overhead: the same tiny-model generate, plain on the CPU and on simulated devices.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/simulator.py [--repeats 7] [--tokens 16] [--profile 25]

Prints the best (min, robust to other load on the machine; the ratios use it) and the median
seconds per generate for: plain CPU; a TorchFunctionMode that does nothing (what a simulator
pays when torch routes every call through Python); the simulator with the whole model on cuda:0
(the simulator's own cost); a 2-way split placed by accelerate's dispatch_model (what the
regression suite runs: simulator plus accelerate's hooks); the same split with every call left
to torch's routing through the mode (``direct_entries=False``: what the direct entries of
``ropefix.devices.direct`` save); accelerate's hooks alone (hooks on the split's eight blocks,
every one on the CPU); the hooks dispatch_model really installs (one per module holding weights:
53 per forward here) on an all-CPU map; and those hooks under the empty mode (the floor of a
simulator that lets torch route every call and runs accelerate's hooks; the direct entries are
how the split gets below it). All are measured in one run, interleaved; the last column is the
min of the thread's CPU time, which other processes on the machine do not inflate. Then how
many torch calls of one split generate still cross the mode, with and without direct entries,
and a cProfile of the simulated split, top entries by own time.
Requirement: split / plain <= 3; target <= 2 (wall-clock min).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import pstats
import statistics
import time
from collections.abc import Callable

import accelerate
import torch
from accelerate.hooks import AlignDevicesHook, add_hook_to_module
from torch.overrides import TorchFunctionMode
from transformers import Qwen2Config, Qwen2ForCausalLM

from ropefix.devices import simulate
from ropefix.devices.mode import DeviceMode

LAYERS = 4


def tiny_model() -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    return Qwen2ForCausalLM(config).eval()


def split_map(first: int | str, second: int | str) -> dict[str, int | str]:
    half = LAYERS // 2
    device_map: dict[str, int | str] = {"model.embed_tokens": first, "model.rotary_emb": first}
    device_map.update({f"model.layers.{i}": first if i < half else second for i in range(LAYERS)})
    device_map.update({"model.norm": second, "lm_head": second})
    return device_map


def hooked_on_cpu(model: Qwen2ForCausalLM) -> Qwen2ForCausalLM:
    """The split's hooks without a simulator: every block gets accelerate's AlignDevicesHook on cpu."""
    for name in split_map("cpu", "cpu"):
        add_hook_to_module(model.get_submodule(name), AlignDevicesHook(execution_device="cpu", io_same_device=True))
    return model


def dispatched_on_cpu(model: Qwen2ForCausalLM) -> Qwen2ForCausalLM:
    """The hooks dispatch_model installs for the split (every module with weights), all on the CPU."""
    # an all-cpu map makes accelerate warn that weights were offloaded to the cpu: none are (no
    # weights map, nothing on meta), and the outputs are checked against the plain model below
    log = logging.getLogger("accelerate.big_modeling")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        return accelerate.dispatch_model(model, device_map=split_map("cpu", "cpu"), force_hooks=True)
    finally:
        log.setLevel(level)


class EmptyMode(TorchFunctionMode):
    """What a TorchFunctionMode costs before it does anything, when torch routes every call to it."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def timed(fn: Callable[[], object], cpu: list[float]) -> float:
    """Wall-clock seconds of ``fn()``; its thread CPU seconds go to ``cpu``."""
    start, start_cpu = time.perf_counter(), time.thread_time()
    fn()
    cpu.append(time.thread_time() - start_cpu)
    return time.perf_counter() - start


def crossings(run: Callable[[], object], entries: bool) -> int:
    """How many calls torch routes through the simulation's mode during ``run()``."""
    count = 0
    handle = DeviceMode.__torch_function__

    def counting(self, func, types, args=(), kwargs=None):
        nonlocal count
        count += 1
        return handle(self, func, types, args, kwargs)

    with torch.inference_mode(), simulate(2, direct_entries=entries):
        DeviceMode.__torch_function__ = counting  # type: ignore[method-assign]
        try:
            run()
        finally:
            DeviceMode.__torch_function__ = handle  # type: ignore[method-assign]
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--profile", type=int, default=25, help="profile entries to print (0: no profile)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(0))
    gen = {"max_new_tokens": args.tokens, "min_new_tokens": args.tokens, "do_sample": False}
    plain = tiny_model()
    hooked = hooked_on_cpu(tiny_model())
    dispatched = dispatched_on_cpu(tiny_model())
    names = [
        "plain",
        "empty mode",
        "sim 1 device",
        "sim 2-way split",
        "split, routed",
        "hooks, no sim",
        "dispatch hooks",
        "empty + dispatch",
    ]
    times: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    with torch.inference_mode():
        reference = plain.generate(ids, **gen)
        with simulate(2):
            one = tiny_model().to("cuda:0")
            split = accelerate.dispatch_model(tiny_model(), device_map=split_map(0, 1))
            on0 = ids.to("cuda:0")
            outputs = [one.generate(on0, **gen), split.generate(on0, **gen)]  # warm-up
        outputs += [hooked.generate(ids, **gen), dispatched.generate(ids, **gen)]
        for _ in range(args.repeats):
            times["plain"].append(timed(lambda: plain.generate(ids, **gen), cpu["plain"]))
            times["hooks, no sim"].append(timed(lambda: hooked.generate(ids, **gen), cpu["hooks, no sim"]))
            times["dispatch hooks"].append(timed(lambda: dispatched.generate(ids, **gen), cpu["dispatch hooks"]))
            with EmptyMode():
                times["empty mode"].append(timed(lambda: plain.generate(ids, **gen), cpu["empty mode"]))
                run = timed(lambda: dispatched.generate(ids, **gen), cpu["empty + dispatch"])
                times["empty + dispatch"].append(run)
            with simulate(2):
                times["sim 1 device"].append(timed(lambda: one.generate(on0, **gen), cpu["sim 1 device"]))
                times["sim 2-way split"].append(timed(lambda: split.generate(on0, **gen), cpu["sim 2-way split"]))
            with simulate(2, direct_entries=False):
                times["split, routed"].append(timed(lambda: split.generate(on0, **gen), cpu["split, routed"]))
        with simulate(2, direct_entries=False):
            outputs.append(split.generate(on0, **gen))
    assert all(torch.equal(out.cpu(), reference) for out in outputs), "simulated runs must be bit-identical"

    best, mid, best_cpu = min(times["plain"]), statistics.median(times["plain"]), min(cpu["plain"])
    print(
        f"tiny Qwen2ForCausalLM ({LAYERS} layers), batch 2, 12 prompt + {args.tokens} new tokens, "
        f"torch {torch.__version__}, {args.repeats} interleaved repeats"
    )
    print(f"  {'':16s} {'min':>8s}     ratio  {'median':>8s}     ratio  {'cpu min':>8s}     ratio")
    for name, values in times.items():
        lo, med, lo_cpu = min(values), statistics.median(values), min(cpu[name])
        print(
            f"  {name:16s} {lo * 1000:8.1f} ms x{lo / best:5.2f}  {med * 1000:8.1f} ms x{med / mid:5.2f}"
            f"  {lo_cpu * 1000:8.1f} ms x{lo_cpu / best_cpu:5.2f}"
        )
    split_ratio = min(times["sim 2-way split"]) / best
    required = "OK" if split_ratio <= 3 else "OVER"
    target = "OK" if split_ratio <= 2 else "OVER"
    print(
        f"simulator overhead (2-way split / plain, min): x{split_ratio:.2f}  "
        f"[required <= 3: {required}; target <= 2.0: {target}]"
    )

    crossing = {entries: crossings(lambda: split.generate(on0, **gen), entries) for entries in (False, True)}
    print(
        f"torch calls crossing the mode in one split generate: {crossing[False]} routed by torch, "
        f"{crossing[True]} with direct entries ({1 - crossing[True] / crossing[False]:.0%} served directly)"
    )

    if args.profile:
        profile = cProfile.Profile()
        with torch.inference_mode(), simulate(2):
            profile.enable()
            split.generate(on0, **gen)
            profile.disable()
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(args.profile)
        print("\nwhere the time goes (simulated split, by own time):")
        print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:6000])


if __name__ == "__main__":
    main()
