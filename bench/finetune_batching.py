"""Finetuning with batches grouped by length against plain shuffled batches, side by side.

Over a demo lake (after `make demo`): the kept samples of one round of one arm (default: round 0
of `configs/demo.yaml`) are the examples; the round's model is trained `--steps` optimiser steps
with `finetune.batching: shuffle` and with `by_length`, alternating the two `--repeats` times in
one run (each from the same start weights, the config's batch size, learning rate and seed).
Prints each run (seconds, seconds a step, positions computed per real token, the mean completion
loss over all the examples afterwards), then per mode the median seconds a step and the ratio
shuffle / by_length.

Usage: python bench/finetune_batching.py [--config configs/demo.yaml] [--iteration 0] [--steps 60]
       [--repeats 2]
Last line: `seconds a step shuffle/by_length: <x>`.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from schemas.config import load_config  # noqa: E402
from schemas.loop import LoopConfig  # noqa: E402
from tasks.generation.generate import format_prompt  # noqa: E402
from tasks.lake.store import Lake  # noqa: E402
from tasks.rounds.context import model_for_round, round_sampling_hash  # noqa: E402
from tasks.selection.select import policy_hash  # noqa: E402
from tasks.training.finetune import (Example, encode_examples, selected_examples, step_batches,  # noqa: E402
                                     train, train_config_for_stage)


def padding_factor(config, lengths: list[int], steps: int) -> float:
    """Positions the batches of a run compute (each padded to its longest) per real token."""
    computed = real = 0
    for batch in step_batches(lengths, config, steps):
        computed += len(batch) * max(lengths[i] for i in batch)
        real += sum(lengths[i] for i in batch)
    return computed / real


def mean_loss(model, tokenizer, examples: list[Example], max_length: int) -> float:
    """The model's mean next-token loss over every completion token of `examples`."""
    import torch
    import torch.nn.functional as F

    total = count = 0.0
    with torch.no_grad():
        for ids, prompt_len in encode_examples(tokenizer, examples, max_length):
            logits = model(input_ids=torch.tensor([ids])).logits[0]
            targets = torch.tensor(ids[prompt_len:])
            total += F.cross_entropy(logits[prompt_len - 1: len(ids) - 1], targets, reduction="sum").item()
            count += len(targets)
    return total / count


def main() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    parser.add_argument("--iteration", type=int, default=0)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    config = load_config(args.config, LoopConfig)
    model = model_for_round(config, args.iteration)
    rows = selected_examples(Lake(config.lake), args.iteration, policy_hash(config.selection), model.model_id,
                             round_sampling_hash(config))
    if not rows:
        sys.exit(f"no kept samples for {config.run_id} iteration {args.iteration} in {config.lake}: run it first")
    tokenizer = AutoTokenizer.from_pretrained(model.path)
    examples = [Example(format_prompt(r["problem"], config.generation.format, tokenizer), r["text"]) for r in rows]
    lengths = [len(ids) for ids, _ in encode_examples(tokenizer, examples, config.finetune.max_length)]
    base = dataclasses.replace(train_config_for_stage(config.finetune), max_steps=args.steps, log_every=0)
    print(f"{config.run_id} iteration {args.iteration}: {len(examples)} kept samples, {args.steps} steps of "
          f"{base.batch_size}, mean length {statistics.mean(lengths):.1f} tokens (max {max(lengths)})")
    per_step: dict[str, list[float]] = {"shuffle": [], "by_length": []}
    for repeat in range(args.repeats):
        for mode in per_step:
            train_config = dataclasses.replace(base, batching=mode)
            policy = AutoModelForCausalLM.from_pretrained(model.path)
            result = train(policy, tokenizer, examples, train_config)
            per_step[mode].append(result.seconds / result.steps)
            print(f"  run {repeat + 1} {mode:9s}: {result.seconds:6.1f} s, {per_step[mode][-1]:.3f} s a step, "
                  f"{padding_factor(train_config, lengths, args.steps):.2f} positions per token, loss after "
                  f"{mean_loss(policy, tokenizer, examples, base.max_length):.4f}")
    medians = {mode: statistics.median(values) for mode, values in per_step.items()}
    for mode, value in medians.items():
        print(f"median {mode}: {value:.3f} s a step")
    print(f"seconds a step shuffle/by_length: {medians['shuffle'] / medians['by_length']:.2f}")


if __name__ == "__main__":
    main()
