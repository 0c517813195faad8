"""How good are the reward models? Figures over held-out candidates whose truth is known.

- outcome AUROC of a scalar scorer (ORM) against the verifier's correct / not correct (unparseable
  and timed-out answers are not correct), over all candidates and within each prompt (the mean over
  prompts with both outcomes: does it rank a prompt's samples, not just easy against hard problems);
- best-of-n accuracy: the chosen sample is correct, per reference-free method — the ORM, the PRM
  under each step aggregation, majority vote — beside a random pick (its expectation, avg@n) and
  the oracle ceiling (pass@n);
- step-level AUROC of per-step scores (PRM, PRL, Math-Shepherd labels) against the process-level
  rule verifier's true step labels, over every step, and over the steps of answer-correct samples
  only (where a wrong step is hidden behind a right answer);
- purity AUROC: a sample's score against every step being right, over answer-correct samples.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from tasks.evaluation.evaluate import verified_sample
from tasks.evaluation.metrics import MetricValue, Sample, auroc, evaluate_groups
from tasks.scoring.aggregate import AGGREGATES, aggregate_steps
from tasks.scoring.verify import CORRECT


def _safe_auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """AUROC, or None when one class is missing."""
    if not scores or all(labels) or not any(labels):
        return None
    return auroc(scores, labels)


def outcome_auroc(candidates: Sequence[dict], verifier: Mapping[str, dict], scores: Mapping[str, dict]) -> dict:
    """AUROC of `scores` values against verifier correctness, over candidates having both."""
    values, labels = [], []
    for c in candidates:
        score, verdict = scores.get(c["candidate_id"]), verifier.get(c["candidate_id"])
        if score is None or verdict is None or score["value"] is None:
            continue
        values.append(float(score["value"]))
        labels.append(verdict["label"] == CORRECT)
    return {"auroc": _safe_auroc(values, labels), "candidates": len(values), "positives": sum(labels)}


def _sample_number(score: dict, aggregate: str | None) -> float | None:
    """A scores row's number for ranking a sample: its value, or with `aggregate` its step scores
    aggregated (None without them)."""
    if aggregate is None:
        return score["value"]
    return aggregate_steps(score["step_scores"], aggregate) if score["step_scores"] else None


def within_prompt_auroc(candidates: Sequence[dict], verifier: Mapping[str, dict], scores: Mapping[str, dict],
                        aggregate: str | None = None) -> dict:
    """Mean over prompts of the AUROC of `scores` against verifier correctness among that prompt's
    own candidates, over prompts with both outcomes: whether a scorer ranks samples, not problems.

    The number read is a row's `value`, or with `aggregate` (min, last, product, mean) its step
    scores aggregated. Candidates without a verdict or a number are left out.
    """
    groups: dict[str, tuple[list[float], list[bool]]] = {}
    for c in candidates:
        score, verdict = scores.get(c["candidate_id"]), verifier.get(c["candidate_id"])
        if score is None or verdict is None:
            continue
        number = _sample_number(score, aggregate)
        if number is None:
            continue
        values, labels = groups.setdefault(c["prompt_id"], ([], []))
        values.append(float(number))
        labels.append(verdict["label"] == CORRECT)
    per_prompt = [auroc(values, labels) for values, labels in groups.values() if any(labels) and not all(labels)]
    return {"auroc": sum(per_prompt) / len(per_prompt) if per_prompt else None, "prompts": len(per_prompt),
            "prompts_scored": len(groups)}


def purity_auroc(candidates: Sequence[dict], truth: Mapping[str, dict], scores: Mapping[str, dict],
                 only: set[str], aggregate: str | None = None) -> dict:
    """AUROC of a sample's number (its `value`, or with `aggregate` its step scores aggregated)
    against every step being right (the step verifier's value 1), over the candidates in `only`
    (the answer-correct ones): whether a scorer tells the clean right answers from those behind a
    wrong step, which is what selecting among answer-correct samples needs."""
    values, labels = [], []
    for c in candidates:
        cid = c["candidate_id"]
        score, true = scores.get(cid), truth.get(cid)
        if cid not in only or score is None or true is None or true["value"] is None:
            continue
        number = _sample_number(score, aggregate)
        if number is None:
            continue
        values.append(float(number))
        labels.append(true["value"] == 1.0)
    return {"auroc": _safe_auroc(values, labels), "candidates": len(values), "clean": sum(labels)}


def step_auroc(candidates: Sequence[dict], truth: Mapping[str, dict], scores: Mapping[str, dict],
               only: set[str] | None = None) -> dict:
    """AUROC of per-step scores against true step labels, over candidates whose step counts agree.

    `only`, when given, limits the candidates to those ids. Candidates whose lists differ in length
    are counted as `mismatched` and left out.
    """
    values, labels = [], []
    used = mismatched = 0
    for c in candidates:
        cid = c["candidate_id"]
        if only is not None and cid not in only:
            continue
        steps, true = (scores.get(cid) or {}).get("step_scores"), (truth.get(cid) or {}).get("step_scores")
        if not steps or not true:
            continue
        if len(steps) != len(true):
            mismatched += 1
            continue
        used += 1
        values += [float(s) for s in steps]
        labels += [bool(t >= 0.5) for t in true]
    return {"auroc": _safe_auroc(values, labels), "candidates": used, "steps": len(values),
            "wrong_steps": len(labels) - sum(labels), "mismatched": mismatched}


def best_of_n_values(candidates: Sequence[dict], verifier: Mapping[str, dict],
                     scalar: Mapping[str, Mapping[str, dict]], stepwise: Mapping[str, Mapping[str, dict]],
                     truth: Mapping[str, dict] | None = None, seed: int = 0) -> list[MetricValue]:
    """evaluate_groups at k = n with rm@n for every scalar scorer and every step scorer × aggregate.

    Scalar scorers are named as given; step scorers as `<name>:<aggregate>`.
    """
    groups: dict[str, list[Sample]] = {}
    for c in sorted(candidates, key=lambda c: (c["prompt_id"], c["sample_index"])):
        scores: dict[str, float | None] = {}
        for name, rows in scalar.items():
            scores[name] = (rows.get(c["candidate_id"]) or {}).get("value")
        for name, rows in stepwise.items():
            steps = (rows.get(c["candidate_id"]) or {}).get("step_scores")
            for how in AGGREGATES:
                scores[f"{name}:{how}"] = aggregate_steps(steps, how)
        step = (truth or {}).get(c["candidate_id"])
        groups.setdefault(c["prompt_id"], []).append(verified_sample(c["candidate_id"], verifier, step, scores))
    n = len(next(iter(groups.values())))
    return evaluate_groups(groups, [n], seed=seed)


def answer_correct_with_wrong_step(candidates: Sequence[dict], verifier: Mapping[str, dict],
                                   truth: Mapping[str, dict]) -> dict:
    """How many answer-correct candidates reach the answer through at least one wrong step."""
    correct = [c["candidate_id"] for c in candidates
               if (verifier.get(c["candidate_id"]) or {}).get("label") == CORRECT and c["candidate_id"] in truth]
    wrong = [cid for cid in correct if truth[cid]["value"] != 1.0]
    return {"answer_correct": len(correct), "with_wrong_step": len(wrong),
            "share": len(wrong) / len(correct) if correct else None}


def summarise(values: Sequence[MetricValue]) -> dict[str, Any]:
    """{'rm[orm]': 0.41, 'maj': ..., 'avg': ..., 'pass': ...} with CIs, from best_of_n_values."""
    out: dict[str, Any] = {}
    for v in values:
        key = f"{v.metric}[{v.scorer}]" if v.scorer else v.metric
        out[key] = {"value": v.value, "ci": [v.ci_low, v.ci_high], "k": v.k, "problems": v.n_problems}
    return out
