"""Training the learned reward models from labelled candidates.

- ORM: a one-label sequence classifier trained with binary cross-entropy on verified candidates,
  correct (1) vs incorrect (0), balanced by down-sampling the larger class. A domain with no
  verifier at inference time can then still filter by the ORM. With the `pairwise` objective it
  is trained instead on every (correct, incorrect) pair of one prompt's samples with the
  Bradley-Terry loss -log sigmoid(r_correct - r_incorrect): only the order within a prompt counts.
- PRM: a one-label token classifier trained with binary cross-entropy on soft step labels
  (Math-Shepherd), read at each step's last token; with `hard` labels, 1 where any rollout
  reached the reference and 0 where none did.

Both start from a causal-LM folder (for the demo, the policy's own base model: it already reads the
task) with a fresh one-unit head, and train with AdamW, warm-up and cosine decay, like finetuning.
A trained folder is saved atomically with a model card; its id is a hash of the start model, the
examples and the settings, so a rerun with the same inputs reuses it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from tasks.generation.generate import model_id_for
from tasks.lake import ids
from tasks.runtime.faults import crash_point
from tasks.scoring.reward_model import ORM_KIND, PRM_KIND, encode_candidate, pad_batch
from tasks.training.checkpoints import CheckpointConflict, refuse_other_checkpoint, write_model_card
from tasks.training.finetune import cosine_with_warmup

logger = logging.getLogger("flywheel.reward_train")


@dataclass(frozen=True)
class RMExample:
    """One training example: prompt text, response, and its targets (one for an ORM, one per step for a PRM)."""

    key: str
    prompt: str
    response: str
    targets: tuple[float, ...]


@dataclass(frozen=True)
class RMTrainConfig:
    """Optimiser and schedule settings of reward-model training."""

    epochs: float = 3.0
    batch_size: int = 32
    learning_rate: float = 1e-3
    warmup_steps: int = 10
    weight_decay: float = 0.0
    max_steps: int | None = None
    seed: int = 0
    device: str = "auto"
    objective: str = "pointwise"  # ORM: "pairwise" trains on consecutive (better, worse) example pairs

    def __post_init__(self) -> None:
        if self.objective not in ("pointwise", "pairwise"):
            raise ValueError(f"objective must be pointwise or pairwise, got {self.objective!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be a positive number, got {self.learning_rate}")
        if self.max_steps is None and not self.epochs > 0:
            raise ValueError(f"epochs must be positive, got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {self.max_steps}")


@dataclass
class RMTrainResult:
    """What a reward-model training run did."""

    model_id: str
    path: str
    examples: int
    steps: int
    final_loss: float
    mean_loss_last_10pct: float
    seconds: float
    reused: bool


def balanced_orm_examples(candidates: Sequence[dict], correct: dict[str, bool], prompts: dict[str, str],
                          seed: int = 0) -> list[RMExample]:
    """ORM examples from verified candidates, with the larger class down-sampled to the smaller's size.

    `correct` maps candidate_id to the verifier's outcome (candidates without one are left out);
    `prompts` maps prompt_id to the formatted prompt text.
    """
    positives = [c for c in candidates if correct.get(c["candidate_id"]) is True]
    negatives = [c for c in candidates if correct.get(c["candidate_id"]) is False]
    if not positives or not negatives:
        raise ValueError(f"an ORM needs correct and incorrect candidates; got {len(positives)} correct "
                         f"and {len(negatives)} incorrect")
    size = min(len(positives), len(negatives))
    rng = random.Random(seed)
    chosen = rng.sample(positives, size) + rng.sample(negatives, size)
    chosen.sort(key=lambda c: c["candidate_id"])
    return [RMExample(c["candidate_id"], prompts[c["prompt_id"]], c["text"],
                      (1.0 if correct[c["candidate_id"]] else 0.0,)) for c in chosen]


def pairwise_orm_examples(candidates: Sequence[dict], correct: dict[str, bool],
                          prompts: dict[str, str]) -> list[RMExample]:
    """ORM examples for the pairwise objective: every (correct, incorrect) pair of one prompt's
    candidates, flattened as consecutive (correct, incorrect) examples, in candidate-id order."""
    by_prompt: dict[str, tuple[list[dict], list[dict]]] = {}
    for c in sorted(candidates, key=lambda c: c["candidate_id"]):
        outcome = correct.get(c["candidate_id"])
        if outcome is not None:
            by_prompt.setdefault(c["prompt_id"], ([], []))[0 if outcome else 1].append(c)
    examples = []
    for prompt_id in sorted(by_prompt):
        right, wrong = by_prompt[prompt_id]
        for a in right:
            for b in wrong:
                examples += [RMExample(c["candidate_id"], prompts[prompt_id], c["text"], (target,))
                             for c, target in ((a, 1.0), (b, 0.0))]
    if not examples:
        raise ValueError("a pairwise ORM needs a prompt with both a correct and an incorrect candidate; none has")
    return examples


def prm_examples(candidates: Sequence[dict], step_labels: dict[str, Sequence[float]],
                 prompts: dict[str, str], hard: bool = False) -> list[RMExample]:
    """PRM examples: candidates with step labels (e.g. Math-Shepherd soft labels), at least one step;
    with `hard`, each label becomes 1.0 when above 0, else 0.0."""
    examples = []
    for c in sorted(candidates, key=lambda c: c["candidate_id"]):
        labels = step_labels.get(c["candidate_id"])
        if labels:
            examples.append(RMExample(c["candidate_id"], prompts[c["prompt_id"]], c["text"],
                                      tuple(float(x > 0) if hard else float(x) for x in labels)))
    if not examples:
        raise ValueError("a PRM needs candidates with step labels; none have any")
    return examples


def _encode(tokenizer: Any, examples: Sequence[RMExample], kind: str, limit: int | None,
            step_separator: str) -> list[tuple[list[int], list[int]]]:
    encoded = []
    for example in examples:
        token_ids, ends = encode_candidate(tokenizer, example.prompt, example.response, step_separator)
        if limit is not None and len(token_ids) > limit:
            raise ValueError(f"example {example.key} has {len(token_ids)} tokens, over the model's context of {limit}")
        if kind == PRM_KIND and len(ends) != len(example.targets):
            raise ValueError(f"example {example.key} has {len(ends)} steps but {len(example.targets)} step labels")
        encoded.append((token_ids, ends))
    return encoded


def fit_reward_model(model: Any, tokenizer: Any, examples: Sequence[RMExample], kind: str,
                     config: RMTrainConfig, step_separator: str = "\n",
                     progress: Callable[[int, int, float], None] | None = None) -> tuple[int, list[float], float]:
    """Train `model` in place with BCE on the examples' targets; returns (steps, losses, seconds)."""
    import torch
    import torch.nn.functional as F

    if not examples:
        raise ValueError("no reward-model training examples")
    device = config.device if config.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(config.seed)
    if device == "cpu":
        torch.set_num_threads(max(1, os.cpu_count() or 1))
    pairwise = config.objective == "pairwise"
    if pairwise and (kind != ORM_KIND or len(examples) % 2):
        raise ValueError("the pairwise objective trains an ORM on (better, worse) example pairs")
    model.to(device).train()
    encoded = _encode(tokenizer, examples, kind, getattr(model.config, "max_position_embeddings", None),
                      step_separator)
    units = len(encoded) // 2 if pairwise else len(encoded)  # what an epoch and a batch count
    per_batch = max(1, config.batch_size // 2) if pairwise else config.batch_size
    steps_per_epoch = math.ceil(units / per_batch)
    total_steps = config.max_steps or max(1, round(config.epochs * steps_per_epoch))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate,
                                  weight_decay=config.weight_decay, betas=(0.9, 0.95))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, cosine_with_warmup(config.warmup_steps, total_steps, min_ratio=0.1))
    generator = torch.Generator().manual_seed(config.seed)
    losses: list[float] = []
    order: list[int] = []
    started = time.perf_counter()
    for step in range(total_steps):
        if len(order) < per_batch:
            order += torch.randperm(units, generator=generator).tolist()
        batch, order = order[:per_batch], order[per_batch:]
        if pairwise:  # pair p is examples 2p (better) and 2p + 1 (worse)
            batch = [i for p in batch for i in (2 * p, 2 * p + 1)]
        input_ids, attention = pad_batch([encoded[i][0] for i in batch], tokenizer.pad_token_id)
        logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits.float()
        if pairwise:
            rewards = logits[:, 0]
            loss = F.softplus(rewards[1::2] - rewards[0::2]).mean()  # -log sigmoid(r_better - r_worse)
        else:
            if kind == ORM_KIND:
                predicted = logits[:, 0]
                targets = torch.tensor([examples[i].targets[0] for i in batch], device=device)
            else:
                rows = torch.tensor([r for r, i in enumerate(batch) for _ in encoded[i][1]], device=device)
                cols = torch.tensor([e for i in batch for e in encoded[i][1]], device=device)
                predicted = logits[rows, cols, 0]
                targets = torch.tensor([t for i in batch for t in examples[i].targets], device=device)
            loss = F.binary_cross_entropy_with_logits(predicted, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        crash_point("reward-train-step")
        losses.append(float(loss.item()))
        if progress is not None:
            progress(step + 1, total_steps, losses[-1])
        if (step + 1) % 50 == 0 or step + 1 == total_steps:
            logger.info("%s RM step %d/%d loss %.4f", kind, step + 1, total_steps, losses[-1])
    model.eval()
    return total_steps, losses, time.perf_counter() - started


def train_reward_model(start_path: str | os.PathLike[str], kind: str, examples: Sequence[RMExample],
                       config: RMTrainConfig, output: str | os.PathLike[str], *, prefix: str,
                       step_separator: str = "\n", extra_card: dict | None = None) -> RMTrainResult:
    """Train an ORM (kind 'sequence') or PRM (kind 'token') from a causal-LM folder and save it.

    Reuses `output` when its card already has the id these inputs hash to.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if kind not in (ORM_KIND, PRM_KIND):
        raise ValueError(f"unknown reward-model kind {kind!r} (use {ORM_KIND!r} or {PRM_KIND!r})")
    start_id = model_id_for(start_path)
    model_id = f"{prefix}-" + ids.content_hash("reward-model", kind, start_id, asdict(config), step_separator,
                                               [(e.key, e.prompt, e.targets) for e in examples])
    output = Path(output)
    inputs = {"start model": start_id, "kind": kind, "config": asdict(config), "step separator": step_separator,
              "examples": ids.content_hash("examples", [(e.key, e.prompt, e.targets) for e in examples])}
    refuse_other_checkpoint(output, model_id, inputs, f"{kind} reward model")
    card_path = output / "flywheel_card.json"
    if card_path.is_file():
        card = json.loads(card_path.read_text())
        if card.get("model_id") == model_id:
            train = card["train"]
            return RMTrainResult(model_id, str(output.resolve()), len(examples), train["steps"], train["final_loss"],
                                 train["mean_loss_last_10pct"], train["seconds"], reused=True)
    loader = AutoModelForSequenceClassification if kind == ORM_KIND else AutoModelForTokenClassification
    tokenizer = AutoTokenizer.from_pretrained(start_path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    # The fresh head's initialisation and any dropout draw from torch's global generator: seed it
    # (in a forked state, leaving the caller's untouched), so the same inputs give the same weights
    # in any process, as the model id (a hash of the inputs) promises, e.g. after a crash and resume.
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the fresh head's "newly initialized weights" notice is expected
        try:
            model = loader.from_pretrained(start_path, num_labels=1)
        finally:
            hf_logging.set_verbosity(verbosity)
        model.config.pad_token_id = tokenizer.pad_token_id
        steps, losses, seconds = fit_reward_model(model, tokenizer, examples, kind, config, step_separator)
    tail = losses[-max(1, len(losses) // 10):]
    result = RMTrainResult(model_id, str(output.resolve()), len(examples), steps, losses[-1],
                           sum(tail) / len(tail), seconds, reused=False)
    staging = output.with_name(f".{output.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    card = {"model_id": model_id, "kind": "orm" if kind == ORM_KIND else "prm", "start_model_id": start_id,
            "examples": len(examples), "config": asdict(config),
            "train": {k: v for k, v in asdict(result).items() if k not in ("path", "reused", "model_id")},
            "inputs": inputs, **(extra_card or {})}
    write_model_card(staging, f"Flywheel {card['kind'].upper()}", card)
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        staging.rename(output)  # never replaces a folder: a reward model is not deleted to make room
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise CheckpointConflict(f"cannot save the reward model: {output} already exists "
                                 f"({error.strerror}); it is left as it is") from None
    return result


def labelling_subset(candidates: list[dict], limit: int | None) -> list[dict]:
    """A deterministic subset of whole prompt groups, about `limit` candidates (hash order of prompts)."""
    if limit is None or limit >= len(candidates):
        return candidates
    by_prompt: dict[str, list[dict]] = {}
    for c in candidates:
        by_prompt.setdefault(c["prompt_id"], []).append(c)
    order = sorted(by_prompt, key=lambda p: hashlib.sha256(p.encode()).hexdigest())
    chosen: list[dict] = []
    for prompt_id in order:
        if len(chosen) >= limit:
            break
        chosen += by_prompt[prompt_id]
    return chosen


def rm_train_config(stage: Any) -> RMTrainConfig:
    """The RMTrainConfig of a config's training settings (`schemas.reward_models.RMTrainStage`)."""
    return RMTrainConfig(epochs=stage.epochs, batch_size=stage.batch_size, learning_rate=stage.learning_rate,
                         warmup_steps=stage.warmup_steps, seed=stage.seed, objective=stage.objective)


def reward_model_examples(kind: str, stage: Any, candidates: Sequence[dict], prompts: dict[str, str],
                          outcomes: dict[str, bool] | None = None,
                          step_labels: dict[str, Sequence[float]] | None = None) -> list[RMExample]:
    """The training examples of an ORM (from verifier `outcomes`) or a PRM (from Math-Shepherd
    `step_labels`) under a config's training settings (`stage`: its objective and labels)."""
    if kind == ORM_KIND:
        if stage.objective == "pairwise":
            return pairwise_orm_examples(candidates, outcomes or {}, prompts)
        return balanced_orm_examples(candidates, outcomes or {}, prompts, stage.seed)
    return prm_examples(candidates, step_labels or {}, prompts, hard=stage.labels == "hard")


def prompt_texts(fmt: Any, base_model: str, candidates: Sequence[dict]) -> dict[str, str]:
    """Each candidate's prompt as the reward models read it: `fmt` (a PromptFormat), with the base
    model's tokenizer for a chat template."""
    from tasks.generation.generate import format_prompt

    tokenizer = None
    if fmt.kind == "chat":
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(base_model)
    return {c["prompt_id"]: format_prompt(c["problem"], fmt, tokenizer) for c in candidates}
