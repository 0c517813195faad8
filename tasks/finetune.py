"""Supervised finetuning of a causal LM on (prompt, completion, weight) examples.

Loss is on completion tokens only (prompt and padding are masked), each example's mean token loss
is weighted by its sample weight. The same loop pretrains the tiny base model (bootstrap) and
finetunes each round's model; on a GPU it runs in bf16 autocast.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

logger = logging.getLogger("flywheel.finetune")


@dataclass(frozen=True)
class Example:
    """One training example: the formatted prompt, the completion to learn, and its weight."""

    prompt: str
    completion: str
    weight: float = 1.0


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser and schedule settings (one epoch = one pass over the examples)."""

    epochs: float = 3.0
    max_steps: int | None = None
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1
    max_length: int = 256
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "auto"
    bf16: bool = True  # used only on CUDA
    log_every: int = 25

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.learning_rate <= 0 or not math.isfinite(self.learning_rate):
            raise ValueError(f"learning_rate must be a positive number, got {self.learning_rate}")
        if self.max_steps is None and self.epochs <= 0:
            raise ValueError(f"epochs must be positive, got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {self.max_steps}")


@dataclass
class TrainResult:
    """What a training run did."""

    steps: int
    examples: int
    final_loss: float
    mean_loss_last_10pct: float
    seconds: float
    device: str
    losses: list[float] = field(default_factory=list)

    def summary(self) -> dict:
        """The result without the per-step loss curve."""
        out = asdict(self)
        out.pop("losses")
        return out


def pick_device(requested: str = "auto") -> str:
    """'cuda' when requested or available, else 'cpu'."""
    import torch

    if requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def encode_examples(tokenizer, examples: Sequence[Example], max_length: int):
    """Token ids and completion masks per example; completions end with EOS; too long → error."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token: completions could never end")
    prompts = tokenizer([e.prompt for e in examples], add_special_tokens=False)["input_ids"]
    completions = tokenizer([e.completion for e in examples], add_special_tokens=False)["input_ids"]
    encoded = []
    for index, (p, c) in enumerate(zip(prompts, completions)):
        ids = p + c + [tokenizer.eos_token_id]
        if len(ids) > max_length:
            raise ValueError(f"example {index} has {len(ids)} tokens, over max_length {max_length}")
        encoded.append((ids, len(p)))
    return encoded


def train(
    model,
    tokenizer,
    examples: Sequence[Example],
    config: TrainConfig,
    progress: Callable[[int, int, float], None] | None = None,
) -> TrainResult:
    """Train `model` in place on `examples`; returns the step count and losses."""
    import torch

    if not examples:
        raise ValueError("no training examples")
    for index, example in enumerate(examples):
        if not (math.isfinite(example.weight) and example.weight >= 0):
            raise ValueError(f"example {index} has an invalid weight {example.weight}")
    if sum(e.weight for e in examples) <= 0:
        raise ValueError("every example has weight 0")

    device = pick_device(config.device)
    use_bf16 = device.startswith("cuda") and config.bf16
    torch.manual_seed(config.seed)
    if device == "cpu":
        torch.set_num_threads(max(1, os.cpu_count() or 1))
    model.to(device)
    model.train()

    encoded = encode_examples(tokenizer, examples, config.max_length)
    weights = torch.tensor([e.weight for e in examples], dtype=torch.float32)
    steps_per_epoch = math.ceil(len(encoded) / config.batch_size)
    total_steps = config.max_steps or max(1, round(config.epochs * steps_per_epoch))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate,
                                  weight_decay=config.weight_decay, betas=(0.9, 0.95))
    schedule = _cosine_with_warmup(config, total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    generator = torch.Generator().manual_seed(config.seed)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    losses: list[float] = []
    order: list[int] = []
    start = time.perf_counter()
    for step in range(total_steps):
        if len(order) < config.batch_size:
            order += torch.randperm(len(encoded), generator=generator).tolist()
        batch, order = order[: config.batch_size], order[config.batch_size:]
        input_ids, labels, attention = _collate([encoded[i] for i in batch], pad)
        input_ids, labels, attention = input_ids.to(device), labels.to(device), attention.to(device)
        batch_weights = weights[batch].to(device)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_bf16):
            logits = model(input_ids=input_ids, attention_mask=attention).logits
        loss = _weighted_completion_loss(logits.float(), labels, batch_weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.item()))
        if progress is not None:
            progress(step + 1, total_steps, losses[-1])
        if config.log_every and ((step + 1) % config.log_every == 0 or step + 1 == total_steps):
            logger.info("step %d/%d loss %.4f", step + 1, total_steps, losses[-1])
    model.eval()
    tail = losses[-max(1, len(losses) // 10):]
    return TrainResult(
        steps=total_steps, examples=len(examples), final_loss=losses[-1],
        mean_loss_last_10pct=sum(tail) / len(tail), seconds=time.perf_counter() - start,
        device=device, losses=losses,
    )


def _cosine_with_warmup(config: TrainConfig, total_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine
    return factor


def _collate(items: list[tuple[list[int], int]], pad: int):
    import torch

    width = max(len(ids) for ids, _ in items)
    input_ids = torch.full((len(items), width), pad, dtype=torch.long)
    labels = torch.full((len(items), width), -100, dtype=torch.long)
    attention = torch.zeros((len(items), width), dtype=torch.long)
    for row, (ids, prompt_len) in enumerate(items):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention[row, : len(ids)] = 1
        labels[row, prompt_len: len(ids)] = torch.tensor(ids[prompt_len:])
    return input_ids, labels, attention


def _weighted_completion_loss(logits, labels, weights):
    """Mean over examples (weighted) of each example's mean next-token loss on its completion."""
    import torch.nn.functional as F

    shift_logits = logits[:, :-1, :]
    shift_labels = labels[:, 1:]
    token_loss = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1),
        ignore_index=-100, reduction="none",
    ).view(shift_labels.shape)
    mask = (shift_labels != -100).float()
    per_example = (token_loss * mask).sum(1) / mask.sum(1).clamp(min=1)
    return (per_example * weights).sum() / weights.sum().clamp(min=1e-8)


def write_model_card(folder: Path, title: str, sections: dict) -> Path:
    """Write README.md (human) and flywheel_card.json (machine) describing a checkpoint."""
    folder = Path(folder)
    lines = [f"# {title}", ""]
    for key, value in sections.items():
        rendered = json.dumps(value, indent=2, default=str) if isinstance(value, (dict, list)) else value
        lines += [f"## {key}", "", f"```\n{rendered}\n```" if isinstance(value, (dict, list)) else str(rendered), ""]
    (folder / "README.md").write_text("\n".join(lines), encoding="utf-8")
    card = folder / "flywheel_card.json"
    card.write_text(json.dumps(sections, indent=2, default=str), encoding="utf-8")
    return card


def selected_examples(lake, iteration: int, policy_hash: str, model_id: str,
                      sampling_hash: str | None = None) -> list[dict]:
    """Kept samples of one selection of one round's candidates: id, weight, completion, problem."""
    from tasks.sql import connect

    return connect(lake).execute(
        """SELECT s.candidate_id, s.weight, c.text, p.problem
           FROM selections s JOIN candidates c USING (candidate_id) JOIN prompts p ON p.prompt_id = c.prompt_id
           WHERE s.iteration = ? AND s.policy_hash = ? AND c.model_id = ?
             AND (? IS NULL OR c.sampling_hash = ?)
           ORDER BY s.candidate_id""", [iteration, policy_hash, model_id, sampling_hash, sampling_hash]
    ).to_arrow_table().to_pylist()


def finetune_on_selection(lake, *, iteration: int, source_model_id: str, policy_hash: str, start_path: str,
                          start_model_id: str, output: Path, stage, fmt,
                          sampling_hash: str | None = None) -> tuple[Path, str, bool]:
    """Train the next model on a selection and register it; reuse it when the inputs match.

    The model id is a hash of its inputs (start model, kept samples and weights, settings), so a
    rerun finds the finished checkpoint instead of training again. Returns (path, model_id, reused).
    """
    from datetime import datetime, timezone

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tasks import ids
    from tasks.generate import format_prompt

    rows = selected_examples(lake, iteration, policy_hash, source_model_id, sampling_hash)
    if not rows:
        raise ValueError(f"selection {policy_hash} kept no samples in iteration {iteration}: nothing to finetune on")
    input_hash = ids.content_hash("finetune", start_model_id, [(r["candidate_id"], r["weight"]) for r in rows],
                                  stage.model_dump(), fmt.model_dump())
    model_id = f"ft-{input_hash}"
    output = Path(output)
    card_path = output / "flywheel_card.json"
    if card_path.is_file() and json.loads(card_path.read_text()).get("model_id") == model_id:
        return output.resolve(), model_id, True

    tokenizer = AutoTokenizer.from_pretrained(start_path)
    model = AutoModelForCausalLM.from_pretrained(start_path)
    examples = [Example(format_prompt(r["problem"], fmt, tokenizer), r["text"],
                        float(r["weight"]) if stage.use_weights else 1.0) for r in rows]
    config = TrainConfig(epochs=stage.epochs, batch_size=stage.batch_size, learning_rate=stage.learning_rate,
                         warmup_steps=stage.warmup_steps, max_length=stage.max_length, seed=stage.seed)
    result = train(model, tokenizer, examples, config)
    staging = output.with_name(f".{output.name}.staging")
    import shutil

    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    card = {
        "model_id": model_id, "kind": "finetuned", "parent_id": source_model_id, "start_model_id": start_model_id,
        "iteration": iteration + 1, "selection_hash": policy_hash, "examples": len(examples),
        "train": result.summary(), "finetune": stage.model_dump(),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_model_card(staging, f"Flywheel checkpoint, iteration {iteration + 1}", card)
    shutil.rmtree(output, ignore_errors=True)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(output)
    lake.write("models", [{
        "model_id": model_id, "parent_id": source_model_id, "iteration": iteration + 1,
        "path": str(output.resolve()), "selection_hash": policy_hash, "num_examples": len(examples),
        "train_steps": result.steps, "train_loss": result.mean_loss_last_10pct,
        "train_seconds": result.seconds, "created_at": datetime.fromisoformat(card["created_at"]),
        "metrics": json.dumps(result.summary()),
    }], iteration=iteration + 1, shard=f"model-{model_id}")
    return output.resolve(), model_id, False
