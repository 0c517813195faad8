"""The scorer interface: what every scorer is (a name, a version, `score(candidates)`), what it
receives (candidates joined with their prompts) and the scores row it returns per candidate.

Every scorer of tasks/scoring implements it; `tasks.scoring.score` runs one over an iteration.
"""
from __future__ import annotations

from typing import Protocol, Sequence

# The columns a scorer receives per candidate (candidates joined with prompts by prompt_id).
CANDIDATE_COLUMNS = ("candidate_id", "prompt_id", "iteration", "sample_index", "text", "steps", "num_tokens",
                     "token_ids", "token_logprobs", "step_token_ends", "problem", "reference_answer")


class Scorer(Protocol):
    """Scores a batch of candidates; returns one scores row per candidate it could score.

    A scorer may also have `prepare(candidates)`, called before its version is read.
    """

    name: str
    version: str

    def score(self, candidates: Sequence[dict]) -> list[dict]: ...


def score_row(candidate: dict, scorer: "Scorer", *, value: float | None, label: str | None = None,
              extracted_answer: str | None = None, step_scores: list[float] | None = None,
              detail: str | None = None) -> dict:
    """A row of the scores table for one candidate."""
    return {
        "candidate_id": candidate["candidate_id"], "prompt_id": candidate["prompt_id"],
        "iteration": candidate["iteration"], "scorer": scorer.name, "scorer_version": scorer.version,
        "value": value, "label": label, "extracted_answer": extracted_answer,
        "step_scores": step_scores, "detail": detail,
    }
