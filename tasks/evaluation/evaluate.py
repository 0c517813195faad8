"""Evaluation: sample n answers per held-out problem (plus one greedy), score, and compute
pass@k, avg@n, maj@k, rm@k, greedy accuracy, the all-steps-correct share and the unparseable
share with bootstrap intervals, as rows of the evals table.

rm@k ranks by reward scores already in the lake, each named as in `schemas.policy.score_ref`:
`orm` reads the ORM's `value`; `prm:min`, `prm:last`, `prm:mean`, `prm:product` aggregate the PRM's
`step_scores` (`tasks.scoring.aggregate.aggregate_steps`). The name is the rm rows' `scorer`. Before any
metric is computed, a named scorer must have a row for every evaluated candidate and a number for
at least one (else a ValueError naming it: rm@k would be a silent 0). A candidate whose row gives
no number (a null value, no step scores) is never picked while any of the first k has one; when
none of them has one, nothing is picked and rm@k counts the problem as not solved.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from schemas.generation import EngineConfig, PromptFormat, SamplingConfig
from schemas.loop import EvalStage, GenerationStage
from schemas.policy import ScoreRef, check_score_names
from tasks.evaluation.metrics import MetricValue, Sample, evaluate_groups, greedy_accuracy, metric_rows, metric_value
from tasks.generation.generate import (GenerationBackend, backend_engine, format_prompt, generate_candidates,
                                      generation_hash)
from tasks.lake import ids
from tasks.lake.sql import connect
from tasks.lake.store import Lake
from tasks.scoring.score import load_candidates, score_candidates
from tasks.scoring.verify import CORRECT, TIMEOUT, UNPARSEABLE
from tasks.scoring.vote import CORRECT_ANSWER
from tasks.selection.select import candidate_score, score_column

logger = logging.getLogger("flywheel.evaluate")
EVAL_SPLIT = "eval"
DRIFT_VERSION = "drift-1"  # tokens@n, answers@n and log_ratio@n rows


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
              scorers: Sequence[Any], rm_scorers: Sequence[str] = (), step_separator: str = "\n",
              reference_id: str | None = None, *, engine: EngineConfig) -> str:
    """Id of an evaluation's config: sampled and greedy generation (with the step separator and the
    engine), the eval prompt set, the rule scorers' versions, the reward scores read for rm@k and
    the model the drift's log-ratio is measured against."""
    return ids.content_hash("eval", generation_hash(sampling, fmt, step_separator, engine),
                            generation_hash(greedy_sampling(sampling), fmt, step_separator, engine),
                            sorted(prompt_ids), {s.name: s.version for s in scorers}, sorted(rm_scorers),
                            DRIFT_VERSION, reference_id)


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


def rm_scores(lake: Lake, iteration: int, candidates: Sequence[dict],
              rm_scorers: Sequence[str]) -> dict[str, dict[str, float | None]]:
    """Per rm score name (`orm`, `prm:min`, ...), each candidate's number (None: its row has none).

    A bad or repeated name, a scorer with no row for some candidate, or one that gives no
    candidate a number is a ValueError naming the score.
    """
    refs = check_score_names(rm_scorers)
    wanted = [c["candidate_id"] for c in candidates]
    out: dict[str, dict[str, float | None]] = {}
    rows_of: dict[str, dict[str, dict]] = {}
    for name, ref in zip(rm_scorers, refs):
        if ref.scorer not in rows_of:
            rows_of[ref.scorer] = score_map(lake, iteration, ref.scorer)
        rows = rows_of[ref.scorer]
        missing = [cid for cid in wanted if cid not in rows]
        if len(missing) == len(wanted):
            raise ValueError(f"rm scorer {name!r}: no {ref.scorer!r} score rows for the {len(wanted)} "
                             f"evaluated candidates in iteration {iteration}")
        if missing:
            raise ValueError(f"rm scorer {name!r}: {len(missing)} of the {len(wanted)} evaluated candidates "
                             f"have no {ref.scorer!r} score row (first: candidate {missing[0]})")
        numbers = {cid: _rm_number(rows[cid], ref, name) for cid in wanted}
        if all(v is None for v in numbers.values()):
            raise ValueError(_no_numbers(name, ref, [rows[cid] for cid in wanted]))
        out[name] = numbers
    return out


def _rm_number(row: dict, ref: ScoreRef, name: str) -> float | None:
    """One scores row's number under `ref`, read as selection reads it."""
    frame_row = {"candidate_id": row["candidate_id"],
                 score_column(ref.scorer, "value"): row["value"],
                 score_column(ref.scorer, "steps"): row["step_scores"]}
    return candidate_score(frame_row, ref, where=f"rm scorer {name!r}")


def _no_numbers(name: str, ref: ScoreRef, rows: Sequence[dict]) -> str:
    """The error for a score no evaluated candidate has, with a hint at the field that is there."""
    if ref.field == "value":
        message = f"rm scorer {name!r}: none of the {len(rows)} evaluated candidates has a {ref.scorer!r} value"
        if any(r["step_scores"] for r in rows):
            message += (f"; its rows carry step scores: name an aggregate, "
                        f"e.g. '{ref.scorer}:min'")
        return message
    message = f"rm scorer {name!r}: none of the {len(rows)} evaluated candidates has {ref.scorer!r} step scores"
    if any(r["value"] is not None for r in rows):
        message += f"; its rows carry a value: name it {ref.scorer!r}"
    return message


def metrics_from_lake(lake: Lake, iteration: int, candidates: Sequence[dict], ks: Sequence[int],
                      rm_scorers: Sequence[str] = (), step_scorer: str | None = "step_verifier",
                      seed: int = 0) -> list:
    """MetricValues of candidates (grouped by prompt, ordered by sample_index) from their scores;
    rm@k for each of `rm_scorers` (see the module docstring for the names and null scores)."""
    verdicts = score_map(lake, iteration, "verifier")
    steps = score_map(lake, iteration, step_scorer) if step_scorer else {}
    rms = rm_scores(lake, iteration, candidates, rm_scorers)
    groups: dict[str, list[Sample]] = {}
    for c in sorted(candidates, key=lambda c: (c["prompt_id"], c["sample_index"])):
        scores = {name: rms[name][c["candidate_id"]] for name in rm_scorers}
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
    # Votes follow the verifier's equivalence: every answer it judged correct is one answer.
    answer = CORRECT_ANSWER if verdict["label"] == CORRECT else (verdict["extracted_answer"] or "")
    return Sample(answer=None if unparseable else answer,
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
    stage: EvalStage,
    generation: GenerationStage,
    reference: tuple[str, str] | None = None,
) -> EvalSummary:
    """Generate (resuming), score and measure a model on eval prompts; write the evals rows.

    `stage` says how to sample and measure (n, temperature, ks, benchmark, rm@k scorers);
    `generation` how prompts are formatted, steps split and chunks sized, as in the loop's train
    generation. rm@k reads the reward scores `stage.rm_scorers` names (module docstring); an
    unusable one fails before any row. `reference` (folder, model id) is the model the drift's
    log-ratio is measured against (the run's base model); None: no log_ratio row.
    """
    sampling, ks, benchmark, rm_scorers = stage.sampling, stage.ks, stage.benchmark, stage.rm_scorers
    fmt, chunk_size, step_separator = generation.format, generation.chunk_size, generation.step_separator
    if not prompts:
        raise ValueError("no eval prompts")
    if any(p["split"] != EVAL_SPLIT for p in prompts):
        raise ValueError("evaluate_model only runs on eval-split prompts")
    if not isinstance(step_separator, str) or not step_separator:
        raise ValueError(f"step_separator is empty or not a string: {step_separator!r}")
    check_score_names(rm_scorers)  # a misspelt name fails before any generation
    greedy = greedy_sampling(sampling)
    # A greedy-only evaluation (T=0, n=1) samples exactly the greedy candidates: generate and
    # score them once.
    for params in [sampling] if greedy == sampling else [sampling, greedy]:
        generate_candidates(lake, backend, prompts, model_id=model_id, iteration=iteration,
                            sampling=params, fmt=fmt, chunk_size=chunk_size, step_separator=step_separator)
    engine = backend_engine(backend)
    sampled = eval_candidates(lake, iteration, model_id, generation_hash(sampling, fmt, step_separator, engine))
    greedy_rows = eval_candidates(lake, iteration, model_id, generation_hash(greedy, fmt, step_separator, engine))
    distinct = list({c["candidate_id"]: c for c in sampled + greedy_rows}.values())
    for scorer in scorers:
        score_candidates(lake, scorer, distinct, iteration)
    values = metrics_from_lake(lake, iteration, sampled, ks, rm_scorers)
    verdicts = score_map(lake, iteration, "verifier")
    values.append(greedy_accuracy([verdicts[c["candidate_id"]]["label"] == CORRECT for c in greedy_rows]))
    ratios = None
    if reference is not None:
        ratios = ({c["candidate_id"]: [0.0] * c["num_tokens"] for c in sampled} if reference[1] == model_id
                  else log_ratios(sampled, reference[0], fmt))
    values += drift_metrics(sampled, verdicts, sampling.n, ratios)
    config_hash = eval_hash(sampling, fmt, [p["prompt_id"] for p in prompts], scorers, rm_scorers,
                            step_separator, None if reference is None else reference[1], engine=engine)
    rows = metric_rows(values, run_id, iteration, model_id, EVAL_SPLIT, benchmark, config_hash)
    lake.write("evals", rows, iteration=iteration, shard=f"evals-{run_id}-{model_id}-{config_hash}")
    headline = {f"{v.metric}@{v.k}" + (f"[{v.scorer}]" if v.scorer else ""): v.value for v in values}
    logger.info("eval %s (iteration %d): %s", model_id, iteration,
                ", ".join(f"{k} {v:.3f}" for k, v in headline.items()))
    return EvalSummary(model_id=model_id, iteration=iteration, values=headline, rows_written=len(rows))


def log_ratios(candidates: Sequence[dict], reference_path: str, fmt: PromptFormat) -> dict[str, list[float]]:
    """Per candidate, log pi(a_t) - log pi_ref(a_t) for each sampled token: the policy's stored
    log-probabilities against the reference model's, read by Hugging Face on the same tokens."""
    from tasks.generation.ref_logprobs import candidate_logprobs, load_reference

    lacking = [c["candidate_id"] for c in candidates if c["token_ids"] is None or c["token_logprobs"] is None]
    if lacking:
        raise ValueError(f"drift: candidate {lacking[0]} has no token log-probabilities to compare with the base")
    model, tokenizer = load_reference(reference_path)
    prompts = {c["prompt_id"]: format_prompt(c["problem"], fmt, tokenizer) for c in candidates}
    reference = candidate_logprobs(model, tokenizer, candidates, prompts)
    return {c["candidate_id"]: [float(p) - float(q) for p, q in zip(c["token_logprobs"], reference[c["candidate_id"]])]
            for c in candidates}


def drift_metrics(candidates: Sequence[dict], verdicts: Mapping[str, dict], n: int,
                  ratios: Mapping[str, Sequence[float]] | None = None) -> list[MetricValue]:
    """Drift of the sampled answers, each a mean over problems with a bootstrap interval:
    tokens@n (mean completion tokens), answers@n (distinct parseable final answers per problem, the
    verifier's correct answers counting as one) and, given per-token log-ratios to the base model,
    log_ratio@n (each problem's mean per-token log-ratio over its samples' tokens)."""
    groups: dict[str, list[dict]] = {}
    for c in candidates:
        groups.setdefault(c["prompt_id"], []).append(c)
    tokens, answers, ratio = [], [], []
    for group in groups.values():
        tokens.append(sum(c["num_tokens"] for c in group) / len(group))
        samples = [verified_sample(c["candidate_id"], verdicts, None, {}) for c in group]
        answers.append(float(len({s.answer for s in samples if not s.unparseable})))
        if ratios is not None:
            values = [v for c in group for v in ratios[c["candidate_id"]]]
            ratio.append(sum(values) / len(values) if values else 0.0)
    out = [metric_value("tokens", n, tokens), metric_value("answers", n, answers)]
    if ratios is not None:
        out.append(metric_value("log_ratio", n, ratio))
    return out
