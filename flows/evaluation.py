"""Evaluate one model folder on the eval split as a Prefect flow (pass@k, maj@k, avg@n, greedy)."""
from __future__ import annotations

from prefect import flow

from flows.iteration import ModelRef, evaluate_task
from schemas.loop import LoopConfig
from tasks.generation.generate import LazyBackend, model_id_for
from tasks.lake.sql import refresh_views_file


@flow(name="flywheel-evaluate", log_prints=True)
def evaluation_flow(model: str, config: LoopConfig | None = None, lake: str = "data/lake",
                    run_id: str = "manual-eval", iteration: int = 0) -> dict:
    """Evaluate `model` with the config's evaluation settings (default: the demo's)."""
    config = config or LoopConfig(run_id=run_id, lake=lake)
    config = config.model_copy(update={"run_id": run_id})
    engine = LazyBackend(model, config.generation.engine)
    try:
        values = evaluate_task(config, engine, ModelRef(model, model_id_for(model)), iteration)
    finally:
        engine.close()
    refresh_views_file(config.lake)
    return {"model": model, "run_id": run_id, "iteration": iteration, "metrics": values}
