"""Reward-guided inference (best-of-N) as a Prefect flow.

    prompts of a split ─ sample N per prompt (policy; resumes)
      ─ score: ORM, PRM (the methods' signals), rule verifier (reporting only, where references exist)
      ─ judge tournaments: knockout, round-robin ELO (the policy or another model as pairwise judge)
      ─ pick one candidate per prompt by every method (tasks/selection/best_of_n.py)
      ─ picks table; accuracy per method with its cost, data/reports/<run>/best_of_n.{md,json}

Every stage resumes through the lake (candidates, scores and judge scores by id), so a rerun starts
no engine and only rewrites the picks. No method reads a reference answer: the verifier only marks
which picks are correct, for the report. The stage bodies are in `tasks/selection/best_of_n_run.py`.
"""
from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from schemas.best_of_n import BestOfNConfig
from tasks.generation.generate import LazyBackend
from tasks.lake.sql import refresh_views_file
from tasks.prompts.sources import split_prompts
from tasks.runtime.logs import run_logger
from tasks.selection import best_of_n_run as stages
from tasks.selection.best_of_n import METHOD_NEEDS, EngineCost, SamplingCost
from tasks.selection.best_of_n_run import BestOfNRun


@task(name="sample", cache_policy=NO_CACHE)
def sample_task(run: BestOfNRun, engine: LazyBackend, prompts: list[dict]) -> SamplingCost:
    """Sample n candidates per prompt from the policy (resuming); the shared sampling cost."""
    return stages.sample(run, engine, prompts)


@task(name="score", cache_policy=NO_CACHE)
def score_task(run: BestOfNRun, candidates: list[dict], methods: list[str]) -> dict[str, int]:
    """Score the candidates with the reward models the methods need (and the verifier, for the report)."""
    return stages.score(run, candidates, methods)


@task(name="judge", cache_policy=NO_CACHE)
def judge_task(run: BestOfNRun, engine: LazyBackend, candidates: list[dict], method: str) -> dict[str, EngineCost]:
    """Rank every prompt's candidates with one judge tournament (resuming)."""
    return stages.judge(run, engine, candidates, method)


@task(name="pick", cache_policy=NO_CACHE)
def pick_task(run: BestOfNRun, candidates: list[dict], methods: list[str],
              judge_costs: dict[str, dict[str, EngineCost]]) -> list[dict]:
    """One pick per prompt and method, written to the picks table."""
    return stages.pick(run, candidates, methods, judge_costs)


@flow(name="flywheel-best-of-n", log_prints=True)
def best_of_n_flow(config: BestOfNConfig) -> dict:
    """Sample N answers per prompt, pick one by every reference-free method, write the picks, and
    report each method's accuracy (where references exist) beside its cost."""
    log = run_logger("flywheel.best_of_n")
    run = BestOfNRun.start(config)
    methods, skipped = stages.plan_methods(config)
    for method, why in skipped.items():
        log.warning("method %s skipped: %s", method, why)
    prompts = split_prompts(run.lake, config.split, config.prompts)
    engine = LazyBackend(run.policy_path, config.engine)
    try:
        sampling = sample_task(run, engine, prompts)
        candidates = stages.run_candidates(run, prompts)
        score_task(run, candidates, methods)
        if run.judge_path != run.policy_path:
            engine.close()
            engine = LazyBackend(run.judge_path, config.engine)
        judge_methods = [m for m in methods if METHOD_NEEDS[m] == "judge"]
        gap = stages.judge_context_gap(config, engine, candidates) if judge_methods else None
        if gap and config.methods is not None:
            raise ValueError(f"method {judge_methods[0]!r} cannot run: {gap}")
        if gap:
            for method in judge_methods:
                methods.remove(method)
                skipped[method] = gap
                log.warning("method %s skipped: %s", method, gap)
        judge_costs = {m: judge_task(run, engine, candidates, m) for m in methods if METHOD_NEEDS[m] == "judge"}
    finally:
        engine.close()
    rows = pick_task(run, candidates, methods, judge_costs)
    result = stages.write_report(run, candidates, methods, skipped, sampling, rows)
    print(f"best-of-{config.sampling.n} on {len(prompts)} {config.split} prompts:\n{result['table']}\n"
          f"report written to {result['report']}")
    refresh_views_file(config.lake)
    return result
