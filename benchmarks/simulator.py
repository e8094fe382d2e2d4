"""Device simulator overhead: the same tiny-model generate, plain on the CPU and on simulated devices.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/simulator.py [--repeats 7] [--tokens 16] [--profile 25]

Prints the best (min, robust to other load on the machine; the ratios use it) and the median
seconds per generate for: plain CPU; a TorchFunctionMode that does nothing (the floor any
mode-based simulator pays: torch routes every call through Python); the simulator with the
whole model on cuda:0 (the simulator's own cost); a 2-way split placed by accelerate's
dispatch_model (what the regression suite runs: simulator plus accelerate's hooks); and
accelerate's hooks alone (the same split's hooks with every block on the CPU). All are measured
in one run, interleaved. Then a cProfile of the simulated split, top entries by own time.
Requirement: split / plain <= 3 (aim 2).
"""

from __future__ import annotations

import argparse
import cProfile
import io
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


class EmptyMode(TorchFunctionMode):
    """The floor: what any TorchFunctionMode costs before it does anything."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


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
    times: dict[str, list[float]] = {
        "plain": [],
        "empty mode": [],
        "sim 1 device": [],
        "sim 2-way split": [],
        "hooks, no sim": [],
    }
    with torch.inference_mode():
        reference = plain.generate(ids, **gen)
        with simulate(2):
            one = tiny_model().to("cuda:0")
            split = accelerate.dispatch_model(tiny_model(), device_map=split_map(0, 1))
            on0 = ids.to("cuda:0")
            outputs = [one.generate(on0, **gen), split.generate(on0, **gen)]  # warm-up
        outputs.append(hooked.generate(ids, **gen))
        for _ in range(args.repeats):
            times["plain"].append(timed(lambda: plain.generate(ids, **gen)))
            times["hooks, no sim"].append(timed(lambda: hooked.generate(ids, **gen)))
            with EmptyMode():
                times["empty mode"].append(timed(lambda: plain.generate(ids, **gen)))
            with simulate(2):
                times["sim 1 device"].append(timed(lambda: one.generate(on0, **gen)))
                times["sim 2-way split"].append(timed(lambda: split.generate(on0, **gen)))
    assert all(torch.equal(out.cpu(), reference) for out in outputs), "simulated runs must be bit-identical"

    best, mid = min(times["plain"]), statistics.median(times["plain"])
    print(
        f"tiny Qwen2ForCausalLM ({LAYERS} layers), batch 2, 12 prompt + {args.tokens} new tokens, "
        f"torch {torch.__version__}, {args.repeats} interleaved repeats"
    )
    print(f"  {'':16s} {'min':>8s}     ratio  {'median':>8s}     ratio")
    for name, values in times.items():
        lo, med = min(values), statistics.median(values)
        print(f"  {name:16s} {lo * 1000:8.1f} ms x{lo / best:5.2f}  {med * 1000:8.1f} ms x{med / mid:5.2f}")
    split_ratio = min(times["sim 2-way split"]) / best
    verdict = "OK" if split_ratio <= 3 else "OVER"
    print(f"simulator overhead (2-way split / plain, min): x{split_ratio:.2f}  [required <= 3: {verdict}]")

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
