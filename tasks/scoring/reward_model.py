"""Learned reward models behind the scorer interface: an outcome RM and a step-level process RM.

- ORM: any Hugging Face `AutoModelForSequenceClassification` with one label. It reads the
  formatted prompt followed by the response and gives one scalar (its logit) per candidate:
  scores row `value`.
- PRM: an `AutoModelForTokenClassification` with one label. It reads the same text once and its
  logit at the last token of each step, through a sigmoid, is that step's score: scores row
  `step_scores` (one per step, in order), `value` left null. Aggregation (min, last, product,
  mean) happens later, in `tasks.scoring.aggregate` or in SQL, never here.

Both load from a local folder and refuse, in one line, a folder that is not a one-label classifier
of the right kind. A candidate whose text does not fit the model's context is an error naming it,
never a truncated (guessed) score.

Versions (`rm_version`) name what changes a score besides the candidate: the model's id
(`tasks.generation.generate.model_id_for`), the prompt format it reads before the response and, for the PRM,
the step separator that places its step ends. The ORM reads no steps, so its separator is not part
of its version.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

from schemas.generation import PromptFormat
from tasks.generation.generate import format_prompt, model_id_for, split_steps, step_token_ends, token_char_ends
from tasks.lake import ids

ORM_KIND, PRM_KIND = "sequence", "token"
_HEADS = {ORM_KIND: "ForSequenceClassification", PRM_KIND: "ForTokenClassification"}


class RewardModelError(RuntimeError):
    """A reward-model folder or input that cannot be scored."""


def read_model_config(path: str | os.PathLike[str]) -> tuple[Path, dict]:
    """A reward model folder and its config.json; RewardModelError in one line when either is missing
    or unreadable."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise RewardModelError(f"reward model folder not found: {folder}")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise RewardModelError(f"not a model folder (no config.json): {folder}")
    try:
        return folder, json.loads(config_path.read_text())
    except ValueError as error:
        raise RewardModelError(f"unreadable config.json in {folder}: {error}") from None


def check_reward_model_folder(path: str | os.PathLike[str], kind: str) -> Path:
    """The folder, after checking it holds a one-label classifier of `kind` ('sequence' or 'token')."""
    folder, config = read_model_config(path)
    head = _HEADS[kind]
    architectures = config.get("architectures") or []
    if not any(str(a).endswith(head) for a in architectures):
        found = ", ".join(map(str, architectures)) or "none"
        raise RewardModelError(f"{folder} is not a *{head} model (architectures: {found})")
    labels = config.get("num_labels") or len(config.get("id2label") or {}) or 2
    if labels != 1:
        raise RewardModelError(f"{folder} has {labels} labels; a reward model needs exactly one")
    return folder.resolve()


def load_reward_model(path: str | os.PathLike[str], kind: str, device: str = "auto") -> tuple[Any, Any]:
    """(model, tokenizer) of a checked reward-model folder, in eval mode, on `device`."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

    folder = check_reward_model_folder(path, kind)
    loader = AutoModelForSequenceClassification if kind == ORM_KIND else AutoModelForTokenClassification
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = loader.from_pretrained(folder)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return model.to(device).eval(), tokenizer


def encode_candidate(tokenizer: Any, prompt_text: str, response: str, step_separator: str = "\n",
                     ) -> tuple[list[int], list[int]]:
    """Token ids of prompt + response, and the index (in those ids) of each step's last token."""
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    steps = split_steps(response, step_separator)
    if not response_ids or not steps:
        return prompt_ids + response_ids, []
    ends = step_token_ends(token_char_ends(tokenizer, response_ids), [end for _, end in steps])
    return prompt_ids + response_ids, [len(prompt_ids) + e for e in ends]


def _context_limit(model: Any) -> int | None:
    return getattr(model.config, "max_position_embeddings", None)


def rm_version(kind: str, model_id: str, prompt_format: PromptFormat, step_separator: str) -> str:
    """A learned scorer's version: model id, then a hash of its prompt format (and, for the PRM,
    its step separator)."""
    if kind not in _HEADS:
        raise RewardModelError(f"unknown reward model kind {kind!r} (kinds: {', '.join(_HEADS)})")
    separator = step_separator if kind == PRM_KIND else None
    return f"2:{model_id}:" + ids.content_hash("rm-input", kind, prompt_format.model_dump(), separator)


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[Any, Any]:
    """Right-padded input ids and the attention mask of a batch of token-id lists."""
    import torch

    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = torch.tensor(list(seq), dtype=torch.long)
        attention[row, : len(seq)] = 1
    return input_ids, attention


class _LearnedScorer:
    """Shared loading, encoding and batching of the two learned scorers."""

    kind = ORM_KIND
    name = "rm"

    def __init__(self, model_path: str | os.PathLike[str], name: str | None = None,
                 prompt_format: PromptFormat | None = None, batch_size: int = 64,
                 step_separator: str = "\n", device: str = "auto") -> None:
        self.path = check_reward_model_folder(model_path, self.kind)
        if name:
            self.name = name
        self.format = prompt_format or PromptFormat()
        self.batch_size, self.step_separator, self.device = batch_size, step_separator, device
        self.model_id = model_id_for(self.path)
        self.version = rm_version(self.kind, self.model_id, self.format, step_separator)
        self._loaded: tuple[Any, Any] | None = None

    def _model(self) -> tuple[Any, Any]:
        if self._loaded is None:
            self._loaded = load_reward_model(self.path, self.kind, self.device)
        return self._loaded

    def _encode(self, candidates: Sequence[dict]) -> tuple[list[list[int]], list[list[int]]]:
        model, tokenizer = self._model()
        limit = _context_limit(model)
        sequences, ends = [], []
        for c in candidates:
            ids_, step_ends = encode_candidate(tokenizer, format_prompt(c["problem"], self.format, tokenizer),
                                               c["text"], self.step_separator)
            if limit is not None and len(ids_) > limit:
                raise RewardModelError(f"candidate {c['candidate_id']} has {len(ids_)} tokens, over the "
                                       f"reward model's context of {limit}")
            sequences.append(ids_)
            ends.append(step_ends)
        return sequences, ends

    def _logits(self, sequences: Sequence[Sequence[int]]) -> Iterator[tuple[list[int], Any]]:
        """(indices, float logits) per batch of similar-length sequences, without gradients."""
        import torch

        model, tokenizer = self._model()
        device = next(model.parameters()).device
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))  # less padding
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                batch = order[start:start + self.batch_size]
                input_ids, attention = pad_batch([sequences[i] for i in batch], tokenizer.pad_token_id)
                yield batch, model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits.float()

    def close(self) -> None:
        """Free the model."""
        self._loaded = None


class ORMScorer(_LearnedScorer):
    """Outcome reward model: one scalar (the classifier's logit) per candidate."""

    kind = ORM_KIND
    name = "orm"

    def score(self, candidates: Sequence[dict]) -> list[dict]:
        """One row per candidate with value = the model's logit."""
        from tasks.scoring.scorer import score_row

        sequences, _ = self._encode(candidates)
        values: list[float] = [0.0] * len(candidates)
        for batch, logits in self._logits(sequences):
            for i, value in zip(batch, logits[:, 0].tolist()):
                values[i] = value
        return [score_row(c, self, value=check_finite(v, c)) for c, v in zip(candidates, values)]


class PRMScorer(_LearnedScorer):
    """Process reward model: a probability per step, read at each step's last token."""

    kind = PRM_KIND
    name = "prm"

    def score(self, candidates: Sequence[dict]) -> list[dict]:
        """One row per candidate with step_scores = sigmoid(logit at each step end); no value."""
        import torch

        from tasks.scoring.scorer import score_row

        sequences, ends = self._encode(candidates)
        step_scores: list[list[float]] = [[] for _ in candidates]
        for batch, logits in self._logits(sequences):
            probs = torch.sigmoid(logits[..., 0])
            for row, i in enumerate(batch):
                step_scores[i] = probs[row, ends[i]].tolist() if ends[i] else []
        rows = []
        for c, steps in zip(candidates, step_scores):
            rows.append(score_row(c, self, value=None, step_scores=[check_finite(s, c) for s in steps]))
        return rows


def check_finite(value: float, candidate: dict) -> float:
    """The value, or an error naming the candidate when the model produced NaN or infinity."""
    import math

    if not math.isfinite(value):
        raise RewardModelError(f"reward model gave a non-finite score for candidate {candidate['candidate_id']}")
    return float(value)
