"""The reward-model flow: train an ORM and a step-level PRM from a policy's samples, and measure them.

    sample train + eval candidates (policy) ─ verifier, step verifier
      ─ Math-Shepherd step labels (rollouts through the same engine) ─ release the engine
      ─ train ORM (verified, balanced) and PRM (soft step labels)
      ─ score held-out candidates: ORM, PRM, PRL (reference = base model)
      ─ figures: ORM AUROC, best-of-n per method, step-level AUROC vs true step labels
      ─ data/reports/<run>/reward_models.{md,json} and rm@n rows in evals

Every stage resumes through the lake (candidates and scores by id) and the model folders (by the
hash of their inputs), so a rerun does only what is missing. The stage bodies are in
`tasks/training/reward_models_run.py`.
"""
from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from schemas.reward_models import RewardModelsConfig
from tasks.lake.sql import refresh_views_file
from tasks.training import reward_models_run as stages
from tasks.training.reward_models_run import RewardModelsRun


@task(name="sample-and-label", cache_policy=NO_CACHE)
def sample_and_label_task(run: RewardModelsRun) -> dict:
    """Generate train and eval candidates, rule-score them, and label steps Math-Shepherd style."""
    return stages.sample_and_label(run)


@task(name="train-reward-models", cache_policy=NO_CACHE)
def train_reward_models_task(run: RewardModelsRun) -> dict[str, dict]:
    """Train (or reuse) the ORM on verified train candidates and the PRM on Math-Shepherd labels."""
    return stages.train_reward_models(run)


@task(name="score-held-out", cache_policy=NO_CACHE)
def score_held_out_task(run: RewardModelsRun, models: dict[str, dict]) -> None:
    """Score the held-out candidates with the ORM, the PRM and PRL (reference: the base model)."""
    stages.score_held_out(run, models)


@flow(name="flywheel-reward-models", log_prints=True)
def reward_models_flow(config: RewardModelsConfig) -> dict:
    """Train the ORM and PRM from the policy's samples and report how well they rank held-out samples."""
    run = RewardModelsRun.start(config)
    counts = sample_and_label_task(run)
    models = train_reward_models_task(run)
    score_held_out_task(run, models)
    result = stages.write_results(run, counts, models, stages.measure(run))
    print(f"reward-model report written to {result.pop('report')}")
    refresh_views_file(config.lake)
    return result
