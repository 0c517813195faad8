"""The demo as one flow: bootstrap, the loop under each demo arm's config, and the comparison report.

The default arms need no step oracle: `configs/demo.yaml` selects by answer correctness plus the
policy's confidence in its own tokens; `configs/demo-answer-only.yaml` is plain rejection-sampling
finetuning on the same budget. `--all-arms` adds the ceiling (the synthetic task's step verifier
selecting), Math-Shepherd labels learned from final answers, the pairwise judge and PRL-weighted
finetuning."""
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
EXTRA_ARMS = ("configs/demo-oracle.yaml", "configs/demo-mc.yaml", "configs/demo-judge.yaml", "configs/demo-prl.yaml",
              "configs/demo-merge.yaml")


@flow(name="flywheel-demo", log_prints=True)
def demo_flow(config_paths: list[str] | None = None, lake_root: str | None = None, all_arms: bool = False) -> dict:
    """Bootstrap the embedded default, run each loop config (default: the demo's two arms; with
    `all_arms`, the five more), and report them side by side."""
    started = time.perf_counter()
    paths = list(config_paths or DEMO_CONFIGS) + (list(EXTRA_ARMS) if all_arms else [])
    configs = [load_config(p, LoopConfig) for p in paths]
    if lake_root:
        configs = [c.model_copy(update={"lake": lake_root}) for c in configs]
    lake = configs[0].lake
    bootstrap_flow(BootstrapConfig(output=configs[0].base_model), lake)
    summaries = [self_improve_flow(c) for c in configs]
    report = report_flow(lake, [c.run_id for c in configs])
    return {"report": report, "runs": summaries, "seconds": round(time.perf_counter() - started, 1)}
