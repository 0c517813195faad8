"""Evaluation: sample n answers per held-out problem (plus one greedy), score, and compute
pass@k, avg@n, maj@k, rm@k, greedy accuracy, the all-steps-correct share and the unparseable
share with bootstrap intervals, as rows of the evals table.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from schemas.generation import PromptFormat, SamplingConfig
from tasks import ids
from tasks.generate import GenerationBackend, generate_candidates, generation_hash
from tasks.lake import Lake
from tasks.metrics import Sample, evaluate_groups, greedy_accuracy, metric_rows
from tasks.score import load_candidates, score_candidates
from tasks.sql import connect
from tasks.verify import CORRECT, TIMEOUT, UNPARSEABLE

logger = logging.getLogger("flywheel.evaluate")
EVAL_SPLIT = "eval"


@dataclass
class EvalSummary:
    """Headline figures of one evaluation (all metric rows are in the lake)."""

    model_id: str
    iteration: int
    values: dict[str, float]
    rows_written: int


def greedy_sampling(sampling: SamplingConfig) -> SamplingConfig:
    """The greedy counterpart of a sampling config (one answer at temperature 0)."""
    return sampling.model_copy(update={"n": 1, "temperature": 0.0})


def eval_hash(sampling: SamplingConfig, fmt: PromptFormat, prompt_ids: Sequence[str],
              scorers: Sequence[Any], rm_scorers: Sequence[str] = ()) -> str:
    """Id of an evaluation's config: sampled and greedy generation, the eval prompt set, the
    rule scorers' versions and the reward-model scorers read for rm@k."""
    return ids.content_hash("eval", generation_hash(sampling, fmt, "\n"),
                            generation_hash(greedy_sampling(sampling), fmt, "\n"), sorted(prompt_ids),
                            {s.name: s.version for s in scorers}, sorted(rm_scorers))


def eval_candidates(lake: Lake, iteration: int, model_id: str, s_hash: str) -> list[dict]:
    """The eval-split candidates of one model and sampling hash, joined with prompts."""
    return load_candidates(lake, iteration, model_id=model_id, prompt_split=EVAL_SPLIT, sampling_hash=s_hash)


def score_map(lake: Lake, iteration: int, scorer: str) -> dict[str, dict]:
    """scores rows of one scorer in one iteration, by candidate_id."""
    rows = connect(lake).execute(
        "SELECT candidate_id, value, label, extracted_answer, step_scores FROM scores "
        "WHERE iteration = ? AND scorer = ?",
        [iteration, scorer]).to_arrow_table().to_pylist()
    return {r["candidate_id"]: r for r in rows}


def metrics_from_lake(lake: Lake, iteration: int, candidates: Sequence[dict], ks: Sequence[int],
                      rm_scorers: Sequence[str] = (), step_scorer: str | None = "step_verifier",
                      seed: int = 0) -> list:
    """MetricValues of candidates (grouped by prompt, ordered by sample_index) from their scores."""
    verdicts = score_map(lake, iteration, "verifier")
    steps = score_map(lake, iteration, step_scorer) if step_scorer else {}
    rms = {name: score_map(lake, iteration, name) for name in rm_scorers}
    groups: dict[str, list[Sample]] = {}
    for c in sorted(candidates, key=lambda c: (c["prompt_id"], c["sample_index"])):
        scores = {name: (rms[name].get(c["candidate_id"]) or {}).get("value") for name in rm_scorers}
        groups.setdefault(c["prompt_id"], []).append(
            verified_sample(c["candidate_id"], verdicts, steps.get(c["candidate_id"]), scores))
    return evaluate_groups(groups, ks, seed=seed)


def verified_sample(candidate_id: str, verdicts: Mapping[str, dict], step: dict | None,
                    scores: Mapping[str, float | None]) -> Sample:
    """A candidate as evaluation sees it: the verifier's verdict, the step verifier's, and scores."""
    verdict = verdicts.get(candidate_id)
    if verdict is None:
        raise ValueError(f"candidate {candidate_id} has no verifier score")
    unparseable = verdict["label"] in (UNPARSEABLE, TIMEOUT)
    return Sample(answer=None if unparseable else (verdict["extracted_answer"] or ""),
                  correct=verdict["label"] == CORRECT, unparseable=unparseable,
                  all_steps_correct=None if step is None else step["value"] == 1.0, scores=scores)


def evaluate_model(
    lake: Lake,
    backend: GenerationBackend,
    scorers: Sequence[Any],
    prompts: Sequence[dict],
    *,
    run_id: str,
    model_id: str,
    iteration: int,
    sampling: SamplingConfig,
    fmt: PromptFormat,
    ks: Sequence[int],
    benchmark: str,
    rm_scorers: Sequence[str] = (),
    chunk_size: int = 512,
) -> EvalSummary:
    """Generate (resuming), score and measure a model on eval prompts; write the evals rows."""
    if not prompts:
        raise ValueError("no eval prompts")
    if any(p["split"] != EVAL_SPLIT for p in prompts):
        raise ValueError("evaluate_model only runs on eval-split prompts")
    greedy = greedy_sampling(sampling)
    # A greedy-only evaluation (T=0, n=1) samples exactly the greedy candidates: generate and
    # score them once.
    for params in [sampling] if greedy == sampling else [sampling, greedy]:
        generate_candidates(lake, backend, prompts, model_id=model_id, iteration=iteration,
                            sampling=params, fmt=fmt, chunk_size=chunk_size)
    sampled = eval_candidates(lake, iteration, model_id, generation_hash(sampling, fmt, "\n"))
    greedy_rows = eval_candidates(lake, iteration, model_id, generation_hash(greedy, fmt, "\n"))
    distinct = list({c["candidate_id"]: c for c in sampled + greedy_rows}.values())
    for scorer in scorers:
        score_candidates(lake, scorer, distinct, iteration)
    values = metrics_from_lake(lake, iteration, sampled, ks, rm_scorers)
    verdicts = score_map(lake, iteration, "verifier")
    values.append(greedy_accuracy([verdicts[c["candidate_id"]]["label"] == CORRECT for c in greedy_rows]))
    config_hash = eval_hash(sampling, fmt, [p["prompt_id"] for p in prompts], scorers, rm_scorers)
    rows = metric_rows(values, run_id, iteration, model_id, EVAL_SPLIT, benchmark, config_hash)
    lake.write("evals", rows, iteration=iteration, shard=f"evals-{run_id}-{model_id}-{config_hash}")
    headline = {f"{v.metric}@{v.k}" + (f"[{v.scorer}]" if v.scorer else ""): v.value for v in values}
    logger.info("eval %s (iteration %d): %s", model_id, iteration,
                ", ".join(f"{k} {v:.3f}" for k, v in headline.items()))
    return EvalSummary(model_id=model_id, iteration=iteration, values=headline, rows_written=len(rows))
