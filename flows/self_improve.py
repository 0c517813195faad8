"""The self-improvement loop: R rounds of the iteration, early stop when pass@1 stops improving.

Each round starts where the config says (the previous round's model, or the base model for
ReST-EM); the engine over a round's new model is kept for the next round's evaluation and
generation, and released before every finetuning.
"""
from __future__ import annotations

import json
from pathlib import Path

from prefect import flow, get_run_logger

from flows.bootstrap import bootstrap_flow
from flows.iteration import Engines, run_iteration, summarise_round
from schemas.loop import LoopConfig
from tasks.lake.store import Lake
from tasks.prompts.sources import load_prompt_sources


def should_stop(config: LoopConfig, previous: float | None, current: float | None) -> bool:
    """True when early stopping is on and pass@1 did not improve by more than min_delta."""
    if not config.early_stop.enabled or previous is None or current is None:
        return False
    return current <= previous + config.early_stop.min_delta


def run_summary_path(config: LoopConfig) -> Path:
    """Where the run's round summaries are written (data/reports/<run>/rounds.json)."""
    return Path(config.lake).resolve().parent / "reports" / config.run_id / "rounds.json"


@flow(name="flywheel-self-improve", log_prints=True)
def self_improve_flow(config: LoopConfig) -> dict:
    """Bootstrap if configured, then run up to `rounds` iterations; returns a summary per round."""
    log = get_run_logger()
    if config.bootstrap is not None:
        bootstrap_flow(config.bootstrap, config.lake)
    if config.prompt_sources:
        counts = load_prompt_sources(Lake(config.lake), config.prompt_sources)
        log.info("prompts: %s", json.dumps(counts))
    summaries: list[dict] = []
    stopped_early = False
    with Engines(config) as engines:  # the engine over M_{k+1} that evaluated it serves round k+1
        for iteration in range(config.rounds):
            result = run_iteration(config, iteration, engines)
            summary = summarise_round(result)
            summaries.append(summary)
            log.info("round %d: pass@1 %.3f → %.3f, kept %d of %d candidates, %s", iteration,
                     summary["pass@1_in"], summary["pass@1_out"], result.kept, result.candidates,
                     ", ".join(f"{k} {v:.0f}s" for k, v in summary["seconds"].items()))
            if should_stop(config, summary["pass@1_in"], summary["pass@1_out"]):
                log.info("early stop after round %d: pass@1 did not improve", iteration)
                stopped_early = True
                break
    out = {"run_id": config.run_id, "rounds": summaries, "stopped_early": stopped_early}
    path = run_summary_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(path.read_text()) if path.is_file() else {}
    merged = _keep_first_timings(previous, out)
    path.write_text(json.dumps(merged, indent=2))
    return merged


def _keep_first_timings(previous: dict, current: dict) -> dict:
    """Stage seconds of a rerun that found everything done are ~0; keep the run that did the work."""
    old = {r["iteration"]: r for r in previous.get("rounds", [])}
    for summary in current["rounds"]:
        before = old.get(summary["iteration"])
        if before and before.get("model_out") == summary["model_out"]:
            summary["seconds"] = {k: max(v, before["seconds"].get(k, 0.0))
                                  for k, v in summary["seconds"].items()}
    return current
