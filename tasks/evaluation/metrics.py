"""Evaluation metrics: pass@k (unbiased, `pass_at_k`), avg@n, maj@k, rm@k, greedy accuracy, the
shares of all-steps-correct and unparseable samples, with percentile-bootstrap confidence intervals
over problems, and their rows for the `evals` table.

Per-problem functions (`pass_at_k`, `maj_at_k`, `rm_at_k`) take one problem's samples in
sample_index order; `evaluate_groups` applies them to every problem and reports each metric as the
mean over problems of the per-problem value, with a bootstrap CI over those same values.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from schemas import table_spec
from schemas.evals import METRICS
from tasks.scoring.vote import majority_answer, normalize_answer

# Bootstrap draws are generated in chunks of at most this many indices, to bound memory.
_BOOT_CHUNK = 2_000_000


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_bool(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with n samples, c of them correct: 1 − C(n−c,k)/C(n,k)."""
    for name, value in (("n", n), ("c", c), ("k", k)):
        if not _is_int(value):
            raise ValueError(f"{name}={value!r} is not an integer")
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must satisfy 1 <= k <= n={n}")
    if not 0 <= c <= n:
        raise ValueError(f"c={c} must satisfy 0 <= c <= n={n}")
    if n - c < k:
        return 1.0
    # C(n-c,k)/C(n,k) = prod_{i=n-c+1}^{n} (1 - k/i); every factor lies in (0, 1).
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def _check_counts(correct_counts: Sequence[int], n: int) -> None:
    if not _is_int(n) or n < 1:
        raise ValueError(f"n={n!r} must be an integer >= 1")
    if len(correct_counts) == 0:
        raise ValueError("no problems: correct_counts is empty")
    for index, c in enumerate(correct_counts):
        if not _is_int(c) or not 0 <= c <= n:
            raise ValueError(
                f"correct count {c!r} at index {index} is not an integer in [0, n={n}]")


def avg_at_n(correct_counts: Sequence[int], n: int) -> float:
    """avg@n: the mean over problems of c/n (each problem has n samples, c correct)."""
    _check_counts(correct_counts, n)
    return float(np.mean(np.asarray(correct_counts, dtype=np.float64) / n))


def pass_at_n(correct_counts: Sequence[int], n: int) -> float:
    """pass@n: the share of problems with at least one correct sample among n."""
    _check_counts(correct_counts, n)
    return float(np.mean(np.asarray(correct_counts) > 0))


def _check_first_k(length: int, correct: Sequence[bool], k: int, what: str) -> None:
    if len(correct) != length:
        raise ValueError(f"got {len(correct)} correctness flags for {length} {what}")
    for index, flag in enumerate(correct):
        if not _is_bool(flag):
            raise ValueError(f"correct at index {index} is {flag!r}, not a bool")
    if not _is_int(k) or not 1 <= k <= length:
        raise ValueError(f"k={k!r} must satisfy 1 <= k <= n={length} samples")


def maj_at_k(answers: Sequence[str | None], correct: Sequence[bool], k: int,
             weights: Sequence[float | None] | None = None) -> bool:
    """maj@k for one problem: whether the (weighted) majority of the first k samples is correct.

    Votes follow `tasks.scoring.vote` (None answers and None weights do not vote; ties go to the earliest
    first occurrence); no vote means not correct. Samples sharing a normalised answer must share
    their correctness, else ValueError naming both indices.
    """
    _check_first_k(len(answers), correct, k, "answers")
    if weights is not None and len(weights) != len(answers):
        raise ValueError(f"got {len(weights)} weights for {len(answers)} answers")
    majority_answer(answers, weights)  # validates every answer and weight, not just the first k
    winner = majority_answer(answers[:k], None if weights is None else weights[:k])
    if winner is None:
        return False
    verdict: tuple[int, bool] | None = None
    for index, answer in enumerate(answers):
        if answer is None or normalize_answer(answer) != winner:
            continue
        if verdict is None:
            verdict = (index, bool(correct[index]))
        elif verdict[1] != bool(correct[index]):
            raise ValueError(
                f"answer {winner!r} is marked correct={verdict[1]} at index {verdict[0]} "
                f"but correct={bool(correct[index])} at index {index}")
    assert verdict is not None
    return verdict[1]


def rm_at_k(scores: Sequence[float | None], correct: Sequence[bool], k: int) -> bool:
    """rm@k (best-of-k) for one problem: whether the top-scored of the first k samples is correct.

    Ties go to the lower sample index; a None score never beats a real one; all None → not correct.
    """
    _check_first_k(len(scores), correct, k, "scores")
    for index, score in enumerate(scores):
        if score is None:
            continue
        if _is_bool(score) or not isinstance(score, (int, float, np.floating, np.integer)):
            raise ValueError(f"score at index {index} is {score!r}, not a number")
        if math.isnan(score):
            raise ValueError(f"score at index {index} is NaN")
    best: int | None = None
    for index in range(k):
        score = scores[index]
        if score is not None and (best is None or score > scores[best]):
            best = index
    return False if best is None else bool(correct[best])


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve: the chance a random positive outscores a random negative (ties 1/2).

    Needs at least one positive and one negative; a NaN score is an error.
    """
    if len(scores) != len(labels):
        raise ValueError(f"auroc got {len(scores)} scores for {len(labels)} labels")
    values = np.asarray(scores, dtype=np.float64)
    if np.isnan(values).any():
        raise ValueError("auroc: a score is NaN")
    truth = np.asarray([bool(x) for x in labels])
    positives, negatives = int(truth.sum()), int((~truth).sum())
    if positives == 0 or negatives == 0:
        raise ValueError(f"auroc needs both classes; got {positives} positive and {negatives} negative")
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_values = values[order]
    start = 0
    while start < len(values):  # average ranks over ties
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2 + 1
        start = end + 1
    rank_sum = float(ranks[truth].sum())
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def bootstrap_ci(values_per_problem: Sequence[float], n_boot: int = 1000, alpha: float = 0.05,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap (1 − alpha) interval of the mean over problems; same seed, same CI."""
    values = np.asarray(values_per_problem, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError("bootstrap_ci needs a non-empty list of per-problem values")
    if not np.all(np.isfinite(values)):
        bad = int(np.flatnonzero(~np.isfinite(values))[0])
        raise ValueError(f"per-problem value at index {bad} is {values[bad]}, not finite")
    if not _is_int(n_boot) or n_boot < 1:
        raise ValueError(f"n_boot={n_boot!r} must be an integer >= 1")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha!r} must lie in (0, 1)")
    rng = np.random.default_rng(seed)
    m = values.size
    rows = max(1, _BOOT_CHUNK // m)
    means = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, rows):
        stop = min(n_boot, start + rows)
        means[start:stop] = values[rng.integers(0, m, size=(stop - start, m))].mean(axis=1)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


@dataclass(frozen=True)
class MetricValue:
    """One metric over a set of problems: its value, bootstrap CI and problem count."""

    metric: str
    k: int
    scorer: str | None
    value: float
    ci_low: float | None
    ci_high: float | None
    n_problems: int

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"unknown metric {self.metric!r} (metrics: {', '.join(METRICS)})")
        if (self.scorer is None) == (self.metric == "rm"):
            raise ValueError(f"metric {self.metric!r}: scorer must be set for 'rm' and only for it")


@dataclass(frozen=True)
class Sample:
    """One generated sample of a problem as evaluation needs it.

    `answer` is the extracted final answer (ignored when `unparseable`); `scores` maps a scorer
    name to its value for this sample (None: no score).
    """

    answer: str | None
    correct: bool
    unparseable: bool
    all_steps_correct: bool | None = None
    scores: Mapping[str, float | None] = field(default_factory=dict)


_SAMPLE_FIELDS = ("answer", "correct", "unparseable", "all_steps_correct", "scores")


def _as_sample(raw: Sample | Mapping[str, Any], prompt: str, index: int) -> Sample:
    """A validated Sample from a Sample or a mapping with Sample's fields."""
    where = f"prompt {prompt} sample {index}"
    if isinstance(raw, Mapping):
        missing = [name for name in ("answer", "correct", "unparseable") if name not in raw]
        if missing:
            raise ValueError(f"{where}: missing field {missing[0]!r}")
        extra = sorted(set(raw) - set(_SAMPLE_FIELDS))
        if extra:
            raise ValueError(f"{where}: unexpected field {extra[0]!r}")
        raw = Sample(**{**raw, "scores": raw.get("scores") or {}})
    elif not isinstance(raw, Sample):
        raise ValueError(f"{where}: expected a Sample or a mapping, got {type(raw).__name__}")
    for name in ("correct", "unparseable"):
        if not _is_bool(getattr(raw, name)):
            raise ValueError(f"{where}: {name}={getattr(raw, name)!r} is not a bool")
    if raw.all_steps_correct is not None and not _is_bool(raw.all_steps_correct):
        raise ValueError(f"{where}: all_steps_correct={raw.all_steps_correct!r} is not a bool")
    if raw.unparseable and raw.correct:
        raise ValueError(f"{where}: marked both unparseable and correct")
    if not raw.unparseable and not isinstance(raw.answer, str):
        raise ValueError(f"{where}: parseable sample has answer {raw.answer!r}, not a string")
    return raw


def _metric(metric: str, k: int, scorer: str | None, per_problem: Sequence[float],
            n_boot: int, alpha: float, seed: int) -> MetricValue:
    low, high = bootstrap_ci(per_problem, n_boot=n_boot, alpha=alpha, seed=seed)
    return MetricValue(metric=metric, k=k, scorer=scorer, value=float(np.mean(per_problem)),
                       ci_low=low, ci_high=high, n_problems=len(per_problem))


def metric_value(metric: str, k: int, per_problem: Sequence[float], n_boot: int = 1000, alpha: float = 0.05,
                 seed: int = 0) -> MetricValue:
    """A metric without a scorer: the mean of per-problem values with its bootstrap interval."""
    return _metric(metric, k, None, per_problem, n_boot, alpha, seed)


def evaluate_groups(groups: Mapping[str, Sequence[Sample | Mapping[str, Any]]], ks: Sequence[int],
                    n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> list[MetricValue]:
    """Every sampled-evaluation metric over problems `groups` (prompt_id → samples by sample_index).

    For each k in `ks`: pass@k, maj@k and rm@k per scorer (scorers: every name in any sample's
    scores, sorted; a missing score is None). Then at k = n: avg, pass (only when n is not in `ks`,
    which already gives it), all_steps (omitted when no sample knows it; partly known is an error)
    and unparseable. Each value is the mean over problems of the per-problem value, with a
    bootstrap CI over problems (the same resamples for every metric).
    """
    if not groups:
        raise ValueError("no problems to evaluate: groups is empty")
    problems: dict[str, list[Sample]] = {}
    n: int | None = None
    first_prompt = ""
    for prompt, raw_samples in groups.items():
        samples = [_as_sample(raw, prompt, index) for index, raw in enumerate(raw_samples)]
        if not samples:
            raise ValueError(f"prompt {prompt} has no samples")
        if n is None:
            n, first_prompt = len(samples), prompt
        elif len(samples) != n:
            raise ValueError(
                f"prompt {prompt} has {len(samples)} samples but prompt {first_prompt} has {n}")
        problems[prompt] = samples
    assert n is not None
    if len(ks) == 0:
        raise ValueError("ks is empty")
    seen: set[int] = set()
    for k in ks:
        if not _is_int(k) or k < 1:
            raise ValueError(f"k={k!r} must be an integer >= 1")
        if k > n:
            raise ValueError(f"k={k} exceeds n={n} samples per prompt")
        if k in seen:
            raise ValueError(f"k={k} is listed twice in ks")
        seen.add(k)
    scorers = sorted({name for samples in problems.values() for s in samples for name in s.scores})

    counts = [sum(s.correct for s in samples) for samples in problems.values()]
    answers = [[None if s.unparseable else s.answer for s in samples]
               for samples in problems.values()]
    flags = [[bool(s.correct) for s in samples] for samples in problems.values()]

    def build(metric: str, k: int, scorer: str | None, per_problem: list[float]) -> MetricValue:
        return _metric(metric, k, scorer, per_problem, n_boot, alpha, seed)

    values: list[MetricValue] = []
    for k in ks:
        values.append(build("pass", k, None, [pass_at_k(n, c, k) for c in counts]))
        values.append(build("maj", k, None, [
            float(_in_prompt(prompt, maj_at_k, ans, cor, k))
            for prompt, ans, cor in zip(problems, answers, flags)]))
        for scorer in scorers:
            values.append(build("rm", k, scorer, [
                float(_in_prompt(prompt, rm_at_k, [s.scores.get(scorer) for s in samples], cor, k))
                for (prompt, samples), cor in zip(problems.items(), flags)]))
    values.append(build("avg", n, None, [c / n for c in counts]))
    if n not in seen:
        values.append(build("pass", n, None, [pass_at_k(n, c, n) for c in counts]))
    known = [[s.all_steps_correct is not None for s in samples] for samples in problems.values()]
    if any(map(any, known)):
        for prompt, row in zip(problems, known):
            if not all(row):
                raise ValueError(
                    f"prompt {prompt}: all_steps_correct is unknown for sample {row.index(False)} "
                    "but known for other samples")
        values.append(build("all_steps", n, None, [
            sum(bool(s.all_steps_correct) for s in samples) / n for samples in problems.values()]))
    values.append(build("unparseable", n, None, [
        sum(s.unparseable for s in samples) / n for samples in problems.values()]))
    return values


def _in_prompt(prompt: str, function: Any, *args: Any) -> Any:
    """Call a per-problem metric, prefixing any ValueError with the prompt it concerns."""
    try:
        return function(*args)
    except ValueError as error:
        raise ValueError(f"prompt {prompt}: {error}") from None


def greedy_accuracy(correct: Sequence[bool], n_boot: int = 1000, alpha: float = 0.05,
                    seed: int = 0) -> MetricValue:
    """Greedy accuracy: the share of problems whose single greedy sample is correct (k = 1)."""
    if len(correct) == 0:
        raise ValueError("no problems: correct is empty")
    for index, flag in enumerate(correct):
        if not _is_bool(flag):
            raise ValueError(f"correct at index {index} is {flag!r}, not a bool")
    return _metric("greedy", 1, None, [float(flag) for flag in correct], n_boot, alpha, seed)


def metric_rows(values: Sequence[MetricValue], run_id: str, iteration: int, model_id: str,
                split: str, benchmark: str, eval_hash: str) -> list[dict]:
    """Rows of the `evals` table for `values` under one evaluation config (`eval_hash`); a repeated
    (metric, k, scorer) is an error."""
    columns = table_spec("evals").columns
    seen: set[tuple[str, int, str | None]] = set()
    rows = []
    for value in values:
        key = (value.metric, value.k, value.scorer)
        if key in seen:
            raise ValueError(f"metric {value.metric!r} k={value.k} scorer={value.scorer!r} repeats")
        seen.add(key)
        row = {
            "run_id": run_id, "iteration": int(iteration), "model_id": model_id, "split": split,
            "benchmark": benchmark, "metric": value.metric, "k": int(value.k),
            "scorer": value.scorer, "value": float(value.value),
            "ci_low": None if value.ci_low is None else float(value.ci_low),
            "ci_high": None if value.ci_high is None else float(value.ci_high),
            "n_problems": int(value.n_problems), "eval_hash": eval_hash,
        }
        assert list(row) == columns, "metric_rows is out of date with schemas/evals.py"
        rows.append(row)
    return rows
