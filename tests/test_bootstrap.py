"""Bootstrap: the demo model folder loads like a hub model, its card is complete, reruns reuse it."""
from __future__ import annotations

import json
from pathlib import Path

from flows.bootstrap import bootstrap_model_task
from tasks.training.pretrain import config_hash
from schemas.bootstrap import BootstrapConfig, DemoTaskConfig, PretrainConfig
from tasks.prompts.demo_task import make_splits


def test_bootstrap_folder_loads_in_transformers_with_a_card(tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert tokenizer.eos_token_id is not None and tokenizer.pad_token_id is not None
    assert tokenizer.decode(tokenizer("Q: ((7+5)*3)-4\n")["input_ids"]) == "Q: ((7+5)*3)-4\n"
    assert 0.9e6 < sum(p.numel() for p in model.parameters()) < 1.2e6
    card = json.loads((tiny_model_dir / "flywheel_card.json").read_text())
    assert card["model_id"].startswith("base-")
    assert set(card["held_out"]) >= {"greedy_accuracy", "avg@4", "pass@4", "problems"}
    assert card["held_out"]["pass@4"] >= card["held_out"]["avg@4"]
    assert card["train"]["steps"] == 60 and card["train"]["final_loss"] > 0
    assert (tiny_model_dir / "README.md").is_file()


def test_bootstrap_is_reused_unless_its_config_changes(tiny_model_dir: Path):
    card = json.loads((tiny_model_dir / "flywheel_card.json").read_text())
    config = BootstrapConfig(task=DemoTaskConfig(n_pretrain=2000, n_train=64, n_eval=32),
                             pretrain=PretrainConfig(steps=60, batch_size=32), output=str(tiny_model_dir),
                             eval_samples=4)
    assert card["bootstrap_config_hash"] == config_hash(config)
    path, reused_card, reused = bootstrap_model_task.fn(config)
    assert reused and reused_card["model_id"] == card["model_id"]
    changed = config.model_copy(update={"pretrain": PretrainConfig(steps=61, batch_size=32)})
    assert config_hash(changed) != config_hash(config)


def test_pretraining_data_never_contains_train_or_eval_problems():
    splits = make_splits(2000, 300, 100, seed=0)
    pretrain = {c.problem for c in splits.pretrain}
    assert not pretrain & {c.problem for c in splits.train}
    assert not pretrain & {c.problem for c in splits.eval}
    assert not {c.problem for c in splits.train} & {c.problem for c in splits.eval}
    assert make_splits(2000, 300, 100, seed=0).eval == splits.eval  # deterministic
