"""Bootstrap: make the embedded default — the demo task's prompts and a tiny pretrained base model.

The base model is pretrained on worked solutions of the `pretrain` problems only; the `train`
prompts (reference answers, never solutions) feed self-improvement; the `eval` prompts are held
out from both. The model folder loads in transformers and vLLM like any hub model.
"""
from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from schemas.bootstrap import BootstrapConfig
from tasks.lake.sql import refresh_views_file
from tasks.lake.store import Lake
from tasks.prompts.demo_task import ChainConfig, make_splits
from tasks.prompts.sources import demo_prompt_rows, write_prompts
from tasks.training.pretrain import config_hash, pretrain_base_model

logger = logging.getLogger("flywheel.bootstrap")


@task(name="bootstrap-model", cache_policy=NO_CACHE)
def bootstrap_model_task(config: BootstrapConfig, force: bool = False) -> tuple[str, dict, bool]:
    """Prefect task: reuse the saved base model when its config matches, else pretrain it."""
    output = Path(config.output).resolve()
    card_path = output / "flywheel_card.json"
    if card_path.is_file() and not force:
        card = json.loads(card_path.read_text())
        if card.get("bootstrap_config_hash") == config_hash(config):
            logger.info("reusing base model %s at %s", card["model_id"], output)
            return str(output), card, True
    return str(output), pretrain_base_model(config, output), False


@task(name="write-demo-prompts", cache_policy=NO_CACHE)
def write_demo_prompts_task(config: BootstrapConfig, lake_root: str) -> dict:
    """Prefect task: write the demo's train and eval prompts to the lake (idempotent)."""
    t = config.task
    chain_cfg = ChainConfig(t.min_steps, t.max_steps, t.min_operand, t.max_operand)
    splits = make_splits(t.n_pretrain, t.n_train, t.n_eval, t.seed, chain_cfg)
    return write_prompts(Lake(lake_root), demo_prompt_rows(splits))


@task(name="register-base-model", cache_policy=NO_CACHE)
def register_base_model_task(lake_root: str, path: str, card: dict) -> None:
    """Prefect task: the base model's lineage row (iteration 0, no parent)."""
    lake = Lake(lake_root)
    if (card["model_id"],) in lake.existing_keys("models"):
        return
    lake.write("models", [{
        "model_id": card["model_id"], "parent_id": None, "iteration": 0, "path": path,
        "selection_hash": None, "num_examples": card["config"]["task"]["n_pretrain"],
        "train_steps": card["train"]["steps"], "train_loss": card["train"]["mean_loss_last_10pct"],
        "train_seconds": card["train"]["seconds"],
        "created_at": datetime.fromisoformat(card["created_at"]),
        "metrics": json.dumps(card["held_out"]),
    }], iteration=0, shard=f"model-{card['model_id']}")


@flow(name="bootstrap", log_prints=True)
def bootstrap_flow(config: BootstrapConfig = BootstrapConfig(), lake_root: str = "data/lake",
                   force: bool = False) -> dict:
    """Make the demo prompts and the tiny base model; returns the model card."""
    path, card, reused = bootstrap_model_task(config, force)
    prompts = write_demo_prompts_task(config, lake_root)
    register_base_model_task(lake_root, path, card)
    held = card["held_out"]
    print(f"base model {card['model_id']} at {path} ({'reused' if reused else 'trained'}): "
          f"greedy {held['greedy_accuracy']:.1%}, "
          + ", ".join(f"{k} {v:.1%}" for k, v in held.items() if "@" in k)
          + f"; prompts written {prompts['written']}")
    refresh_views_file(lake_root)
    return {"path": path, "reused": reused, **card}
