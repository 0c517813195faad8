"""Sampling a round's candidates on vLLM's CPU engine: the two settings Flywheel changed, side by side.

Over the demo model (`data/models/base`, from `make demo` or `flywheel bootstrap`), a round's
sampling as the loop does it (train problems, n=8, temperature 0.8, the demo's 64-token budget,
per-request seeds, log-probabilities returned), in four modes that alternate `--repeats` times in
one run, each on a fresh in-process engine in a fresh Python process (a process that has held
several engines and their outputs samples slower, and the figures would drift with the order):

- `before`: 256 sequences a step (vLLM's CPU default) and vLLM detokenizing every sample and every
  returned log-probability's token as it goes (`SamplingParams.detokenize=True`, vLLM's default);
- `1024 seqs`: 1,024 sequences a step, vLLM detokenizing;
- `no detok`: 256 sequences a step, token ids only, texts decoded in one batch at the end;
- `now`: both (`VLLMBackend.generate` with the default `EngineConfig`, what the loop runs).

Every mode must return the same texts, token ids and log-probabilities as the first run (checked
by a digest of them).
Prints each run, the median seconds per mode and the ratios before / each.

Usage: python bench/sampling_engine.py [--repeats 3] [--prompts 1000] [--n 8] [--model DIR]
Last line: `sampling seconds before/now: <x>`.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from demo_requests import DEMO_MODEL, demo_requests, require_model

from schemas.generation import EngineConfig, SamplingConfig
from tasks.generation.generate import VLLMBackend
Sample = tuple[str, list[int], list[float]]
MODES = {"before": (256, True), "1024 seqs": (1024, True), "no detok": (256, False), "now": (None, False)}


def sample_detokenized(backend: VLLMBackend, prompts: list[str], sampling: SamplingConfig,
                       seeds: list[int]) -> list[Sample]:
    """The samples as the backend drew them before: vLLM's own step-by-step detokenization."""
    from vllm import SamplingParams

    params = [SamplingParams(n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
                             max_tokens=sampling.max_tokens, seed=seed, logprobs=1) for seed in seeds]
    with backend._engine_threads():
        outputs = backend.llm.generate(prompts, params, use_tqdm=False)
    samples = []
    for output in outputs:
        for sample in sorted(output.outputs, key=lambda o: o.index):
            ids = list(sample.token_ids)
            samples.append((sample.text, ids, [float(p[t].logprob) for t, p in zip(ids, sample.logprobs)]))
    return samples


def run_once(model: Path, mode: str, prompts: list[str], seeds: list[int], sampling: SamplingConfig
             ) -> tuple[float, list[Sample]]:
    """(sampling seconds, samples) on a fresh engine in one mode."""
    max_num_seqs, detokenize = MODES[mode]
    backend = VLLMBackend(model, EngineConfig(backend="vllm", in_process=True, max_num_seqs=max_num_seqs))
    try:
        backend.generate(prompts[:32], sampling, seeds[:32])  # warm up
        began = time.perf_counter()
        if detokenize:
            samples = sample_detokenized(backend, prompts, sampling, seeds)
        else:
            samples = [(c.text, c.token_ids, c.token_logprobs or [])
                       for group in backend.generate(prompts, sampling, seeds) for c in group]
        return time.perf_counter() - began, samples
    finally:
        backend.close()


def child(args: argparse.Namespace) -> None:
    """One timed run in this process: prints a JSON line (seconds, tokens, digest of the samples)."""
    prompts, seeds = demo_requests("train", 0, args.prompts, 0)
    sampling = SamplingConfig(n=args.n, temperature=0.8, max_tokens=64, seed=0)
    took, samples = run_once(args.model, args.child, prompts, seeds, sampling)
    digest = hashlib.sha256(repr(samples).encode()).hexdigest()[:16]
    print(json.dumps({"seconds": took, "tokens": sum(len(s[1]) for s in samples), "digest": digest}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--model", type=Path, default=DEMO_MODEL, help="a model folder (default: the demo's base)")
    parser.add_argument("--child", choices=list(MODES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    require_model(args.model)
    if args.child:
        child(args)
        return
    print(f"{args.prompts} prompts x n={args.n}, {args.repeats} runs per mode, alternating")

    seconds: dict[str, list[float]] = {mode: [] for mode in MODES}
    first: str | None = None
    for repeat in range(args.repeats):
        for mode in MODES:
            command = [sys.executable, __file__, "--child", mode, "--prompts", str(args.prompts),
                       "--n", str(args.n), "--model", str(args.model)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"mode {mode!r} failed:\n{done.stderr[-2000:]}")
            run = json.loads(done.stdout.strip().splitlines()[-1])
            first = first or run["digest"]
            same = run["digest"] == first
            seconds[mode].append(run["seconds"])
            print(f"  {mode:>9} #{repeat}: {run['seconds']:5.1f} s, {run['tokens'] / run['seconds']:6.0f} tokens/s, "
                  f"same samples as the first: {same}", flush=True)
            if not same:
                sys.exit(f"mode {mode!r} returned other samples")

    medians = {mode: statistics.median(runs) for mode, runs in seconds.items()}
    for mode, median in medians.items():
        print(f"{mode:>9}: median {median:.1f} s")
    for mode in ("1024 seqs", "no detok", "now"):
        print(f"sampling seconds before/{mode}: {medians['before'] / medians[mode]:.2f}")


if __name__ == "__main__":
    main()
