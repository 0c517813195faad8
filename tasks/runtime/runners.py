"""Prefect task runners from a TaskRunnerConfig, and cutting a stage's work into shards.

Shards are made of whole units (generation chunks, scoring chunks), so every unit is processed
exactly as it would be without sharding: the rows a stage writes are the same whichever runner
and however many shards.
"""
from __future__ import annotations

from typing import Any, Sequence, TypeVar

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from schemas.runner import TaskRunnerConfig

T = TypeVar("T")
LOOPBACK = "127.0.0.1"


def make_task_runner(config: TaskRunnerConfig) -> TaskRunner:
    """The task runner the config names. A local Dask cluster binds loopback only; a local Ray
    cluster listens on all interfaces, which the config must accept (`ray_listens_on_all_interfaces`)."""
    if config.kind == "threads":
        return ThreadPoolTaskRunner(max_workers=config.workers)
    if config.kind == "dask":
        import dask
        from prefect_dask import DaskTaskRunner

        # workers that are not daemons may start processes (the verifier's pool, an engine)
        dask.config.set({"distributed.worker.daemon": False})
        if config.address:
            return DaskTaskRunner(address=config.address)
        return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs={
            "n_workers": config.workers, "threads_per_worker": 1, "processes": True,
            "host": LOOPBACK, "dashboard_address": None, "env": worker_environment()})
    from prefect_ray import RayTaskRunner

    if config.address:
        return RayTaskRunner(address=config.address)
    return RayTaskRunner(init_kwargs={"num_cpus": config.workers, "include_dashboard": False,
                                      "_node_ip_address": LOOPBACK,
                                      "runtime_env": {"env_vars": worker_environment()}})


def worker_environment() -> dict[str, str]:
    """Environment for local cluster workers: the Prefect API this process talks to.

    Without it, a worker of a flow that runs on a temporary (ephemeral) server would start a
    temporary server of its own and record its task runs there.
    """
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        from prefect.server.api.server import SubprocessASGIServer

        running = [s for s in SubprocessASGIServer._instances.values() if getattr(s, "running", False)]
        url = str(running[0].api_url) if running else None
    return {"PREFECT_API_URL": url} if url else {}


def group_units(units: Sequence[Sequence[T]], shards: int) -> list[list[T]]:
    """Consecutive units joined into at most `shards` shards of nearly equal unit counts."""
    if shards < 1:
        raise ValueError(f"shards must be at least 1, got {shards}")
    count = min(shards, len(units))
    out: list[list[T]] = []
    start = 0
    for index in range(count):
        size = len(units) // count + (1 if index < len(units) % count else 0)
        out.append([item for unit in units[start:start + size] for item in unit])
        start += size
    return out


def run_shards(task: Any, config: TaskRunnerConfig, calls: Sequence[dict[str, Any]]) -> list[Any]:
    """Run `task` once per parameter dict on the configured runner; the results in call order.

    The runner (and a local cluster with its worker processes) lives for this one stage, so the
    workers' engines are gone before the next stage (finetuning) needs the memory. Every shard
    finishes before the first failure is raised, as the task raised it.
    """
    with make_task_runner(config) as runner:
        futures = [runner.submit(task, parameters=dict(call)) for call in calls]
        for future in futures:
            future.wait()
        return [future.result() for future in futures]
