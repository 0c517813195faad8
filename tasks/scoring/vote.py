"""Majority vote over final answers, plain or weighted (e.g. by a reward score).

Answers are compared after `normalize_answer`, the verifier's canonical form: Unicode compatibility
forms folded (full-width `７` is `7`), surrounding whitespace and `$` stripped, comma thousands
separators dropped, and a plain decimal number written canonically, so `" 007"`, `"+7"`, `"7.0"`,
`"７"` and `"7"` are one answer, `"1,000"` is `"1000"` and `"-0"` equals `"0"`. Evaluation goes
further: every answer the verifier judged correct votes as one answer (`CORRECT_ANSWER`), since the
verifier found each equal to the reference (in math mode, `18`, `18.0` and `\\frac{36}{2}`).

Voting rules, shared by `majority_answer` and `vote_shares`:
- answers are given in sample order (by sample_index); `None` (unparseable) does not vote;
- an empty or whitespace-only answer string is an error (an unparseable answer must be `None`);
- without weights every voting answer counts 1; with weights a sample's vote is its weight, a
  `None` weight (no score for that sample) means the sample does not vote, and a NaN, infinite or
  negative weight is an error naming its index (weights are every sample's, voting or not);
- the answer with the largest total wins; a tie goes to the answer whose first voting occurrence is
  earliest; no voting sample means no answer.

A reward score that may be negative (an ORM logit) is not a weight by itself: best-of-N's weighted
majority and selection's `majority_pseudo_label` both vote with `tasks.selection.best_of_n.orm_vote_weight`,
its sigmoid.
"""
from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from decimal import Decimal

_DECIMAL = re.compile(r"^[+-]?\d+(?:\.\d+)?$", re.ASCII)
_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$", re.ASCII)
# The vote key of every answer the verifier judged correct (no answer text can equal it).
CORRECT_ANSWER = "\x00correct"


def normalize_answer(answer: str) -> str:
    """The comparison form of an answer: NFKC-folded, stripped of whitespace and `$`, comma
    thousands separators dropped, and a plain decimal number canonical (`7.50` -> `7.5`)."""
    text = unicodedata.normalize("NFKC", answer).strip().strip("$").strip() or answer.strip()
    if _THOUSANDS.match(text):
        text = text.replace(",", "")
    if not _DECIMAL.match(text):
        return text
    value = Decimal(text)
    if value == 0:
        return "0"
    canonical = format(value.normalize(), "f")
    return canonical.lstrip("+")


def _tally(answers: Sequence[str | None],
           weights: Sequence[float | None] | None) -> dict[str, float]:
    """Total vote per normalised answer, in order of first voting occurrence."""
    if weights is not None and len(weights) != len(answers):
        raise ValueError(f"got {len(weights)} weights for {len(answers)} answers")
    if weights is not None:
        for index, weight in enumerate(weights):
            if weight is None:
                continue
            if isinstance(weight, bool) or not isinstance(weight, (int, float)):
                raise ValueError(f"weight at index {index} is {weight!r}, not a number")
            if not math.isfinite(weight):
                raise ValueError(f"weight at index {index} is {weight}, not finite")
            if weight < 0:
                raise ValueError(
                    f"weight at index {index} is {weight}, negative (votes need weights >= 0)")
    totals: dict[str, float] = {}
    for index, answer in enumerate(answers):
        if answer is None:
            continue
        if not isinstance(answer, str):
            raise ValueError(f"answer at index {index} is {answer!r}, not a string or None")
        key = normalize_answer(answer)
        if not key:
            raise ValueError(
                f"answer at index {index} is empty; an unparseable answer must be None")
        weight = 1.0 if weights is None else weights[index]
        if weight is None:
            continue
        totals[key] = totals.get(key, 0.0) + float(weight)
    return totals


def majority_answer(answers: Sequence[str | None],
                    weights: Sequence[float | None] | None = None) -> str | None:
    """The (weighted) majority answer in normalised form, or None when no sample votes.

    A tie goes to the answer whose first voting occurrence is earliest.
    """
    totals = _tally(answers, weights)
    best: str | None = None
    for answer, total in totals.items():  # first-occurrence order: strict > keeps the earliest
        if best is None or total > totals[best]:
            best = answer
    return best


def vote_shares(answers: Sequence[str | None],
                weights: Sequence[float | None] | None = None) -> dict[str, float]:
    """Each normalised answer's share of the (weighted) vote, in order of first occurrence.

    Shares sum to 1; no voting sample gives {}; voters whose weights are all 0 are an error.
    """
    totals = _tally(answers, weights)
    if not totals:
        return {}
    total = sum(totals.values())
    if total <= 0:
        raise ValueError("total vote weight is 0; shares are undefined")
    return {answer: value / total for answer, value in totals.items()}
