"""Log-probabilities of given completion tokens under a Hugging Face causal LM.

Used for PRL: the reference policy (the base model) scores the exact tokens a candidate sampled,
and the same function can recompute the current policy's log-probabilities. Prompts are tokenized
with the tokenizer's defaults (special tokens added, as vLLM does for a text prompt); completions
are taken as the given token ids, never re-tokenized.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import pyarrow as pa

DEFAULT_MAX_BATCH_TOKENS = 32768


class ReferenceModelError(RuntimeError):
    """A reference model folder is missing or does not hold a causal LM; one line names it."""


def resolve_device(model: Any, device: str) -> Any:
    """The torch device to run on: 'auto' keeps a model already on CUDA, else CUDA when present, else CPU."""
    import torch

    if device != "auto":
        return torch.device(device)
    current = next(model.parameters()).device
    if current.type == "cuda":
        return current
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _vocab_size(model: Any) -> int:
    embeddings = model.get_input_embeddings()
    return int(getattr(embeddings, "num_embeddings", None) or model.config.vocab_size)


def _max_positions(model: Any) -> int | None:
    value = getattr(model.config, "max_position_embeddings", None)
    return int(value) if value else None


def _batches(lengths: Sequence[int], order: Sequence[int], batch_size: int,
             max_batch_tokens: int | None) -> list[list[int]]:
    """Group indices (taken in `order`, longest first) into batches within both budgets."""
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        longest = max([lengths[i] for i in current] + [lengths[index]])
        too_many = len(current) >= batch_size
        too_long = max_batch_tokens is not None and (len(current) + 1) * longest > max_batch_tokens
        if current and (too_many or too_long):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def sequence_logprobs(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    completions_token_ids: Sequence[Sequence[int]],
    batch_size: int = 64,
    device: str = "auto",
    padding_side: str = "right",
    max_batch_tokens: int | None = DEFAULT_MAX_BATCH_TOKENS,
) -> list[list[float]]:
    """Log-probability of each completion token given the prompt and the earlier completion tokens.

    Returns one list per completion, as long as its token ids. Runs without gradients, in bf16
    autocast on CUDA; batches hold at most `batch_size` sequences and (when set) at most
    `max_batch_tokens` padded tokens. The model is moved to `device` when it is elsewhere.
    """
    import torch

    if len(prompts) != len(completions_token_ids):
        raise ValueError(f"{len(prompts)} prompts but {len(completions_token_ids)} completions")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    if max_batch_tokens is not None and max_batch_tokens < 1:
        raise ValueError(f"max_batch_tokens must be >= 1 or None, got {max_batch_tokens!r}")
    if not prompts:
        return []
    vocab, max_positions = _vocab_size(model), _max_positions(model)
    prompt_ids = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    sequences: list[list[int]] = []
    for index, (prompt, completion) in enumerate(zip(prompt_ids, completions_token_ids)):
        if not prompt:
            raise ValueError(f"prompt {index} tokenizes to no tokens: its first completion token has no context")
        tokens = [int(t) for t in completion]
        bad = next((t for t in tokens if not 0 <= t < vocab), None)
        if bad is not None:
            raise ValueError(f"completion {index} holds token id {bad}, outside the vocabulary of {vocab}")
        total = len(prompt) + len(tokens)
        if max_positions is not None and total > max_positions:
            raise ValueError(f"sequence {index} has {total} tokens, more than the model's "
                             f"{max_positions} positions")
        sequences.append(list(prompt) + tokens)

    target = resolve_device(model, device)
    if next(model.parameters()).device != target:
        model.to(target)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    lengths = [len(s) for s in sequences]
    order = sorted(range(len(sequences)), key=lambda i: -lengths[i])
    results: list[list[float]] = [[] for _ in sequences]
    was_training = model.training
    model.eval()
    try:
        for batch in _batches(lengths, order, batch_size, max_batch_tokens):
            width = max(lengths[i] for i in batch)
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            positions = torch.zeros((len(batch), width), dtype=torch.long)
            offsets = []
            for row, index in enumerate(batch):
                offset = width - lengths[index] if padding_side == "left" else 0
                end = offset + lengths[index]
                input_ids[row, offset:end] = torch.tensor(sequences[index], dtype=torch.long)
                mask[row, offset:end] = 1
                positions[row, offset:end] = torch.arange(lengths[index])
                offsets.append(offset)
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=target.type == "cuda"):
                logits = model(input_ids=input_ids.to(target), attention_mask=mask.to(target),
                               position_ids=positions.to(target), use_cache=False).logits
                for row, index in enumerate(batch):
                    count = len(completions_token_ids[index])
                    if count == 0:
                        continue
                    start = offsets[row] + len(prompt_ids[index])
                    span = logits[row, start - 1:start - 1 + count].float()
                    chosen = input_ids[row, start:start + count].to(target)
                    picked = torch.log_softmax(span, dim=-1).gather(-1, chosen.unsqueeze(-1)).squeeze(-1)
                    results[index] = picked.cpu().tolist()
    finally:
        model.train(was_training)
    return results


def candidate_logprobs(
    model: Any,
    tokenizer: Any,
    candidates: pa.Table | Sequence[Mapping[str, Any]],
    prompt_texts: Mapping[str, str],
    batch_size: int = 64,
    device: str = "auto",
) -> dict[str, list[float]]:
    """Log-probabilities of each candidate's token_ids after its prompt's model input, by candidate_id.

    `prompt_texts` maps prompt_id to the exact text the generating model was given (the formatted
    prompt). A candidate without token_ids, or whose prompt is missing, is an error.
    """
    rows = (candidates.select(["candidate_id", "prompt_id", "token_ids"]).to_pylist()
            if isinstance(candidates, pa.Table) else list(candidates))
    texts, tokens, names = [], [], []
    for row in rows:
        cid = row["candidate_id"]
        if row.get("token_ids") is None:
            raise ValueError(f"candidate {cid!r} has no token_ids")
        if row["prompt_id"] not in prompt_texts:
            raise ValueError(f"candidate {cid!r}: no prompt text for prompt {row['prompt_id']!r}")
        texts.append(prompt_texts[row["prompt_id"]])
        tokens.append(row["token_ids"])
        names.append(cid)
    if len(set(names)) != len(names):
        duplicate = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"candidate {duplicate!r} appears twice")
    values = sequence_logprobs(model, tokenizer, texts, tokens, batch_size=batch_size, device=device)
    return dict(zip(names, values))


def load_reference(path: str | os.PathLike[str], device: str = "auto") -> tuple[Any, Any]:
    """Load (model, tokenizer) of a causal LM from a local folder, in eval mode on `device`.

    bf16 on CUDA, float32 on CPU. A missing folder, a folder without config.json, or a model that
    is not a causal LM raises ReferenceModelError.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ReferenceModelError(f"reference model folder not found: {folder}")
    if not (folder / "config.json").is_file():
        raise ReferenceModelError(f"not a model folder (no config.json): {folder}")
    try:
        config = AutoConfig.from_pretrained(folder)
    except Exception as error:  # noqa: BLE001 - any loader failure is reported in one line
        raise ReferenceModelError(f"cannot read the model config in {folder}: {_first_line(error)}") from None
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise ReferenceModelError(f"not a causal language model (model_type "
                                  f"{getattr(config, 'model_type', '?')!r}): {folder}")
    target = torch.device("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" \
        else torch.device(device)
    dtype = torch.bfloat16 if target.type == "cuda" else torch.float32
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except Exception as error:  # noqa: BLE001 - any loader failure is reported in one line
        raise ReferenceModelError(f"cannot load a causal LM from {folder}: {_first_line(error)}") from None
    return model.to(target).eval(), tokenizer


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
