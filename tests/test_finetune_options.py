"""Finetuning options: LoRA (merged into a plain checkpoint), the Accelerate loop, multi-process launch."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.prompts.demo_task import PROMPT_TEMPLATE, make_splits
from tasks.training.finetune import Example, TrainConfig, _Batcher, encode_examples, train
from tasks.training.finetune_launch import read_args, run

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")


def demo_examples(count: int) -> list[Example]:
    """Worked demo solutions with unequal weights (0.5, 1.5, 2.5, ...)."""
    chains = make_splits(200, 8, 8, seed=3).pretrain[:count]
    return [Example(PROMPT_TEMPLATE.format(problem=c.problem), c.solution, 0.5 + index % 3)
            for index, c in enumerate(chains)]


def write_args(folder: Path, model: Path, examples: list[Example], output: Path, train_fields: dict,
               fmt: str = "jsonl") -> Path:
    """An examples file and the launcher's JSON argument file in `folder`."""
    rows = [{"prompt": e.prompt, "completion": e.completion, "weight": e.weight} for e in examples]
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        data = folder / "examples.parquet"
        pq.write_table(pa.Table.from_pylist(rows), data)
    else:
        data = folder / "examples.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    args = folder / f"{output.name}.json"
    args.write_text(json.dumps({"model": str(model), "examples": str(data), "output": str(output),
                                "train": train_fields}), encoding="utf-8")
    return args


def load_weights(folder: Path) -> dict:
    """The state dict of a saved model folder, loaded by transformers alone."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder).state_dict()


def changed(before: dict, after: dict, part: str) -> set[bool]:
    """For every weight whose name contains `part`: whether it changed."""
    import torch

    return {not torch.equal(before[name], after[name]) for name in before if part in name}


@pytest.fixture
def model_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the session's tiny model folder."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "start"))


def test_lora_trains_adapters_only_and_saves_a_plain_merged_model(model_copy: Path, tmp_path: Path):
    output = tmp_path / "lora-model"
    train_fields = {"max_steps": 30, "batch_size": 4, "learning_rate": 1e-2, "warmup_steps": 3, "seed": 0,
                    "device": "cpu", "log_every": 0, "lora_r": 8, "lora_alpha": 16}
    result = run(read_args(write_args(tmp_path, model_copy, demo_examples(4), output, train_fields)))

    assert result.trainable_parameters / result.total_parameters < 0.05
    assert sum(result.losses[-5:]) / 5 < 0.8 * sum(result.losses[:5]) / 5
    assert not any((output / name).exists() for name in ADAPTER_FILES)
    before, after = load_weights(model_copy), load_weights(output)
    assert set(after) == set(before)  # no lora_A / lora_B / base_layer names
    for projection in ("q_proj", "k_proj", "v_proj", "o_proj"):
        assert changed(before, after, projection) == {True}
    for frozen in ("embed_tokens", "mlp", "norm"):
        assert changed(before, after, frozen) == {False}
    card = json.loads((output / "flywheel_card.json").read_text())
    assert card["lora"] == {"used": True, "r": 8, "alpha": 16, "dropout": 0.0,
                            "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
    assert card["train"]["trainable_parameters"] == result.trainable_parameters


@pytest.mark.parametrize(("field", "value"), [
    ("lora_r", 0), ("lora_r", -4), ("lora_r", 2.5), ("lora_alpha", 0), ("lora_dropout", 1.0),
    ("lora_dropout", -0.1), ("lora_target_modules", ()), ("lora_target_modules", "q_proj"),
    ("lora_target_modules", ("q_proj", "")),
])
def test_bad_lora_settings_name_the_field(field: str, value):
    with pytest.raises(ValueError, match=f"^{field} must"):
        TrainConfig(**{field: value})


def test_full_finetuning_card_says_no_lora(model_copy: Path, tmp_path: Path):
    output = tmp_path / "full-model"
    run(read_args(write_args(tmp_path, model_copy, demo_examples(4), output,
                             {"max_steps": 2, "batch_size": 4, "device": "cpu"}, fmt="parquet")))
    card = json.loads((output / "flywheel_card.json").read_text())
    assert card["lora"] == {"used": False} and card["train"]["processes"] == 1
    assert card["train"]["trainable_parameters"] == card["train"]["total_parameters"]


def reference_losses(model, tokenizer, examples: list[Example], config: TrainConfig) -> list[float]:
    """The loop as it was before Accelerate, in plain torch: seeded order, weighted completion loss."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(config.seed)
    model.train()
    encoded = encode_examples(tokenizer, examples, config.max_length)
    weights = torch.tensor([e.weight for e in examples])
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, betas=(0.9, 0.95),
                                  weight_decay=config.weight_decay)

    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = min(1.0, (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps))
        return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    generator = torch.Generator().manual_seed(config.seed)
    order: list[int] = []
    losses = []
    for _ in range(config.max_steps):
        if len(order) < config.batch_size:
            order += torch.randperm(len(encoded), generator=generator).tolist()
        batch, order = order[: config.batch_size], order[config.batch_size:]
        width = max(len(encoded[i][0]) for i in batch)
        ids = torch.full((len(batch), width), tokenizer.pad_token_id)
        labels = torch.full((len(batch), width), -100)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            tokens, prompt_len = encoded[i]
            ids[row, : len(tokens)] = torch.tensor(tokens)
            attention[row, : len(tokens)] = 1
            labels[row, prompt_len: len(tokens)] = torch.tensor(tokens[prompt_len:])
        logits = model(input_ids=ids, attention_mask=attention).logits
        token_loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1),
                                     ignore_index=-100, reduction="none").view(len(batch), -1)
        mask = (labels[:, 1:] != -100).float()
        per_example = (token_loss * mask).sum(1) / mask.sum(1)
        loss = (per_example * weights[batch]).sum() / weights[batch].sum()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    return losses


def test_full_finetuning_through_accelerate_matches_the_plain_loop_and_is_deterministic(tiny_model_dir: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = demo_examples(12)
    config = TrainConfig(max_steps=12, batch_size=5, warmup_steps=3, seed=7, device="cpu", log_every=0)
    runs = []
    for _ in range(2):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        runs.append((train(model, tokenizer, examples, config), model.state_dict()))
    (first, first_weights), (second, second_weights) = runs
    assert first.losses == second.losses
    assert all(torch.equal(first_weights[k], second_weights[k]) for k in first_weights)
    assert sum(first.losses[-3:]) < sum(first.losses[:3])
    assert first.trainable_parameters == first.total_parameters and first.processes == 1

    expected = reference_losses(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tokenizer, examples, config)
    assert first.losses == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_each_process_gets_a_distinct_shard_of_the_global_batch():
    import torch

    encoded = [([5] * (n + 3), 1) for n in range(10)]
    weights = torch.arange(1.0, 11.0)
    indices = [7, 2, 9, 0, 4]
    shards = [_Batcher(encoded, weights, 0, rank, 2)(indices, torch.device("cpu")) for rank in range(2)]
    assert [s.weights.tolist() for s in shards] == [[8.0, 10.0, 5.0], [3.0, 1.0]]
    assert all(float(s.total_weight) == float(weights[indices].sum()) for s in shards)
    assert [s.input_ids.shape[0] for s in shards] == [3, 2]


@pytest.mark.slow
def test_two_process_accelerate_launch_trains_together_and_writes_one_model(model_copy: Path, tmp_path: Path):
    """Two CPU processes over gloo (torchrun under `accelerate launch --multi_gpu`) with LoRA."""
    train_fields = {"max_steps": 8, "batch_size": 6, "learning_rate": 1e-2, "warmup_steps": 2, "seed": 0,
                    "device": "cpu", "log_every": 1, "lora_r": 4}
    examples = demo_examples(12)
    launched = tmp_path / "launched"
    args = write_args(tmp_path, model_copy, examples, launched, train_fields)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    accelerate = Path(sys.executable).parent / "accelerate"
    proc = subprocess.run(
        [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
         "-m", "tasks.training.finetune_launch", str(args)],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=150, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]

    card = json.loads((launched / "flywheel_card.json").read_text())
    assert card["train"]["processes"] == 2 and card["lora"]["used"]
    assert not any((launched / name).exists() for name in ADAPTER_FILES)
    assert not list(tmp_path.glob(".launched*"))  # one folder, no leftover staging
    after = load_weights(launched)
    assert changed(load_weights(model_copy), after, "q_proj") == {True}

    # one process on the same global batches gives the same losses and weights
    alone = tmp_path / "alone"
    single = run(read_args(write_args(tmp_path, model_copy, examples, alone, train_fields)))
    assert card["train"]["final_loss"] == pytest.approx(single.final_loss, rel=1e-4)
    alone_weights = load_weights(alone)
    assert all(float((after[k] - alone_weights[k]).abs().max()) < 1e-4 for k in after)


def test_cosine_with_warmup_rises_then_falls_to_its_floor() -> None:
    """The schedule finetuning and reward-model training share: linear warmup, cosine to min_ratio."""
    from tasks.training.finetune import cosine_with_warmup

    factor = cosine_with_warmup(warmup_steps=4, total_steps=14, min_ratio=0.1)
    assert [factor(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert factor(4) == 1.0 and math.isclose(factor(9), 0.55) and math.isclose(factor(14), 0.1)
    assert math.isclose(factor(100), 0.1)  # past the end: stays at the floor
    assert all(factor(s) > factor(s + 1) for s in range(4, 14))


def padded_tokens(batches: list[list[int]], lengths: list[int]) -> int:
    """Positions a run of `batches` computes: each batch padded to its longest example."""
    return sum(len(b) * max(lengths[i] for i in b) for b in batches)


def test_length_grouped_batches_see_every_example_once_a_pass_and_pad_less():
    import random

    from tasks.training.finetune import step_batches

    rng = random.Random(0)
    lengths = [rng.randint(10, 80) for _ in range(300)]
    config = TrainConfig(batch_size=8, batching="by_length", seed=3)
    steps = 3 * 300 // 8  # three passes; 300 is not a multiple of 8, so passes straddle batches
    grouped = list(step_batches(lengths, config, steps))
    assert len(grouped) == steps and all(len(b) == 8 for b in grouped)
    seen: dict[int, int] = {}
    for batch in grouped:
        for i in batch:
            seen[i] = seen.get(i, 0) + 1
    assert sorted(seen) == list(range(300))
    assert set(seen.values()) <= {2, 3} and sum(seen.values()) == steps * 8  # the leftovers wait a pass
    assert grouped == list(step_batches(lengths, config, steps))  # every process agrees
    assert grouped != list(step_batches(lengths, TrainConfig(batch_size=8, batching="by_length", seed=4), steps))
    shuffled = list(step_batches(lengths, TrainConfig(batch_size=8, seed=3), steps))
    assert padded_tokens(grouped, lengths) < 0.75 * padded_tokens(shuffled, lengths)
    few = list(step_batches([5, 9, 7], TrainConfig(batch_size=8, batching="by_length"), 4))
    assert len(few) == 4 and all(len(b) == 8 for b in few)  # fewer examples than a batch: repeats, as shuffle


def mean_completion_loss(model, tokenizer, examples: list[Example]) -> float:
    """The model's mean next-token loss over every example's completion tokens (no weights)."""
    import torch
    import torch.nn.functional as F

    total, count = 0.0, 0
    with torch.no_grad():
        for ids, prompt_len in encode_examples(tokenizer, examples, 256):
            logits = model(input_ids=torch.tensor([ids])).logits[0]
            targets = torch.tensor(ids[prompt_len:])
            total += F.cross_entropy(logits[prompt_len - 1: len(ids) - 1], targets, reduction="sum").item()
            count += len(targets)
    return total / count


def test_by_length_training_learns_and_is_deterministic(tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = demo_examples(10)
    config = TrainConfig(max_steps=30, batch_size=5, learning_rate=3e-3, warmup_steps=3, seed=7, device="cpu",
                         log_every=0, batching="by_length")
    models = [AutoModelForCausalLM.from_pretrained(tiny_model_dir) for _ in range(2)]
    before = mean_completion_loss(models[0], tokenizer, examples)
    runs = [train(model, tokenizer, examples, config) for model in models]
    assert runs[0].losses == runs[1].losses and runs[0].steps == 30
    shuffled = train(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tokenizer, examples,
                     TrainConfig(**{**dataclasses.asdict(config), "batching": "shuffle"}))
    assert shuffled.losses != runs[0].losses  # the loop trains on the grouped batches, not the shuffled ones
    assert mean_completion_loss(models[0], tokenizer, examples) < 0.8 * before  # 1.21 → 0.86 here
    with pytest.raises(ValueError, match="batching must be one of shuffle, by_length, got 'sorted'"):
        TrainConfig(batching="sorted")


def test_a_stage_at_its_defaults_hashes_as_before_the_later_settings_existed():
    from schemas.loop import FinetuneStage
    from tasks.lake.ids import content_hash
    from tasks.training.finetune import stage_fingerprint, train_config_for_stage

    stage = FinetuneStage(learning_rate=3e-4)
    before = {k: v for k, v in stage.model_dump(mode="json").items()
              if k not in ("token_weights", "token_weight_scorer", "token_weight_clip", "token_weight_min", "max_steps",
                           "batching", "merge_with_base")}
    assert stage_fingerprint(stage) == before
    merging = FinetuneStage(learning_rate=3e-4, merge_with_base=0.5)
    assert content_hash("finetune", stage_fingerprint(merging)) != content_hash("finetune", before)
    for changed_setting in ({"max_steps": 200}, {"batching": "by_length"}):
        other = FinetuneStage(learning_rate=3e-4, **changed_setting)
        assert content_hash("finetune", stage_fingerprint(other)) != content_hash("finetune", before)
        config = train_config_for_stage(other)
        assert all(getattr(config, k) == v for k, v in changed_setting.items())
