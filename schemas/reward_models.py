"""Config of the reward-model flow: train an ORM and a PRM from a policy's samples and measure them."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from schemas.generation import EngineConfig, PromptFormat, SamplingConfig, Strict


class RMTrainStage(Strict):
    """Settings of one reward model's training. `objective` (ORM only): `pointwise`, binary
    cross-entropy on each sample's outcome (classes balanced), or `pairwise`, a Bradley-Terry loss
    on every (correct, incorrect) pair of one prompt's samples, which ranks a prompt's samples
    rather than problems. `labels` (PRM only): `soft`, Math-Shepherd's share of rollouts that reach
    the reference, or `hard`, 1 when any rollout does (Math-Shepherd's hard estimate)."""

    epochs: float = Field(3.0, gt=0)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(10, ge=0)
    seed: int = 0
    objective: Literal["pointwise", "pairwise"] = "pointwise"
    labels: Literal["soft", "hard"] = "soft"

    def check_for(self, kind: str) -> "RMTrainStage":
        """Self, or ValueError when a setting does not apply to a reward model of `kind` (orm, prm)."""
        if kind == "prm" and self.objective != "pointwise":
            raise ValueError("objective: pairwise applies to an ORM only (a PRM is trained on step labels)")
        if kind == "orm" and self.labels != "soft":
            raise ValueError("labels: hard applies to a PRM only (an ORM is trained on the verifier's outcome)")
        return self


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

    @model_validator(mode="after")
    def _settings_apply(self) -> "RewardModelsConfig":
        self.orm.check_for("orm")
        self.prm.check_for("prm")
        return self
