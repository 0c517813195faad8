"""Process reward models in the formats public PRMs ship in, behind the scorer interface.

- Step-tag generative PRM (Math-Shepherd's, RLHFlow's): a causal LM reads the prompt and the
  response with a step tag after every step (`step 1 ки\nstep 2 ки`); a step's score is
  P(good) / (P(good) + P(bad)) of the token the model predicts at its tag, good and bad being two
  single tokens such as `+` and `-`.
- Two-class head read at a separator token (as Qwen2.5-Math-PRM): a token-classification model
  with two labels reads the response with a separator token after every step; a step's score is
  the softmax probability of label 1 at its separator.

Both give `step_scores` (one per step, in order) and no `value`, like `PRMScorer`; the marker must
be one token of the model's tokenizer and must not occur in the text itself (an error names the
candidate). The version names the model id, the prompt format, the step separator and the marker
tokens.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

from schemas.generation import PromptFormat
from tasks.generation.generate import format_prompt, model_id_for, split_steps
from tasks.lake import ids
from tasks.scoring.reward_model import RewardModelError, check_finite, pad_batch, read_model_config


def tagged_response(response: str, step_separator: str, marker: str) -> str:
    """The response with `marker` (after a space) at the end of every step."""
    out, last = [], 0
    for _, end in split_steps(response, step_separator):
        out.append(response[last:end] + " " + marker)
        last = end
    return "".join(out) + response[last:]


class _MarkedPRM:
    """Shared loading, marking and batching of the two public PRM formats."""

    name = "prm"
    format_name = ""
    head = ""

    def __init__(self, model_path: str | os.PathLike[str], marker: str, name: str | None = None,
                 prompt_format: PromptFormat | None = None, batch_size: int = 16, step_separator: str = "\n",
                 device: str = "auto") -> None:
        self.path, self._config = read_model_config(model_path)
        architectures = [str(a) for a in self._config.get("architectures") or []]
        if not any(a.endswith(self.head) for a in architectures):
            raise RewardModelError(f"{self.path} is not a *{self.head} model (architectures: "
                                   f"{', '.join(architectures) or 'none'}), as a {self.format_name} PRM needs")
        if name:
            self.name = name
        self.marker = marker
        self.format = prompt_format or PromptFormat()
        self.batch_size, self.step_separator, self.device = batch_size, step_separator, device
        self.model_id = model_id_for(self.path)
        self.version = f"1:{self.model_id}:" + ids.content_hash(
            "public-prm", self.format_name, self.format.model_dump(), step_separator, self._markers())
        self._loaded: tuple[Any, Any] | None = None

    def _markers(self) -> list[str]:
        return [self.marker]

    def _loader(self) -> Any:
        raise NotImplementedError

    def _model(self) -> tuple[Any, Any]:
        if self._loaded is None:
            import torch
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(self.path)
            if tokenizer.pad_token_id is None:
                tokenizer.pad_token = tokenizer.eos_token
            device = ("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto" else self.device
            model = self._loader().from_pretrained(self.path).to(device).eval()
            self._loaded = (model, tokenizer)
            self._token_ids = {m: self._single_token(tokenizer, m) for m in self._markers()}
        return self._loaded

    def _single_token(self, tokenizer: Any, text: str) -> int:
        found = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(found) != 1:
            raise RewardModelError(f"{text!r} is {len(found)} tokens for {self.path}'s tokenizer; a "
                                   f"{self.format_name} PRM needs it to be one")
        return found[0]

    def _encode(self, candidates: Sequence[dict]) -> tuple[list[list[int]], list[list[int]]]:
        """Token ids of prompt + marked response, and the marker positions (one per step)."""
        model, tokenizer = self._model()
        marker_id = self._token_ids[self.marker]
        limit = getattr(model.config, "max_position_embeddings", None)
        sequences, positions = [], []
        for c in candidates:
            text = tagged_response(c["text"], self.step_separator, self.marker)
            ids_ = tokenizer(format_prompt(c["problem"], self.format, tokenizer) + text,
                             add_special_tokens=False)["input_ids"]
            marks = [i for i, token in enumerate(ids_) if token == marker_id]
            steps = len(split_steps(c["text"], self.step_separator))
            if len(marks) != steps:
                raise RewardModelError(f"candidate {c['candidate_id']}: {len(marks)} {self.marker!r} markers for "
                                       f"{steps} steps (the marker occurs in the prompt or the text itself)")
            if limit is not None and len(ids_) > limit:
                raise RewardModelError(f"candidate {c['candidate_id']} has {len(ids_)} tokens, over the "
                                       f"reward model's context of {limit}")
            sequences.append(ids_)
            positions.append(marks)
        return sequences, positions

    def _step_probabilities(self, logits: Any, positions: list[int]) -> list[float]:
        raise NotImplementedError

    def score(self, candidates: Sequence[dict]) -> list[dict]:
        """One row per candidate with step_scores = each step's probability of being good; no value."""
        import torch

        from tasks.scoring.scorer import score_row

        model, tokenizer = self._model()
        sequences, positions = self._encode(candidates)
        device = next(model.parameters()).device
        scores: list[list[float]] = [[] for _ in candidates]
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                batch = order[start:start + self.batch_size]
                input_ids, attention = pad_batch([sequences[i] for i in batch], tokenizer.pad_token_id)
                logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits.float()
                for row, i in enumerate(batch):
                    scores[i] = self._step_probabilities(logits[row], positions[i])
        return [score_row(c, self, value=None, step_scores=[check_finite(s, c) for s in steps])
                for c, steps in zip(candidates, scores)]

    def close(self) -> None:
        """Free the model."""
        self._loaded = None


class StepTagPRMScorer(_MarkedPRM):
    """A generative PRM: P(good) / (P(good) + P(bad)) of the next token at each step tag."""

    format_name = "step_tag"
    head = "ForCausalLM"

    def __init__(self, model_path: str | os.PathLike[str], step_tag: str = "ки", good_token: str = "+",
                 bad_token: str = "-", **options: Any) -> None:
        self.good_token, self.bad_token = good_token, bad_token
        super().__init__(model_path, step_tag, **options)

    def _markers(self) -> list[str]:
        return [self.marker, self.good_token, self.bad_token]

    def _loader(self) -> Any:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM

    def _step_probabilities(self, logits: Any, positions: list[int]) -> list[float]:
        import torch

        pair = logits[positions][:, [self._token_ids[self.good_token], self._token_ids[self.bad_token]]]
        return torch.softmax(pair, dim=-1)[:, 0].tolist()


class TwoClassPRMScorer(_MarkedPRM):
    """A two-label token classifier read at a separator token after each step: P(label 1)."""

    format_name = "two_class"
    head = "ForTokenClassification"

    def __init__(self, model_path: str | os.PathLike[str], separator_token: str = "<extra_0>", **options: Any) -> None:
        super().__init__(model_path, separator_token, **options)
        labels = self._config.get("num_labels") or len(self._config.get("id2label") or {}) or 2
        if labels != 2:
            raise RewardModelError(f"{self.path} has {labels} labels; a two_class PRM needs exactly two")

    def _loader(self) -> Any:
        from transformers import AutoModelForTokenClassification

        return AutoModelForTokenClassification

    def _step_probabilities(self, logits: Any, positions: list[int]) -> list[float]:
        import torch

        return torch.softmax(logits[positions], dim=-1)[:, 1].tolist()
