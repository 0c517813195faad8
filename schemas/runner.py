"""Where a flow's mapped tasks run: threads in the flow's process, a Dask cluster or a Ray cluster."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from schemas.generation import Strict


class TaskRunnerConfig(Strict):
    """The Prefect task runner that generation and scoring shards are mapped over.

    `threads` (the default) runs shards in the flow's process and shares its engine. `dask` and
    `ray` run each shard in a worker process that starts its own engine: a local cluster of
    `workers` processes, or the cluster at `address` (Dask: tcp://host:8786, Ray: ray://host:10001).
    """

    kind: Literal["threads", "dask", "ray"] = "threads"
    address: str | None = None
    workers: int = Field(2, ge=1)
    # prompt shards per stage; None: 1 with threads (one engine), else one per worker
    shards: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _address_needs_a_cluster(self) -> "TaskRunnerConfig":
        if self.kind == "threads" and self.address is not None:
            raise ValueError("address is for dask or ray, not threads")
        return self

    @property
    def shard_count(self) -> int:
        """How many shards each mapped stage is cut into."""
        if self.shards is not None:
            return self.shards
        return 1 if self.kind == "threads" else self.workers
