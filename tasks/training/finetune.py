"""Supervised finetuning of a causal LM on (prompt, completion, weight) examples.

Loss is on completion tokens only (prompt and padding are masked), each example's mean token loss
is weighted by its sample weight. The same loop pretrains the tiny base model (bootstrap) and
finetunes each round's model; on a GPU it runs in bf16 autocast.

The loop runs through Accelerate: in one plain process it behaves like a single-device loop, and
under `accelerate launch` (see tasks/training/finetune_launch.py) every process trains on its own shard of
each global batch. With `TrainConfig.lora_r` set, only LoRA adapters (peft) are trained and are
merged back into the weights afterwards, so a checkpoint is always a plain transformers folder.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence, get_args

from schemas.loop import Batching
from tasks.runtime.faults import crash_point
from tasks.training.checkpoints import refuse_other_checkpoint, save_checkpoint
from tasks.training.merge import merge_weights
from tasks.runtime.progress import progress_bar

if TYPE_CHECKING:
    import torch

logger = logging.getLogger("flywheel.finetune")


@dataclass(frozen=True)
class Example:
    """One training example: the formatted prompt, the completion to learn, and its weight.

    `spans`, when given, weighs the completion's tokens: (end, weight) pairs in order of `end`, a
    character offset into the completion; a token takes the weight of the first span that ends
    after its first character (tokens past the last span, EOS included, take the last weight).
    """

    prompt: str
    completion: str
    weight: float = 1.0
    spans: tuple[tuple[int, float], ...] | None = None


BATCHING = get_args(Batching)
LENGTH_WINDOW_BATCHES = 16  # by_length sorts windows of this many batches of a shuffled epoch


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser and schedule settings (one epoch = one pass over the examples)."""

    epochs: float = 3.0
    max_steps: int | None = None  # when set, exactly this many steps, whatever `epochs` says
    batch_size: int = 32
    # "shuffle": each batch a random draw; "by_length": examples of similar length share a batch
    # (less padding, the same examples each epoch; see `step_batches`)
    batching: str = "shuffle"
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
    lora_r: int | None = None  # None: full finetuning; else the LoRA rank
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.learning_rate <= 0 or not math.isfinite(self.learning_rate):
            raise ValueError(f"learning_rate must be a positive number, got {self.learning_rate}")
        if self.max_steps is None and self.epochs <= 0:
            raise ValueError(f"epochs must be positive, got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {self.max_steps}")
        if self.batching not in BATCHING:
            raise ValueError(f"batching must be one of {', '.join(BATCHING)}, got {self.batching!r}")
        self._check_lora()

    def _check_lora(self) -> None:
        if self.lora_r is not None and (not isinstance(self.lora_r, int) or self.lora_r < 1):
            raise ValueError(f"lora_r must be None (full finetuning) or an integer of at least 1, got {self.lora_r!r}")
        if not isinstance(self.lora_alpha, int) or self.lora_alpha < 1:
            raise ValueError(f"lora_alpha must be an integer of at least 1, got {self.lora_alpha!r}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        targets = self.lora_target_modules
        if isinstance(targets, str) or not targets or not all(isinstance(t, str) and t for t in targets):
            raise ValueError(f"lora_target_modules must be a non-empty list of module names, got {targets!r}")
        object.__setattr__(self, "lora_target_modules", tuple(targets))  # JSON gives lists

    def lora_card(self) -> dict:
        """Whether LoRA is used and its settings, for model cards."""
        if self.lora_r is None:
            return {"used": False}
        return {"used": True, "r": self.lora_r, "alpha": self.lora_alpha, "dropout": self.lora_dropout,
                "target_modules": list(self.lora_target_modules)}


@dataclass
class TrainResult:
    """What a training run did."""

    steps: int
    examples: int
    final_loss: float
    mean_loss_last_10pct: float
    seconds: float
    device: str
    processes: int = 1
    trainable_parameters: int = 0
    total_parameters: int = 0
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


def completion_token_weights(tokenizer, examples: Sequence[Example]) -> list[list[float]] | None:
    """Per example, one weight per completion token plus EOS (as `encode_examples` lays them out),
    from its `spans`; None when no example has spans. Needs a fast tokenizer (character offsets)."""
    if all(e.spans is None for e in examples):
        return None
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("token weights need a fast tokenizer (one that reports character offsets)")
    encoded = tokenizer([e.completion for e in examples], add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for example, offsets in zip(examples, encoded["offset_mapping"]):
        spans = example.spans or ((len(example.completion), 1.0),)
        weights, span = [], 0
        for start, _ in offsets:
            while span < len(spans) - 1 and start >= spans[span][0]:
                span += 1
            weights.append(spans[span][1])
        out.append(weights + [spans[-1][1]])
    return out


def train(
    model,
    tokenizer,
    examples: Sequence[Example],
    config: TrainConfig,
    progress: Callable[[int, int, float], None] | None = None,
) -> TrainResult:
    """Train `model` in place on `examples`; returns the step count and losses.

    Runs through an `accelerate.Accelerator`: one plain process trains alone; processes started by
    `accelerate launch` each train on their shard of every global batch (same losses, summed over
    processes). With `config.lora_r` set, LoRA adapters are trained and then merged into `model`'s
    weights, so `model` is a plain transformers model again afterwards. Only the main process logs
    and calls `progress`.
    """
    import torch

    _check_examples(examples)
    accelerator = _make_accelerator(config)
    if config.batch_size < accelerator.num_processes:
        raise ValueError(f"batch_size {config.batch_size} is smaller than the {accelerator.num_processes} processes")
    torch.manual_seed(config.seed)
    if accelerator.device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // accelerator.num_processes))
    trainable_model = _attach_lora(model, config) if config.lora_r is not None else model
    trainable_model.to(accelerator.device)
    trainable_model.train()
    trainable, total = _parameter_counts(trainable_model)

    encoded = encode_examples(tokenizer, examples, config.max_length)
    steps_per_epoch = math.ceil(len(encoded) / config.batch_size)
    total_steps = config.max_steps or max(1, round(config.epochs * steps_per_epoch))
    optimizer = torch.optim.AdamW([p for p in trainable_model.parameters() if p.requires_grad],
                                  lr=config.learning_rate, weight_decay=config.weight_decay, betas=(0.9, 0.95))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, cosine_with_warmup(config.warmup_steps, total_steps, config.min_lr_ratio))
    # the scheduler is not prepared: Accelerate would step it once per process per step
    prepared, optimizer = accelerator.prepare(trainable_model, optimizer)
    batch = _Batcher(encoded, torch.tensor([e.weight for e in examples], dtype=torch.float32),
                     _pad_id(tokenizer), accelerator.process_index, accelerator.num_processes,
                     completion_token_weights(tokenizer, examples))

    losses: list[float] = []
    start = time.perf_counter()
    for step, indices in enumerate(step_batches([len(ids) for ids, _ in encoded], config, total_steps)):
        losses.append(_train_step(accelerator, prepared, optimizer, batch(indices, accelerator.device), config))
        scheduler.step()
        if accelerator.is_main_process:
            _report(step + 1, total_steps, losses[-1], config, progress)
        crash_point("finetune-step")
    _finish(accelerator, prepared, config).eval()
    tail = losses[-max(1, len(losses) // 10):]
    return TrainResult(
        steps=total_steps, examples=len(examples), final_loss=losses[-1],
        mean_loss_last_10pct=sum(tail) / len(tail), seconds=time.perf_counter() - start,
        device=accelerator.device.type, processes=accelerator.num_processes,
        trainable_parameters=trainable, total_parameters=total, losses=losses,
    )


def _check_examples(examples: Sequence[Example]) -> None:
    if not examples:
        raise ValueError("no training examples")
    for index, example in enumerate(examples):
        if not (math.isfinite(example.weight) and example.weight >= 0):
            raise ValueError(f"example {index} has an invalid weight {example.weight}")
    if sum(e.weight for e in examples) <= 0:
        raise ValueError("every example has weight 0")


def _make_accelerator(config: TrainConfig):
    """An Accelerator for `config.device`; bf16 autocast on CUDA when `config.bf16`.

    Outside a launched multi-process run, Accelerate's process-wide state is reset first, so that
    one process can train on the CPU (bootstrap) and later on the GPU (finetuning).
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    on_cuda = pick_device(config.device).startswith("cuda")
    return Accelerator(cpu=not on_cuda, mixed_precision="bf16" if on_cuda and config.bf16 else "no")


def _attach_lora(model, config: TrainConfig):
    """`model` wrapped by peft with LoRA adapters on the target modules; only adapters train."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(task_type="CAUSAL_LM", r=config.lora_r, lora_alpha=config.lora_alpha,
                      lora_dropout=config.lora_dropout, target_modules=list(config.lora_target_modules))
    wrapped = get_peft_model(model, lora)
    trainable, total = _parameter_counts(wrapped)
    if not 0 < trainable < total:
        raise RuntimeError(f"LoRA left {trainable} of {total} parameters trainable")
    return wrapped


def _parameter_counts(model) -> tuple[int, int]:
    """(trainable, total) parameter counts; tied weights count once."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def _finish(accelerator, prepared, config: TrainConfig):
    """The trained model without Accelerate's wrappers, LoRA adapters merged into its weights."""
    model = accelerator.unwrap_model(prepared, keep_fp32_wrapper=False)
    return model.merge_and_unload() if config.lora_r is not None else model


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def step_batches(lengths: Sequence[int], config: TrainConfig, total_steps: int) -> Iterator[list[int]]:
    """The example indices of each of `total_steps` global batches, as `config.batching` cuts them
    (`lengths`: each example's token count)."""
    if config.batching == "by_length":
        return _length_grouped_batches(lengths, config, total_steps)
    return _global_batches(len(lengths), config, total_steps)


def _global_batches(count: int, config: TrainConfig, total_steps: int) -> Iterator[list[int]]:
    """Index lists of each step's global batch: seeded shuffles, refilled across epoch ends.

    Every process computes the same sequence, so the processes agree on each global batch.
    """
    import torch

    generator = torch.Generator().manual_seed(config.seed)
    order: list[int] = []
    for _ in range(total_steps):
        if len(order) < config.batch_size:
            order += torch.randperm(count, generator=generator).tolist()
        yield order[: config.batch_size]
        order = order[config.batch_size:]


def _length_grouped_batches(lengths: Sequence[int], config: TrainConfig, total_steps: int) -> Iterator[list[int]]:
    """Index lists of each step's global batch, grouped by length to cut padding.

    Each pass is a seeded shuffle of every example (behind the few left over from the last pass),
    cut into windows of `LENGTH_WINDOW_BATCHES` batches; each window is sorted by token length and
    cut into full batches, which are visited in a seeded random order. As with a plain shuffle,
    every example is seen once a pass and every batch is full; only who shares a batch changes.
    Deterministic for `config.seed`, so every process computes the same batches.
    """
    import torch

    generator = torch.Generator().manual_seed(config.seed)
    size, window = config.batch_size, config.batch_size * LENGTH_WINDOW_BATCHES
    pool: list[int] = []
    step = 0
    while True:
        pool += torch.randperm(len(lengths), generator=generator).tolist()
        usable = len(pool) - len(pool) % size
        batches = []
        for start in range(0, usable, window):
            chunk = sorted(pool[start: min(start + window, usable)], key=lambda i: lengths[i])
            batches += [chunk[j: j + size] for j in range(0, len(chunk), size)]
        pool = pool[usable:]
        for index in torch.randperm(len(batches), generator=generator).tolist():
            if step == total_steps:
                return
            yield batches[index]
            step += 1


@dataclass
class _Shard:
    """This process's part of one global batch, and the total weight of the whole batch."""

    input_ids: "torch.Tensor"
    labels: "torch.Tensor"
    attention: "torch.Tensor"
    weights: "torch.Tensor"
    total_weight: "torch.Tensor"
    token_weights: "torch.Tensor | None" = None  # per position, aligned with labels


class _Batcher:
    """Cuts this process's shard (every num_processes-th example) out of a global batch."""

    def __init__(self, encoded: list[tuple[list[int], int]], weights: "torch.Tensor", pad: int, rank: int,
                 processes: int, token_weights: list[list[float]] | None = None):
        self.encoded, self.weights, self.pad = encoded, weights, pad
        self.rank, self.processes = rank, processes
        self.token_weights = token_weights

    def __call__(self, indices: list[int], device: "torch.device") -> _Shard:
        """The shard of global batch `indices`, as tensors on `device`."""
        mine = indices[self.rank:: self.processes]
        input_ids, labels, attention = _collate([self.encoded[i] for i in mine], self.pad)
        total = self.weights[indices].to(device).sum().clamp(min=1e-8)
        token_weights = None
        if self.token_weights is not None:
            import torch

            token_weights = torch.ones(labels.shape, dtype=torch.float32)
            for row, i in enumerate(mine):
                _, prompt_len = self.encoded[i]
                values = self.token_weights[i]
                token_weights[row, prompt_len: prompt_len + len(values)] = torch.tensor(values)
            token_weights = token_weights.to(device)
        return _Shard(input_ids.to(device), labels.to(device), attention.to(device),
                      self.weights[mine].to(device), total, token_weights)


def _train_step(accelerator, model, optimizer, shard: _Shard, config: TrainConfig) -> float:
    """One optimiser step on this process's shard; returns the global batch's loss.

    Each process's loss is its part of the global weighted mean, times the process count, since
    Accelerate's DDP averages gradients over processes: the update is that of the whole batch.
    """
    logits = model(input_ids=shard.input_ids, attention_mask=shard.attention).logits
    part = _weighted_completion_loss(logits.float(), shard.labels, shard.weights, shard.total_weight,
                                     shard.token_weights)
    optimizer.zero_grad(set_to_none=True)
    accelerator.backward(part * accelerator.num_processes)
    if config.grad_clip:
        accelerator.clip_grad_norm_(model.parameters(), config.grad_clip)
    optimizer.step()
    return float(accelerator.reduce(part.detach(), reduction="sum").item())


def _report(step: int, total_steps: int, loss: float, config: TrainConfig,
            progress: Callable[[int, int, float], None] | None) -> None:
    if progress is not None:
        progress(step, total_steps, loss)
    if config.log_every and (step % config.log_every == 0 or step == total_steps):
        logger.info("step %d/%d loss %.4f", step, total_steps, loss)


def cosine_with_warmup(warmup_steps: int, total_steps: int, min_ratio: float) -> Callable[[int], float]:
    """The learning-rate factor of each step: linear warmup to 1, then a cosine down to `min_ratio`
    at `total_steps` (for torch's LambdaLR)."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return min_ratio + (1 - min_ratio) * cosine
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


def _weighted_completion_loss(logits, labels, weights, total_weight, token_weights=None):
    """Weighted sum over examples of each example's mean next-token loss on its completion, over `total_weight`.

    With `total_weight` the weight of the whole global batch, the processes' values add up to the
    global batch's weighted mean. With `token_weights` (per position, like `labels`), each token's
    loss is scaled by its weight inside the example's mean (the mean still divides by the token
    count, so weights that average 1 over an example keep its scale).
    """
    import torch.nn.functional as F

    shift_logits = logits[:, :-1, :]
    shift_labels = labels[:, 1:]
    token_loss = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1),
        ignore_index=-100, reduction="none",
    ).view(shift_labels.shape)
    mask = (shift_labels != -100).float()
    if token_weights is not None:
        mask = mask * token_weights[:, 1:]
        count = (shift_labels != -100).float().sum(1)
        return ((token_loss * mask).sum(1) / count.clamp(min=1) * weights).sum() / total_weight
    per_example = (token_loss * mask).sum(1) / mask.sum(1).clamp(min=1)
    return (per_example * weights).sum() / total_weight


def selected_examples(lake, iteration: int, policy_hash: str, model_id: str,
                      sampling_hash: str | None = None) -> list[dict]:
    """Kept samples of one selection of one round's candidates: id, weight, completion, problem."""
    from tasks.lake.sql import connect

    return connect(lake).execute(
        """SELECT s.candidate_id, s.weight, c.text, p.problem
           FROM selections s JOIN candidates c USING (candidate_id) JOIN prompts p ON p.prompt_id = c.prompt_id
           WHERE s.iteration = ? AND s.policy_hash = ? AND c.model_id = ?
             AND (? IS NULL OR c.sampling_hash = ?)
           ORDER BY s.candidate_id""", [iteration, policy_hash, model_id, sampling_hash, sampling_hash]
    ).to_arrow_table().to_pylist()


def train_config_for_stage(stage) -> TrainConfig:
    """The TrainConfig of a loop's finetune stage: every stage field that names a TrainConfig field."""
    names = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in stage.model_dump().items() if k in names})


TOKEN_WEIGHT_FIELDS = ("token_weights", "token_weight_scorer", "token_weight_clip", "token_weight_min")
# settings added after models were made with their default: left out of the id while at it
LATER_DEFAULTS = {"max_steps": None, "batching": "shuffle", "merge_with_base": 0.0, "token_weight_min": 0.0}


def stage_fingerprint(stage) -> dict:
    """The finetune settings a model id covers: the token-weight settings only when token weights
    are on, and a later setting only when it differs from its default (a model trained before a
    setting existed keeps its id)."""
    dump = stage.model_dump(mode="json")
    if dump.get("token_weights", "none") == "none":
        dump = {k: v for k, v in dump.items() if k not in TOKEN_WEIGHT_FIELDS}
    return {k: v for k, v in dump.items() if not (k in LATER_DEFAULTS and v == LATER_DEFAULTS[k])}


def prl_step_weights(values: Sequence[float], clip: float) -> list[float]:
    """Per-step token weights from PRL process values: each value clipped to [0, clip], then divided
    by their mean, so a sample's tokens average weight 1 and its sample weight keeps its meaning.

    A step whose value is below 0 (its tokens' drift from the base model outweighs the outcome's
    advantage) gets weight 0: the loss does not push it. The clip keeps one step from dominating.
    When every step clips to 0 the weights are uniform (the sample was kept; it is learned as is).
    """
    clipped = [min(max(float(v), 0.0), clip) for v in values]
    mean = sum(clipped) / len(clipped) if clipped else 0.0
    if mean <= 0:
        return [1.0] * len(values)
    return [c / mean for c in clipped]


def prefix_step_weights(values: Sequence[float], minimum: float) -> list[float]:
    """Per-step token weights that learn a sample only up to its first doubted step: 1 for each step
    before the first one scored below `minimum`, 0 for it and every step after.

    A right answer behind a wrong step teaches the wrong step and what follows from it; its steps
    before the first doubt are still worth learning. A sample doubted from its first step is kept
    and learns nothing (all weights 0).
    """
    first_doubt = next((i for i, v in enumerate(values) if float(v) < minimum), len(values))
    return [1.0] * first_doubt + [0.0] * (len(values) - first_doubt)


def step_weights(values: Sequence[float], stage) -> list[float]:
    """The per-step token weights of `stage.token_weights` (`prl` or `prefix`) from one sample's step scores."""
    if stage.token_weights == "prl":
        return prl_step_weights(values, stage.token_weight_clip)
    if stage.token_weights == "prefix":
        return prefix_step_weights(values, stage.token_weight_min)
    raise ValueError(f"token_weights: {stage.token_weights!r} has no step weights")


def token_weight_spans(lake, iteration: int, rows: Sequence[dict], stage, step_separator: str,
                       ) -> dict[str, tuple[tuple[int, float], ...]]:
    """Per kept candidate, the (end, weight) spans of its completion from the scorer's step values;
    a candidate without them, or with another step count, is an error naming it."""
    from tasks.generation.generate import split_steps
    from tasks.lake.sql import connect

    scorer = stage.token_weight_scorer
    values = dict(connect(lake).execute(
        "SELECT candidate_id, step_scores FROM scores WHERE iteration = ? AND scorer = ? "
        "AND candidate_id IN (SELECT unnest(?::VARCHAR[]))",
        [iteration, scorer, [r["candidate_id"] for r in rows]]).fetchall())
    out = {}
    for r in rows:
        steps, found = split_steps(r["text"], step_separator), values.get(r["candidate_id"])
        if not found:
            raise ValueError(f"token_weights: {stage.token_weights} needs {scorer!r} step scores, and kept candidate "
                             f"{r['candidate_id']} has none: score the round with {scorer!r} (scoring.reward_models)")
        if len(found) != len(steps):
            raise ValueError(f"kept candidate {r['candidate_id']} has {len(steps)} steps but {len(found)} "
                             f"{scorer!r} step scores")
        weights = step_weights(found, stage)
        out[r["candidate_id"]] = tuple((end, w) for (_, end), w in zip(steps, weights))
    return out


def finetune_on_selection(lake, *, iteration: int, source_model_id: str, policy_hash: str, start_path: str,
                          start_model_id: str, output: Path, stage, fmt,
                          sampling_hash: str | None = None, run_id: str | None = None,
                          step_separator: str = "\n", base_path: str | None = None,
                          base_model_id: str | None = None) -> tuple[Path, str, bool]:
    """Train the next model on a selection and register it; reuse it when the inputs match.

    With `stage.merge_with_base` above 0 the saved weights are merged with the base model's
    (`base_path`, `base_model_id`: the run's round-0 model) after training.
    The model id is a hash of its inputs (start model, kept samples and weights, settings), so a
    rerun finds the finished checkpoint instead of training again. A folder at `output` holding a
    model from other inputs is refused (CheckpointConflict), never deleted. Returns (path,
    model_id, reused).
    """
    from datetime import datetime, timezone

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tasks.generation.generate import format_prompt
    from tasks.lake import ids

    rows = selected_examples(lake, iteration, policy_hash, source_model_id, sampling_hash)
    if not rows:
        raise ValueError(f"selection {policy_hash} kept no samples in iteration {iteration}: nothing to finetune on")
    spans = (token_weight_spans(lake, iteration, rows, stage, step_separator)
             if stage.token_weights != "none" else {})
    kept = [(r["candidate_id"], r["weight"]) + ((spans[r["candidate_id"]],) if spans else ()) for r in rows]
    examples_hash = ids.content_hash("examples", kept)
    merging = stage.merge_with_base > 0
    if merging and not (base_path and base_model_id):
        raise ValueError("finetune.merge_with_base needs the base model's path and id")
    merged_with = (base_model_id,) if merging else ()  # a model made before merging existed keeps its id
    input_hash = ids.content_hash("finetune", start_model_id, kept, stage_fingerprint(stage), fmt.model_dump(),
                                  *merged_with)
    model_id = f"ft-{input_hash}"
    inputs = {"start model": start_model_id, "selection": policy_hash, "kept samples": examples_hash,
              "finetune config": stage_fingerprint(stage), "prompt format": fmt.model_dump(mode="json")}
    if merging:
        inputs["merged with"] = base_model_id
    output = Path(output)
    refuse_other_checkpoint(output, model_id, inputs, f"{run_id or 'run'} iteration {iteration + 1}")
    card_path = output / "flywheel_card.json"
    if card_path.is_file():
        card = json.loads(card_path.read_text())
        if not lake.existing_keys("models", iteration + 1, ["model_id"]) >= {(model_id,)}:
            # a crash between saving the checkpoint and registering it: register it now
            _register_model(lake, card, output)
        return output.resolve(), model_id, True

    tokenizer = AutoTokenizer.from_pretrained(start_path)
    model = AutoModelForCausalLM.from_pretrained(start_path)
    examples = [Example(format_prompt(r["problem"], fmt, tokenizer), r["text"],
                        float(r["weight"]) if stage.use_weights else 1.0, spans.get(r["candidate_id"]))
                for r in rows]
    config = train_config_for_stage(stage)
    with progress_bar(f"finetune iteration {iteration}", None, "step") as bar:
        def report(step: int, total: int, loss: float) -> None:
            if bar.done == 0:
                bar.set_total(total)
            bar.to(step, loss=loss)
        result = train(model, tokenizer, examples, config, progress=report)
    if merging:
        merge_weights(model, AutoModelForCausalLM.from_pretrained(base_path), stage.merge_with_base)
    card = {
        "model_id": model_id, "kind": "finetuned", "parent_id": source_model_id, "start_model_id": start_model_id,
        "iteration": iteration + 1, "selection_hash": policy_hash, "examples": len(examples),
        "train": result.summary(), "finetune": stage.model_dump(), "lora": config.lora_card(), "inputs": inputs,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    save_checkpoint(model, tokenizer, output, f"Flywheel checkpoint, iteration {iteration + 1}", card)
    _register_model(lake, card, output)
    return output.resolve(), model_id, False


def _register_model(lake, card: dict, output: Path) -> None:
    """The checkpoint's row in the models table, from its card."""
    from datetime import datetime

    train = card["train"]
    lake.write("models", [{
        "model_id": card["model_id"], "parent_id": card["parent_id"], "iteration": card["iteration"],
        "path": str(Path(output).resolve()), "selection_hash": card["selection_hash"],
        "num_examples": card["examples"], "train_steps": train["steps"], "train_loss": train["mean_loss_last_10pct"],
        "train_seconds": train["seconds"], "created_at": datetime.fromisoformat(card["created_at"]),
        "metrics": json.dumps(train),
    }], iteration=card["iteration"], shard=f"model-{card['model_id']}")
