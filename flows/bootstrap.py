"""Bootstrap: make the embedded default — the demo task's prompts and a tiny pretrained base model.

The base model is pretrained on worked solutions of the `pretrain` problems only; the `train`
prompts (reference answers, never solutions) feed self-improvement; the `eval` prompts are held
out from both. The model folder loads in transformers and vLLM like any hub model.
"""
from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from schemas.bootstrap import BootstrapConfig
from tasks.lake.sql import refresh_views_file
from tasks.lake.store import Lake
from tasks.prompts.sources import write_demo_prompts
from tasks.training.pretrain import base_model_row, reuse_or_pretrain


@task(name="bootstrap-model", cache_policy=NO_CACHE)
def bootstrap_model_task(config: BootstrapConfig, force: bool = False) -> tuple[str, dict, bool]:
    """Reuse the saved base model when its config matches, else pretrain it."""
    return reuse_or_pretrain(config, force)


@task(name="write-demo-prompts", cache_policy=NO_CACHE)
def write_demo_prompts_task(config: BootstrapConfig, lake_root: str) -> dict:
    """Write the demo's train and eval prompts to the lake (idempotent)."""
    return write_demo_prompts(Lake(lake_root), config.task)


@task(name="register-base-model", cache_policy=NO_CACHE)
def register_base_model_task(lake_root: str, path: str, card: dict) -> None:
    """The base model's lineage row (iteration 0, no parent), once."""
    lake = Lake(lake_root)
    if (card["model_id"],) not in lake.existing_keys("models"):
        lake.write("models", [base_model_row(path, card)], iteration=0, shard=f"model-{card['model_id']}")


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
