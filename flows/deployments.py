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

from flows.evaluation import evaluation_flow
from flows.loop import iteration_flow
from schemas.config import load_config
from schemas.loop import LoopConfig
from tasks.rounds.context import next_iteration

ConfigPath = Annotated[str, Field(min_length=1, description="a loop config YAML file (LoopConfig)")]
Iteration = Annotated[int, Field(ge=0, description="the round to run: 0 starts from the base model")]


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
    return {"run_id": config.run_id, **iteration_flow(config, iteration)}


@flow(name="flywheel-one-iteration", log_prints=True)
def one_iteration_flow(config_path: ConfigPath, iteration: Iteration = 0) -> dict:
    """Run round `iteration` of the config's run by hand (resuming whatever it already did)."""
    config = load_config(config_path, LoopConfig)
    return {"run_id": config.run_id, **iteration_flow(config, iteration)}


@flow(name="flywheel-evaluate-model", log_prints=True)
def evaluate_model_flow(model: Annotated[str, Field(min_length=1, description="a model folder")],
                        config_path: ConfigPath | None = None,
                        run_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]+$")] = "manual-eval",
                        iteration: Iteration = 0) -> dict:
    """Evaluate one model folder on the eval split with the config's evaluation settings."""
    config = load_config(config_path, LoopConfig) if config_path else None
    lake = config.lake if config else "data/lake"
    return evaluation_flow(model, config, lake, run_id, iteration)
