"""The demo as one flow: bootstrap, the loop under each demo config, and the comparison report."""
from __future__ import annotations

import time

from prefect import flow

from flows.bootstrap import bootstrap_flow
from flows.loop import self_improve_flow
from flows.report import report_flow
from schemas.bootstrap import BootstrapConfig
from schemas.config import load_config
from schemas.loop import LoopConfig

DEMO_CONFIGS = ("configs/demo.yaml", "configs/demo-answer-only.yaml")


@flow(name="flywheel-demo", log_prints=True)
def demo_flow(config_paths: list[str] | None = None, lake_root: str | None = None) -> dict:
    """Bootstrap the embedded default, run each loop config (default: the demo's two), and report
    them side by side."""
    started = time.perf_counter()
    configs = [load_config(p, LoopConfig) for p in config_paths or DEMO_CONFIGS]
    if lake_root:
        configs = [c.model_copy(update={"lake": lake_root}) for c in configs]
    lake = configs[0].lake
    bootstrap_flow(BootstrapConfig(output=configs[0].base_model), lake)
    summaries = [self_improve_flow(c) for c in configs]
    report = report_flow(lake, [c.run_id for c in configs])
    return {"report": report, "runs": summaries, "seconds": round(time.perf_counter() - started, 1)}
