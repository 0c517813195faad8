"""Evaluate one model folder on the eval split as a Prefect flow (pass@k, maj@k, avg@n, greedy)."""
from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from schemas.loop import LoopConfig
from tasks.generation.generate import LazyBackend, model_id_for
from tasks.lake.sql import refresh_views_file
from tasks.lake.store import Lake
from tasks.rounds.context import ModelRef, Round, round_sampling_hash
from tasks.rounds.stages import evaluate_in_round


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(round_: Round, engine: LazyBackend) -> dict[str, float]:
    """Evaluate the round's model on the eval split, unless the run already has its evals rows."""
    return evaluate_in_round(round_, engine, round_.model_in, round_.iteration)


@flow(name="flywheel-evaluate", log_prints=True)
def evaluation_flow(model: str, config: LoopConfig | None = None, lake: str = "data/lake",
                    run_id: str = "manual-eval", iteration: int = 0) -> dict:
    """Evaluate `model` with the config's evaluation settings (default: the demo's)."""
    config = config or LoopConfig(run_id=run_id, lake=lake)
    config = config.model_copy(update={"run_id": run_id})
    round_ = Round(config, iteration, Lake(config.lake), ModelRef(model, model_id_for(model)),
                   round_sampling_hash(config))
    engine = LazyBackend(model, config.generation.engine)
    try:
        values = evaluate_task(round_, engine)
    finally:
        engine.close()
    refresh_views_file(config.lake)
    return {"model": model, "run_id": run_id, "iteration": iteration, "metrics": values}
