"""The loop as Prefect flows: one round (evaluate M_k → generate → score → select → finetune →
evaluate M_{k+1}), and R rounds with early stopping.

Every stage's output is keyed by content hashes of its inputs, so the lake is the cache: a
finished stage is skipped without starting an engine, and a crashed stage redoes only what is
missing. The engine over M_{k+1} that evaluated it serves the next round (`Engines`). Prefect's
own result cache is therefore off for every task (`cache_policy=NO_CACHE`): it would duplicate the
lake's, and it cannot hash an engine argument. The stage bodies are plain functions in
`tasks/rounds/stages.py`; this module only wraps and composes them.
"""
from __future__ import annotations

import json
import time

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.bootstrap import bootstrap_flow
from schemas.loop import LoopConfig
from tasks.generation.generate import LazyBackend, generation_chunks
from tasks.lake.lock import iteration_lock
from tasks.lake.sql import refresh_views_file
from tasks.lake.store import Lake
from tasks.prompts.sources import load_prompt_sources
from tasks.rounds import stages
from tasks.rounds.context import (Engines, ModelRef, Round, RoundResult, should_stop, summarise_round,
                                  timed_stage, write_run_summary)
from tasks.runtime.logs import run_logger
from tasks.runtime.runners import group_units, run_shards


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(round_: Round, engine: LazyBackend, model: ModelRef, iteration: int) -> dict[str, float]:
    """Evaluate a model on the eval split, unless this run already has its evals rows."""
    return stages.evaluate_in_round(round_, engine, model, iteration)


@task(name="generate-shard", cache_policy=NO_CACHE)
def generate_shard_task(round_: Round, engine: LazyBackend, prompts: list[dict]) -> dict:
    """Sample candidates for one shard of the round's train prompts (resuming)."""
    return stages.generate_shard(round_, engine, prompts)


@task(name="score-shard", cache_policy=NO_CACHE)
def score_shard_task(round_: Round, prompt_ids: list[str]) -> dict[str, dict]:
    """Run every scorer of the round on the candidates of one shard of prompts (resuming)."""
    return stages.score_shard(round_, prompt_ids)


@task(name="label", cache_policy=NO_CACHE)
def label_task(round_: Round, engine: LazyBackend) -> dict | None:
    """Math-Shepherd labels for the round's answer-correct candidates (rollouts by its engine)."""
    return stages.label_in_round(round_, engine)


@task(name="judge", cache_policy=NO_CACHE)
def judge_task(round_: Round, engine: LazyBackend) -> dict | None:
    """Rank each prompt's candidates with the round's pairwise-judge tournament."""
    return stages.judge_in_round(round_, engine)


@task(name="train-reward-models", cache_policy=NO_CACHE)
def train_reward_models_task(round_: Round) -> dict[str, dict]:
    """Train (or reuse) the reward models the round learns from its own data."""
    return stages.train_reward_models_in_round(round_)


@task(name="select", cache_policy=NO_CACHE)
def select_task(round_: Round) -> dict:
    """Apply the selection policy to the model's scored candidates of this iteration."""
    return stages.select_in_round(round_)


@task(name="finetune", cache_policy=NO_CACHE)
def finetune_task(round_: Round) -> ModelRef:
    """Finetune M_{k+1} on the kept samples (reused when the same inputs already made it)."""
    return stages.finetune_in_round(round_)


def generate_stage(round_: Round, engine: LazyBackend) -> dict:
    """Sample from the round's model on its train prompts, mapped over prompt shards."""
    started = time.perf_counter()
    runner = round_.config.runner
    shards = group_units(generation_chunks(round_.train_prompts(), round_.config.generation.chunk_size),
                         runner.shard_count)
    if runner.kind != "threads":
        engine.close()  # the workers start their own engines; free this one's memory first
    reports = run_shards(generate_shard_task, runner,
                         [{"round_": round_, "engine": engine, "prompts": shard} for shard in shards])
    total = {key: sum(r[key] for r in reports) for key in reports[0]}
    run_logger("flywheel.iteration").info(
        "generate: %d prompts in %d shard(s), %d candidates written, %d/%d chunks already done, %.1f s",
        total["prompts"], len(shards), total["written"], total["chunks_skipped"], total["chunks"],
        time.perf_counter() - started)
    return {**total, "candidates": total["prompts"] * round_.config.generation.sampling.n, "shards": len(shards)}


def score_stage(round_: Round) -> dict:
    """Score the round's candidates, mapped over shards of whole prompt groups."""
    started = time.perf_counter()
    shards = group_units(stages.scoring_units(round_), round_.config.runner.shard_count)
    out = stages.merge_score_reports(run_shards(score_shard_task, round_.config.runner,
                                                [{"round_": round_, "prompt_ids": shard} for shard in shards]))
    for name, total in out.items():
        run_logger("flywheel.iteration").info(
            "score %s: %d scored, %d already scored in %d shard(s), labels %s, %.1f s", name, total["scored"],
            total["skipped"], len(shards), json.dumps(total["labels"]), time.perf_counter() - started)
    return out


def run_iteration(config: LoopConfig, iteration: int, engines: Engines | None = None) -> RoundResult:
    """Round `iteration` (tasks of the current flow run), holding the lake's lock for it. With
    `engines` (a run's `Engines`), the engine over the new model stays up for the next round;
    without, the round stops its engines itself."""
    if engines is None:
        with Engines(config) as own:
            return run_iteration(config, iteration, own)
    try:
        with iteration_lock(config.lake, iteration):
            result = run_round(Round.start(config, iteration), engines)
    except BaseException:
        engines.release()
        raise
    refresh_views_file(config.lake)
    return result


def run_round(round_: Round, engines: Engines) -> RoundResult:
    """evaluate M_k, generate, score, select, finetune, evaluate M_{k+1}."""
    model = round_.model_in
    result = RoundResult(iteration=round_.iteration, model_in=model, model_out=model)
    with timed_stage(result, "evaluate"):
        result.evals[model.model_id] = evaluate_task(round_, engines.over(model), model, round_.iteration)
    with timed_stage(result, "generate"):
        generated = generate_stage(round_, engines.over(model))
    result.prompts, result.candidates = generated["prompts"], generated["candidates"]
    if round_.math_shepherd() is not None:
        with timed_stage(result, "label"):
            label_task(round_, engines.over(model))
    if round_.judge() is not None:
        with timed_stage(result, "judge"):
            judge_task(round_, engines.over(model))
    engines.release()  # free the engine's memory before scoring with reward models and training
    if round_.trained_reward_models():
        with timed_stage(result, "reward_train"):
            result.trained = train_reward_models_task(round_)
    with timed_stage(result, "score"):
        score_stage(round_)
    with timed_stage(result, "select"):
        selected = select_task(round_)
    result.kept, result.policy_hash = selected["kept"], selected["policy_hash"]
    with timed_stage(result, "finetune"):
        result.model_out = finetune_task(round_)
    new_model = result.model_out
    with timed_stage(result, "evaluate_next"):
        result.evals[new_model.model_id] = evaluate_task(round_, engines.over(new_model), new_model,
                                                         round_.iteration + 1)
    return result


@flow(name="flywheel-iteration", log_prints=True)
def iteration_flow(config: LoopConfig, iteration: int = 0) -> dict:
    """One round of the loop by hand: evaluate M_k, generate, score, select, finetune, evaluate M_{k+1}."""
    return summarise_round(run_iteration(config, iteration))


@flow(name="flywheel-self-improve", log_prints=True)
def self_improve_flow(config: LoopConfig) -> dict:
    """Bootstrap if configured, then run up to `rounds` iterations; returns a summary per round."""
    log = get_run_logger()
    if config.bootstrap is not None:
        bootstrap_flow(config.bootstrap, config.lake)
    if config.prompt_sources:
        log.info("prompts: %s", json.dumps(load_prompt_sources(Lake(config.lake), config.prompt_sources)))
    summaries: list[dict] = []
    stopped_early = False
    with Engines(config) as engines:  # the engine over M_{k+1} that evaluated it serves round k+1
        for iteration in range(config.rounds):
            result = run_iteration(config, iteration, engines)
            summary = summarise_round(result)
            summaries.append(summary)
            log.info("round %d: pass@1 %.3f → %.3f, kept %d of %d candidates, %s", iteration,
                     summary["pass@1_in"], summary["pass@1_out"], result.kept, result.candidates,
                     ", ".join(f"{k} {v:.0f}s" for k, v in summary["seconds"].items()))
            if should_stop(config, summary["pass@1_in"], summary["pass@1_out"]):
                log.info("early stop after round %d: pass@1 did not improve", iteration)
                stopped_early = True
                break
    return write_run_summary(config, {"run_id": config.run_id, "rounds": summaries,
                                      "stopped_early": stopped_early})
