"""The flows that `prefect.yaml` deploys: a scheduled next iteration, one iteration by hand, evaluation.

Deployment parameters are plain values (a config file path, an iteration number), so a deployment's
parameter schema stays small and `enforce_parameter_schema` rejects a bad run before a worker picks
it up. Relative paths resolve from the worker's working directory: the project folder `prefect
deploy` ran in (Prefect records it as the deployment's default pull step, so prefect.yaml names
no path).
"""
from __future__ import annotations

from typing import Annotated

from prefect import flow, get_run_logger
from pydantic import Field

from flows.iteration import run_iteration, summarise_round
from flows.self_improve import should_stop
from schemas.config import load_config
from schemas.loop import LoopConfig
from tasks.lake.sql import connect
from tasks.lake.store import Lake

ConfigPath = Annotated[str, Field(min_length=1, description="a loop config YAML file (LoopConfig)")]
Iteration = Annotated[int, Field(ge=0, description="the round to run: 0 starts from the base model")]


def pass_at_1_by_iteration(config: LoopConfig) -> dict[int, float]:
    """pass@1 of each evaluated model of the run, by iteration (empty before the first evaluation)."""
    lake = Lake(config.lake)
    if not lake.shards("evals"):
        return {}
    rows = connect(lake).execute(
        "SELECT iteration, value FROM evals WHERE run_id = ? AND metric = 'pass' AND k = 1 AND scorer IS NULL",
        [config.run_id]).fetchall()
    return {int(iteration): float(value) for iteration, value in rows}


def next_iteration(config: LoopConfig) -> tuple[int | None, str]:
    """The round a scheduled run should do next, or None with the reason the run is finished.

    Round k is done when M_{k+1} has been evaluated; a round that crashed part-way is redone (its
    finished stages are skipped by the lake).
    """
    evaluated = pass_at_1_by_iteration(config)
    done = max(evaluated, default=0)  # rounds 0..done-1 are complete
    if done >= config.rounds:
        return None, f"all {config.rounds} rounds are done"
    if done >= 1 and should_stop(config, evaluated.get(done - 1), evaluated.get(done)):
        return None, (f"early stop: pass@1 went {evaluated.get(done - 1, float('nan')):.3f} → "
                      f"{evaluated[done]:.3f} in round {done - 1}")
    return done, f"round {done} of {config.rounds}"


@flow(name="flywheel-next-iteration", log_prints=True)
def scheduled_iteration_flow(config_path: ConfigPath = "configs/demo.yaml") -> dict:
    """Run the next round of the config's run (for a cron schedule); nothing when the run is finished."""
    config = load_config(config_path, LoopConfig)
    iteration, reason = next_iteration(config)
    log = get_run_logger()
    if iteration is None:
        log.info("run %s: nothing to do, %s", config.run_id, reason)
        return {"run_id": config.run_id, "iteration": None, "reason": reason}
    log.info("run %s: %s", config.run_id, reason)
    result = run_iteration(config, iteration)
    return {"run_id": config.run_id, **summarise_round(result)}


@flow(name="flywheel-one-iteration", log_prints=True)
def one_iteration_flow(config_path: ConfigPath, iteration: Iteration = 0) -> dict:
    """Run round `iteration` of the config's run by hand (resuming whatever it already did)."""
    config = load_config(config_path, LoopConfig)
    result = run_iteration(config, iteration)
    return {"run_id": config.run_id, **summarise_round(result)}


@flow(name="flywheel-evaluate-model", log_prints=True)
def evaluate_model_flow(model: Annotated[str, Field(min_length=1, description="a model folder")],
                        config_path: ConfigPath | None = None,
                        run_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]+$")] = "manual-eval",
                        iteration: Iteration = 0) -> dict:
    """Evaluate one model folder on the eval split with the config's evaluation settings."""
    from flows.evaluation import evaluation_flow

    config = load_config(config_path, LoopConfig) if config_path else None
    lake = config.lake if config else "data/lake"
    return evaluation_flow(model, config, lake, run_id, iteration)
