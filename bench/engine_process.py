"""vLLM's engine core in the calling process against in a process of its own, side by side.

Over the demo model (`data/models/base`, from `make demo` or `flywheel bootstrap`), alternating the
two modes `--repeats` times in one run: start a `VLLMBackend` (`engine.in_process` true or false),
sample the held-out problems as an evaluation does (n=8, temperature 1, the demo's 64-token budget,
per-request seeds), check that both modes drew the same tokens, close the engine. Prints each
run, then per mode the median engine start and sampling seconds and generated tokens/s, and the
ratios own-process / in-process.

Usage: python bench/engine_process.py [--repeats 3] [--prompts 256] [--n 8] [--model DIR]
Last line: `engine start own/in-process: <x>`.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from demo_requests import DEMO_MODEL, demo_requests, require_model

from schemas.generation import EngineConfig, SamplingConfig
from tasks.generation.generate import VLLMBackend


def run_once(model: Path, in_process: bool, prompts: list[str], seeds: list[int], sampling: SamplingConfig
             ) -> tuple[float, float, int, list[list[list[int]]]]:
    """(start seconds, sampling seconds, tokens generated, token ids) of one engine in one mode."""
    started = time.perf_counter()
    backend = VLLMBackend(model, EngineConfig(backend="vllm", in_process=in_process))
    start_s = time.perf_counter() - started
    try:
        began = time.perf_counter()
        out = backend.generate(prompts, sampling, seeds)
        sample_s = time.perf_counter() - began
    finally:
        backend.close()
    tokens = [[c.token_ids for c in group] for group in out]
    return start_s, sample_s, sum(len(t) for group in tokens for t in group), tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--model", type=Path, default=DEMO_MODEL, help="a model folder (default: the demo's base)")
    args = parser.parse_args()
    require_model(args.model)
    prompts, seeds = demo_requests("eval", 20_000, 3_000, args.prompts)
    sampling = SamplingConfig(n=args.n, temperature=1.0, max_tokens=64, seed=0)
    print(f"{len(prompts)} prompts x n={args.n}, {args.repeats} engines per mode, alternating")

    figures: dict[bool, list[tuple[float, float, int]]] = {True: [], False: []}
    first: list[list[list[int]]] | None = None
    for repeat in range(args.repeats):
        for in_process in (False, True):
            start_s, sample_s, tokens, ids = run_once(args.model, in_process, prompts, seeds, sampling)
            first = first if first is not None else ids
            same = ids == first
            figures[in_process].append((start_s, sample_s, tokens))
            print(f"  {'in-process ' if in_process else 'own process'} #{repeat}: start {start_s:5.1f} s, "
                  f"sampling {sample_s:5.1f} s, {tokens / sample_s:6.0f} tokens/s, same tokens as the first: {same}",
                  flush=True)
            if not same:
                sys.exit("the two modes drew different tokens")

    medians = {}
    for in_process, runs in figures.items():
        start = statistics.median(r[0] for r in runs)
        sample = statistics.median(r[1] for r in runs)
        rate = statistics.median(r[2] / r[1] for r in runs)
        medians[in_process] = (start, sample, rate)
        print(f"{'in-process ' if in_process else 'own process'}: median start {start:.1f} s, "
              f"sampling {sample:.1f} s, {rate:.0f} tokens/s")
    own, inproc = medians[False], medians[True]
    print(f"sampling seconds own/in-process: {own[1] / inproc[1]:.2f}")
    print(f"engine start own/in-process: {own[0] / inproc[0]:.1f}")


if __name__ == "__main__":
    main()
