"""Pretraining the embedded default model: the tiny Llama on the demo task's worked solutions.

The base model is pretrained on worked solutions of the `pretrain` problems only; the `train`
prompts (reference answers, never solutions) feed self-improvement; the `eval` prompts are held
out from both. The saved folder loads in transformers and vLLM like any hub model; its card
records the bootstrap config's hash, so a folder made with the same config is reused.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

from schemas.bootstrap import BootstrapConfig
from schemas.generation import EngineConfig, PromptFormat, SamplingConfig
from tasks.evaluation.metrics import pass_at_k
from tasks.generation.generate import HFBackend
from tasks.lake import ids
from tasks.prompts.demo_task import PROMPT_TEMPLATE, ChainConfig, make_splits
from tasks.prompts.tiny_model import TinyModelConfig, build_model, build_tokenizer
from tasks.scoring.verify import extract_answer
from tasks.training.checkpoints import write_model_card
from tasks.training.finetune import Example, TrainConfig, train

logger = logging.getLogger("flywheel.bootstrap")


def config_hash(config: BootstrapConfig) -> str:
    """The hash that names a bootstrap configuration (a saved model with it is reused)."""
    return ids.content_hash("bootstrap", config.model_dump())


def demo_accuracy(backend: HFBackend, chains, samples: int, temperature: float) -> dict:
    """Held-out greedy accuracy, avg@n and pass@n of a model on demo chains."""
    fmt = PromptFormat(template=PROMPT_TEMPLATE)
    prompts = [fmt.template.replace("{problem}", c.problem) for c in chains]
    seeds = list(range(len(prompts)))

    def correct_counts(sampling: SamplingConfig) -> list[int]:
        outputs = backend.generate(prompts, sampling, seeds)
        return [sum(extract_answer(o.text, ("hash",)) == str(c.answer) for o in outs)
                for c, outs in zip(chains, outputs)]

    greedy = correct_counts(SamplingConfig(n=1, temperature=0.0, max_tokens=64))
    sampled = correct_counts(SamplingConfig(n=samples, temperature=temperature, max_tokens=64, seed=1))
    n = len(chains)
    return {
        "problems": n,
        "greedy_accuracy": sum(greedy) / n,
        f"avg@{samples}": sum(sampled) / (n * samples),
        f"pass@{samples}": sum(pass_at_k(samples, c, samples) for c in sampled) / n,
        "sampling_temperature": temperature,
    }


def pretrain_base_model(config: BootstrapConfig, output: Path) -> dict:
    """Pretrain the tiny model on worked solutions and save it (atomically) with its card."""
    task_cfg, pre = config.task, config.pretrain
    chain_cfg = ChainConfig(task_cfg.min_steps, task_cfg.max_steps, task_cfg.min_operand, task_cfg.max_operand)
    splits = make_splits(task_cfg.n_pretrain, task_cfg.n_train, task_cfg.n_eval, task_cfg.seed, chain_cfg)
    tokenizer = build_tokenizer()
    shape = TinyModelConfig(pre.hidden_size, pre.num_layers, pre.num_heads, pre.intermediate_size,
                            pre.max_positions)
    model = build_model(tokenizer, shape, pre.seed)
    examples = [Example(PROMPT_TEMPLATE.format(problem=c.problem), c.solution) for c in splits.pretrain]
    logger.info("pretraining %d parameters on %d worked solutions for %d steps",
                sum(p.numel() for p in model.parameters()), len(examples), pre.steps)
    result = train(model, tokenizer, examples, TrainConfig(
        max_steps=pre.steps, batch_size=pre.batch_size, learning_rate=pre.learning_rate,
        warmup_steps=pre.warmup_steps, seed=pre.seed, device="cpu", log_every=50))

    staging = output.with_name(f".{output.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    t0 = time.perf_counter()
    backend = HFBackend(staging, EngineConfig(backend="hf", hf_batch_size=512))
    accuracy = demo_accuracy(backend, splits.eval, config.eval_samples, config.eval_temperature)
    backend.close()
    weights_hash = ids.content_hash("weights", *(
        hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(staging.glob("*.safetensors"))))
    card = {
        "model_id": f"base-{weights_hash}",
        "kind": "base",
        "bootstrap_config_hash": config_hash(config),
        "config": config.model_dump(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train": result.summary(),
        "held_out": accuracy,
        "eval_seconds": time.perf_counter() - t0,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_model_card(staging, "Flywheel tiny base model (demo arithmetic)", card)
    shutil.rmtree(output, ignore_errors=True)
    staging.rename(output)
    return card


def reuse_or_pretrain(config: BootstrapConfig, force: bool = False) -> tuple[str, dict, bool]:
    """The base model at `config.output`: reused when its card says it was made from this config
    (unless `force`), else pretrained. Returns (path, card, reused)."""
    output = Path(config.output).resolve()
    card_path = output / "flywheel_card.json"
    if card_path.is_file() and not force:
        card = json.loads(card_path.read_text())
        if card.get("bootstrap_config_hash") == config_hash(config):
            logger.info("reusing base model %s at %s", card["model_id"], output)
            return str(output), card, True
    return str(output), pretrain_base_model(config, output), False


def base_model_row(path: str, card: dict) -> dict:
    """The base model's `models` row (iteration 0, no parent) from its card."""
    return {
        "model_id": card["model_id"], "parent_id": None, "iteration": 0, "path": path,
        "selection_hash": None, "num_examples": card["config"]["task"]["n_pretrain"],
        "train_steps": card["train"]["steps"], "train_loss": card["train"]["mean_loss_last_10pct"],
        "train_seconds": card["train"]["seconds"],
        "created_at": datetime.fromisoformat(card["created_at"]),
        "metrics": json.dumps(card["held_out"]),
    }
