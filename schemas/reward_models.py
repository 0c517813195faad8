"""Config of the reward-model flow: train an ORM and a PRM from a policy's samples and measure them."""
from __future__ import annotations

from pydantic import Field

from schemas.generation import EngineConfig, PromptFormat, SamplingConfig, Strict


class RMTrainStage(Strict):
    """Optimiser settings of one reward model's training."""

    epochs: float = Field(3.0, gt=0)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(10, ge=0)
    seed: int = 0


class MathShepherdStage(Strict):
    """Math-Shepherd step labels: k rollouts from every step prefix of some train candidates."""

    rollouts: int = Field(4, ge=1)
    temperature: float = Field(0.8, gt=0)
    max_tokens: int = Field(64, ge=1)
    seed: int = 7
    max_candidates: int | None = Field(1000, ge=1)  # None: every train candidate


class RewardModelsConfig(Strict):
    """Where the data and models live, which policy samples, and each reward model's settings."""

    run_id: str = Field("reward-models", min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    lake: str = "data/lake"
    models_dir: str = "data/models"
    base_model: str = "data/models/base"  # the reference policy (PRL) and the reward models' start
    policy_model: str | None = None  # the policy that samples; None = the base model
    iteration: int = Field(0, ge=0)  # the lake iteration the samples and scores go to
    train_prompts: int | None = Field(1000, ge=1)  # None: every train prompt
    engine: EngineConfig = EngineConfig()
    format: PromptFormat = PromptFormat()
    train_sampling: SamplingConfig = SamplingConfig(n=8, temperature=0.8, max_tokens=64, seed=0)
    eval_sampling: SamplingConfig = SamplingConfig(n=8, temperature=1.0, max_tokens=64, seed=1234)
    math_shepherd: MathShepherdStage = MathShepherdStage()
    orm: RMTrainStage = RMTrainStage()
    prm: RMTrainStage = RMTrainStage()
    prl_eta: float = Field(1.0, gt=0)
    chunk_size: int = Field(1000, ge=1)
