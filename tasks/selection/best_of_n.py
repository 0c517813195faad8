"""Reward-guided inference: pick one of a prompt's N candidates by a method that needs no reference.

Methods (`METHODS`, one function each, all pure):

- `orm`: the candidate with the highest ORM value (its logit).
- `prm_min`, `prm_last`, `prm_product`, `prm_mean`: the highest PRM score, the per-step scores
  aggregated late by `tasks.scoring.aggregate.aggregate_steps`. A candidate without steps aggregates to
  None and loses to every candidate with a score.
- `majority`: the most frequent final answer (`tasks.scoring.vote.majority_answer`: unparseable answers do
  not vote, a tie goes to the answer whose first sample comes earliest); the pick is the first
  sample (lowest sample_index) giving that answer.
- `weighted_majority`: the same vote with each sample weighted by `orm_vote_weight`, the sigmoid of
  its ORM logit. A logit is any real number and a vote must not be negative; the sigmoid keeps the
  ORM's order and reads as its probability that the sample is correct, in [0, 1].
- `knockout`, `elo`: the winner of the pairwise judge's tournament (`tasks.scoring.tournament`), i.e. the
  highest judge score of that tournament (knockout: round reached, unique to the winner; ELO:
  rating, equal ratings to the earlier sample as the tournament itself rules).

Shared rules: candidates are joined to their scores by candidate_id, never by position, and
ordered by sample_index within a prompt; every argmax breaks ties to the lower sample_index; a
prompt where nothing can be ranked (no voting answer, no step anywhere) gets its first sample with
score None. A score a method needs that is missing for any candidate of a prompt is an error
(`MissingScoreError`) naming the prompt, the method and the candidate.

`CountingBackend` and `PromptCostJudge` measure what the judge spends (engine calls, completion
tokens) per prompt, for the cost columns of the `picks` table.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from schemas.best_of_n import METHOD_NAMES
from schemas.generation import SamplingConfig
from tasks.evaluation.metrics import bootstrap_ci
from tasks.generation.generate import Completion, GenerationBackend
from tasks.scoring.aggregate import aggregate_steps
from tasks.scoring.judge import Judge, JudgeError, JudgeRequest, JudgeResult
from tasks.scoring.tournament import comparisons_needed
from tasks.scoring.vote import majority_answer, normalize_answer

JUDGE_SCORERS = {"knockout": "judge_knockout", "elo": "judge_elo"}  # scores.scorer of each tournament
PRM_METHODS = {"prm_min": "min", "prm_last": "last", "prm_product": "product", "prm_mean": "mean"}
# The scorer each method reads ("judge" stands for the method's own tournament scorer).
METHOD_NEEDS: dict[str, str | None] = {
    "orm": "orm", **{m: "prm" for m in PRM_METHODS}, "majority": None, "weighted_majority": "orm",
    "knockout": "judge", "elo": "judge",
}


class MissingScoreError(ValueError):
    """A method needs a score (or an answer) that a candidate does not have."""


@dataclass(frozen=True)
class Signals:
    """Everything the methods read, by candidate_id.

    `answers`: the extracted final answer (None: unparseable); `orm`: the ORM value; `prm`: the
    PRM's per-step scores; `judge`: per tournament ('knockout', 'elo'), the judge score.
    """

    answers: Mapping[str, str | None] = field(default_factory=dict)
    orm: Mapping[str, float | None] = field(default_factory=dict)
    prm: Mapping[str, Sequence[float] | None] = field(default_factory=dict)
    judge: Mapping[str, Mapping[str, float | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class Pick:
    """The candidate one method chose for one prompt, and the score it ranked the candidate by."""

    prompt_id: str
    method: str
    candidate_id: str
    sample_index: int
    answer: str | None
    score: float | None


Choice = tuple[str, float | None]  # (candidate_id, score)


# -- the methods ----------------------------------------------------------------------------------
def _needed(group: Sequence[dict], values: Mapping[str, Any], what: str) -> dict[str, Any]:
    """values of every candidate of the group, or MissingScoreError naming the first without."""
    out = {}
    for c in group:
        if c["candidate_id"] not in values:
            raise MissingScoreError(f"no {what} for candidate {c['candidate_id']} (sample {c['sample_index']})")
        out[c["candidate_id"]] = values[c["candidate_id"]]
    return out


def argmax_pick(group: Sequence[dict], scores: Mapping[str, float | None]) -> Choice:
    """The highest-scored candidate of a group in sample order (ties: lower sample_index).

    A None score loses to any number; all None gives the first sample with score None.
    """
    best_id, best_score = None, None
    for c in group:
        score = scores[c["candidate_id"]]
        if score is None:
            continue
        if math.isnan(score):
            raise ValueError(f"score of candidate {c['candidate_id']} is NaN")
        if best_score is None or score > best_score:
            best_id, best_score = c["candidate_id"], float(score)
    return (best_id, best_score) if best_id is not None else (group[0]["candidate_id"], None)


def pick_orm(group: Sequence[dict], signals: Signals) -> Choice:
    """The candidate with the highest ORM value."""
    values = _needed(group, signals.orm, "ORM score")
    missing = [cid for cid, v in values.items() if v is None]
    if missing:
        raise MissingScoreError(f"no ORM score for candidate {missing[0]} (its row has no value)")
    return argmax_pick(group, values)


def pick_prm(group: Sequence[dict], signals: Signals, how: str) -> Choice:
    """The candidate with the highest PRM score under one step aggregation (min, last, product, mean)."""
    steps = _needed(group, signals.prm, "PRM step scores")
    return argmax_pick(group, {cid: aggregate_steps(s, how) for cid, s in steps.items()})


def orm_vote_weight(logit: float) -> float:
    """A sample's vote in weighted majority: the sigmoid of its ORM logit, in [0, 1]."""
    if logit >= 0:
        return 1.0 / (1.0 + math.exp(-logit))
    z = math.exp(logit)
    return z / (1.0 + z)


def _vote_pick(group: Sequence[dict], answers: Mapping[str, str | None],
               weights: Mapping[str, float] | None) -> Choice:
    """The first sample giving the (weighted) majority answer, scored by that answer's vote total."""
    ordered = [answers[c["candidate_id"]] for c in group]
    vector = None if weights is None else [weights[c["candidate_id"]] for c in group]
    winner = majority_answer(ordered, vector)
    if winner is None:
        return group[0]["candidate_id"], None
    chosen, total = None, 0.0
    for c, answer in zip(group, ordered):  # zip of one list built from `group` itself: same order
        if answer is not None and normalize_answer(answer) == winner:
            chosen = chosen or c["candidate_id"]
            total += 1.0 if weights is None else weights[c["candidate_id"]]
    assert chosen is not None
    return chosen, total


def pick_majority(group: Sequence[dict], signals: Signals) -> Choice:
    """The first sample giving the most frequent final answer (unparseable answers do not vote)."""
    return _vote_pick(group, _needed(group, signals.answers, "extracted answer"), None)


def pick_weighted_majority(group: Sequence[dict], signals: Signals) -> Choice:
    """The first sample giving the answer with the largest total of sigmoid(ORM logit) votes."""
    answers = _needed(group, signals.answers, "extracted answer")
    logits = _needed(group, signals.orm, "ORM score")
    missing = [cid for cid, v in logits.items() if v is None]
    if missing:
        raise MissingScoreError(f"no ORM score for candidate {missing[0]} (its row has no value)")
    return _vote_pick(group, answers, {cid: orm_vote_weight(v) for cid, v in logits.items()})


def pick_tournament(group: Sequence[dict], signals: Signals, tournament: str) -> Choice:
    """The winner of the judge's tournament: its highest score (ties: lower sample_index)."""
    scores = _needed(group, signals.judge.get(tournament, {}), f"{tournament} judge score")
    return argmax_pick(group, scores)


METHODS: dict[str, Callable[[Sequence[dict], Signals], Choice]] = {
    "orm": pick_orm,
    **{name: partial(pick_prm, how=how) for name, how in PRM_METHODS.items()},
    "majority": pick_majority,
    "weighted_majority": pick_weighted_majority,
    "knockout": partial(pick_tournament, tournament="knockout"),
    "elo": partial(pick_tournament, tournament="elo"),
}
assert tuple(METHODS) == METHOD_NAMES, "METHODS is out of date with schemas/best_of_n.py"


def prompt_groups(candidates: Sequence[dict]) -> dict[str, list[dict]]:
    """Candidates by prompt_id (prompts in id order), each group in sample_index order.

    Two candidates of one prompt with the same sample_index, or the same candidate twice, are an error.
    """
    groups: dict[str, list[dict]] = {}
    seen: set[str] = set()
    for c in sorted(candidates, key=lambda c: (c["prompt_id"], c["sample_index"])):
        if c["candidate_id"] in seen:
            raise ValueError(f"candidate {c['candidate_id']} is listed twice")
        seen.add(c["candidate_id"])
        group = groups.setdefault(c["prompt_id"], [])
        if group and group[-1]["sample_index"] == c["sample_index"]:
            raise ValueError(f"prompt {c['prompt_id']}: two candidates have sample_index {c['sample_index']}")
        group.append(c)
    return groups


def pick_all(method: str, candidates: Sequence[dict], signals: Signals) -> list[Pick]:
    """One pick per prompt by `method`, in prompt_id order."""
    if method not in METHODS:
        raise ValueError(f"unknown best-of-n method {method!r} (methods: {', '.join(METHODS)})")
    picks = []
    for prompt_id, group in prompt_groups(candidates).items():
        try:
            candidate_id, score = METHODS[method](group, signals)
        except MissingScoreError as error:
            raise MissingScoreError(f"prompt {prompt_id}: method {method!r}: {error}") from None
        index = next(c["sample_index"] for c in group if c["candidate_id"] == candidate_id)
        picks.append(Pick(prompt_id, method, candidate_id, index, signals.answers.get(candidate_id), score))
    return picks


# -- cost -----------------------------------------------------------------------------------------
def method_work(method: str, n: int, votes: int) -> dict[str, int]:
    """A method's extra work per prompt of n candidates: reward-model passes and judge comparisons."""
    needs = METHOD_NEEDS[method]
    return {"rm_passes": n if needs in ("orm", "prm") else 0,
            "judge_comparisons": comparisons_needed(n, votes, method) if needs == "judge" else 0}


class CountingBackend:
    """A GenerationBackend that passes every call through and counts calls, prompts and completion tokens."""

    def __init__(self, inner: GenerationBackend) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls = self.prompts = self.tokens = 0

    @property
    def tokenizer(self) -> Any:
        """The inner backend's tokenizer (None when it has none)."""
        return getattr(self.inner, "tokenizer", None)

    def prompt_limits(self) -> tuple[Any, int] | None:
        """The inner backend's tokenizer and context length (None when it cannot tell)."""
        limits = getattr(self.inner, "prompt_limits", None)
        return limits() if limits else None

    def generate(self, prompts: Sequence[str], sampling: SamplingConfig,
                 seeds: Sequence[int]) -> list[list[Completion]]:
        """The inner backend's completions, counted."""
        outputs = self.inner.generate(prompts, sampling, seeds)
        self.calls += 1
        self.prompts += len(prompts)
        self.tokens += sum(len(c.token_ids) for completions in outputs for c in completions)
        return outputs

    def close(self) -> None:
        """Close the inner backend."""
        self.inner.close()


@dataclass
class EngineCost:
    """Engine work: batched generate calls and completion tokens."""

    engine_calls: int = 0
    generated_tokens: int = 0


class PromptCostJudge:
    """A Judge that charges the engine work of each judge_batch call to the prompt it judged.

    `counter` is the CountingBackend under the wrapped judge; `prompt_of` maps candidate_id to
    prompt_id. Tournaments judge one prompt per call; a call mixing prompts is an error.
    """

    def __init__(self, judge: Judge, counter: CountingBackend, prompt_of: Mapping[str, str]) -> None:
        self.judge, self.counter, self.prompt_of = judge, counter, prompt_of
        self.costs: dict[str, EngineCost] = {}

    @property
    def version(self) -> str | None:
        """The wrapped judge's settings version (None when it has none): counting changes no verdict."""
        return getattr(self.judge, "version", None)

    def _prompt(self, pairs: Sequence[JudgeRequest]) -> str | None:
        prompts = set()
        for pair in pairs:
            if pair.first_id not in self.prompt_of:
                raise JudgeError(f"judge request for unknown candidate {pair.first_id!r}")
            prompts.add(self.prompt_of[pair.first_id])
        if len(prompts) > 1:
            raise JudgeError(f"one judge_batch call mixes {len(prompts)} prompts; costs are per prompt")
        return next(iter(prompts), None)

    def judge_batch(self, pairs: Sequence[JudgeRequest], vote_seeds: Sequence[int]) -> list[JudgeResult]:
        """The wrapped judge's results; its engine calls and tokens are added to the prompt's cost."""
        prompt_id = self._prompt(pairs)
        calls, tokens = self.counter.calls, self.counter.tokens
        results = self.judge.judge_batch(pairs, vote_seeds)
        if prompt_id is not None:
            cost = self.costs.setdefault(prompt_id, EngineCost())
            cost.engine_calls += self.counter.calls - calls
            cost.generated_tokens += self.counter.tokens - tokens
        return results


# -- the report -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class MethodSummary:
    """One method over a run's prompts: accuracy against references (with CI) and its extra cost.

    Accuracy and CI are None when no prompt has a reference; a cost is None when some prompt's
    cost was not measured.
    """

    method: str
    prompts: int
    with_reference: int
    accuracy: float | None
    ci_low: float | None
    ci_high: float | None
    rm_passes: int
    judge_comparisons: int
    engine_calls: int | None
    generated_tokens: int | None


def _total(values: Sequence[int | None]) -> int | None:
    return None if any(v is None for v in values) else int(sum(values))  # type: ignore[arg-type]


def summarise_picks(rows: Sequence[Mapping[str, Any]], seed: int = 0) -> list[MethodSummary]:
    """Per method (in METHODS order): mean of `correct` over prompts with a reference, a bootstrap
    95% CI over those prompts, and the summed extra cost, from picks rows."""
    summaries = []
    for method in METHODS:
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        judged = [float(r["correct"]) for r in mine if r["correct"] is not None]
        low, high = bootstrap_ci(judged, seed=seed) if judged else (None, None)
        summaries.append(MethodSummary(
            method=method, prompts=len(mine), with_reference=len(judged),
            accuracy=sum(judged) / len(judged) if judged else None, ci_low=low, ci_high=high,
            rm_passes=sum(r["rm_passes"] for r in mine),
            judge_comparisons=sum(r["judge_comparisons"] for r in mine),
            engine_calls=_total([r["extra_engine_calls"] for r in mine]),
            generated_tokens=_total([r["extra_generated_tokens"] for r in mine])))
    return summaries


@dataclass(frozen=True)
class SamplingCost:
    """The cost every method shares: sampling n candidates for each prompt."""

    prompts: int
    n: int
    engine_calls: int
    generated_tokens: int


def _cell(value: float | int | None, digits: int | None = None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}" if digits is not None else f"{value:,}"


def render_table(sampling: SamplingCost, summaries: Sequence[MethodSummary]) -> str:
    """The side-by-side table (markdown): the shared sampling cost once, then each method's
    accuracy with its 95% CI and its cost on top of sampling."""
    lines = ["| method | accuracy | 95% CI | engine calls | generated tokens | RM passes | judge comparisons |",
             "|---|---|---|---|---|---|---|",
             f"| sampling {sampling.n} per prompt (shared) | | | {_cell(sampling.engine_calls)} | "
             f"{_cell(sampling.generated_tokens)} | | |"]
    for s in summaries:
        ci = "n/a" if s.ci_low is None else f"{s.ci_low:.3f}–{s.ci_high:.3f}"
        lines.append(f"| {s.method} | {_cell(s.accuracy, 3)} | {ci} | {_cell(s.engine_calls)} | "
                     f"{_cell(s.generated_tokens)} | {_cell(s.rm_passes)} | {_cell(s.judge_comparisons)} |")
    return "\n".join(lines)
