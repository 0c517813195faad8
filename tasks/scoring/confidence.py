"""The policy's confidence in its own sample: a process signal that needs no reference and no model pass.

Sampling at a temperature above 0 sometimes draws a token the policy itself found unlikely, and on
a reasoning task such a slip is often the wrong step behind a right answer (a miscopied operand, a
sum off by one that a second slip cancels). The policy's log-probabilities of the tokens it drew,
which the engine returns with every sample (`candidates.token_logprobs`), mark those slips:

    step_scores[t] = mean log pi(a_j) over the tokens of step t
    value          = mean log pi(a_j) over every token of the completion

Step t's tokens run from the token after step t-1's last token (`candidates.step_token_ends`) to
its own last token, included; tokens after the last step (a trailing separator, EOS) count in
`value` only. This is the per-token self-certainty that confidence-filtered reasoning methods
(DeepConf, Fu et al. 2025) read; together with the verifier's outcome it selects samples whose
answer is right and that the policy drew without a slip. On the demo's base policy it ranked the
answer-correct samples with every step right above those with a wrong step at AUROC 0.91, where
Math-Shepherd labels from 4 rollouts reached 0.71 (README, "What `make demo` does").

The log-probabilities are the model's own, before temperature or other sampling processing (vLLM's
default `raw_logprobs`; the Hugging Face backend's log-softmax of the raw logits), so a threshold
means the same at any sampling temperature. They come with the candidate (its id names the model and
sampling settings), so the scorer has a constant version.
"""
from __future__ import annotations

import math
from typing import Sequence

from tasks.scoring.scorer import score_row

VERSION = "1:mean_token_logprob"


def step_confidences(token_logprobs: Sequence[float], step_token_ends: Sequence[int]) -> list[float]:
    """The mean log-probability of each step's tokens; a step that shares its only token with the
    step before gets that token's log-probability."""
    out, start = [], 0
    for end in step_token_ends:
        if not 0 <= end < len(token_logprobs):
            raise ValueError(f"a step ends at token {end}, outside the {len(token_logprobs)} tokens")
        first = min(start, end)
        span = token_logprobs[first:end + 1]
        out.append(sum(span) / len(span))
        start = end + 1
    return out


class ConfidenceScorer:
    """Per candidate: the mean log-probability the sampling policy gave its own tokens (value), and
    per step (step_scores). A candidate sampled without log-probabilities is an error naming it."""

    name = "confidence"
    version = VERSION

    def __init__(self, name: str = "confidence") -> None:
        self.name = name

    def score(self, candidates: Sequence[dict]) -> list[dict]:
        """One row per candidate with tokens; an empty completion gets no value."""
        rows = []
        for c in candidates:
            logprobs, ends = c.get("token_logprobs"), c.get("step_token_ends")
            if not c.get("num_tokens"):
                rows.append(score_row(c, self, value=None, detail="empty completion"))
                continue
            if logprobs is None:
                raise ValueError(f"confidence needs the sampled tokens' log-probabilities: candidate "
                                 f"{c['candidate_id']} has no token_logprobs (sample with generation.sampling.logprobs: true)")
            if ends is None:
                raise ValueError(f"confidence needs each step's last token: candidate {c['candidate_id']} has no "
                                 "step_token_ends (generated without its tokenizer)")
            logprobs = [float(x) for x in logprobs]
            bad = next((i for i, x in enumerate(logprobs) if not math.isfinite(x)), None)
            if bad is not None:
                raise ValueError(f"candidate {c['candidate_id']}: token {bad}'s log-probability is {logprobs[bad]}")
            rows.append(score_row(c, self, value=sum(logprobs) / len(logprobs),
                                  step_scores=step_confidences(logprobs, list(ends))))
        return rows

    def close(self) -> None:
        """Nothing to release."""
