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

    A local Ray cluster listens on every network interface (Ray has no bind-address setting), so
    it starts only with `ray_listens_on_all_interfaces: true`, an explicit acceptance of that.
    """

    kind: Literal["threads", "dask", "ray"] = "threads"
    address: str | None = None
    workers: int = Field(2, ge=1)
    # prompt shards per stage; None: 1 with threads (one engine), else one per worker
    shards: int | None = Field(None, ge=1)
    # a local Ray cluster's GCS server, raylet and workers listen on every interface; accept that here
    ray_listens_on_all_interfaces: bool = False

    @model_validator(mode="after")
    def _address_needs_a_cluster(self) -> "TaskRunnerConfig":
        if self.kind == "threads" and self.address is not None:
            raise ValueError("address is for dask or ray, not threads")
        local_ray = self.kind == "ray" and self.address is None
        if self.ray_listens_on_all_interfaces and not local_ray:
            raise ValueError("ray_listens_on_all_interfaces is for a local Ray cluster (kind ray, no address)")
        if local_ray and not self.ray_listens_on_all_interfaces:
            raise ValueError(
                "a local Ray cluster listens on all network interfaces (Ray has no bind-address setting): "
                "set runner.ray_listens_on_all_interfaces: true to accept that, use kind dask (loopback "
                "only), or set runner.address to a Ray cluster you started")
        return self

    @property
    def shard_count(self) -> int:
        """How many shards each mapped stage is cut into."""
        if self.shards is not None:
            return self.shards
        return 1 if self.kind == "threads" else self.workers
