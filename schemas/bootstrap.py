"""Config of the bootstrap flow: the demo task's data and the tiny base model's pretraining."""
from __future__ import annotations

from pydantic import Field

from schemas.generation import Strict


class DemoTaskConfig(Strict):
    """Difficulty knobs and split sizes of the synthetic arithmetic task."""

    seed: int = 0
    min_steps: int = Field(2, ge=1)
    max_steps: int = Field(3, ge=1)
    min_operand: int = Field(1, ge=0)
    max_operand: int = Field(9, ge=0)
    n_pretrain: int = Field(20000, ge=1)
    n_train: int = Field(3000, ge=1)
    n_eval: int = Field(256, ge=1)


class PretrainConfig(Strict):
    """Shape of the tiny model and its pretraining budget."""

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 512
    # Context in tokens (characters). RoPE has no weights, so this does not change the model; the
    # pairwise judge's prompt (instructions, query, two responses) needs about 800.
    max_positions: int = Field(1024, ge=64)
    steps: int = Field(300, ge=1)  # ~110 s here; gives ~17% greedy, ~11% avg@8, ~45% pass@8
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(3e-3, gt=0)
    warmup_steps: int = Field(20, ge=0)
    seed: int = 0


class BootstrapConfig(Strict):
    """Everything `flywheel bootstrap` needs; its hash decides whether a saved model is reused."""

    task: DemoTaskConfig = DemoTaskConfig()
    pretrain: PretrainConfig = PretrainConfig()
    output: str = "data/models/base"
    eval_samples: int = Field(8, ge=1)
    eval_temperature: float = Field(1.0, gt=0)
