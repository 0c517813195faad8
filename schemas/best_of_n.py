"""Config of reward-guided inference (best-of-N): sample N answers per prompt, pick one per method."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from schemas.generation import EngineConfig, PromptFormat, SamplingConfig, Strict

# Every reference-free pick method, in report order (tasks/selection/best_of_n.py implements each one).
METHOD_NAMES = ("orm", "prm_min", "prm_last", "prm_product", "prm_mean", "majority",
                "weighted_majority", "knockout", "elo")
MethodName = Literal["orm", "prm_min", "prm_last", "prm_product", "prm_mean", "majority",
                     "weighted_majority", "knockout", "elo"]


class JudgeSettings(Strict):
    """The pairwise judge behind the knockout and ELO methods."""

    model: str | None = None  # a generating model folder; None: the policy judges its own samples
    votes: int = Field(1, ge=1)  # voting@k: judgments per pair, shown in alternating order
    attempts: int = Field(3, ge=1)  # tries per judgment before it is recorded unparseable
    temperature: float = Field(0.8, ge=0.0)
    max_tokens: int = Field(64, ge=1)
    seed: int = 0  # engine seeds of the judgments and the knockout draw
    chat_template: bool = False  # wrap the judge prompt in the judge tokenizer's chat template


class BestOfNConfig(Strict):
    """Which policy samples which prompts, which reward models and judge rank them, which methods run."""

    run_id: str = Field("best-of-n", min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    lake: str = "data/lake"
    policy_model: str = "data/models/base"
    split: str = "eval"  # picks are scored against references only where the split has them
    prompts: int | None = Field(None, ge=1)  # the first N prompts of the split by prompt_id; None: all
    iteration: int = Field(0, ge=0)  # the lake iteration candidates, scores and picks go to
    engine: EngineConfig = EngineConfig()
    format: PromptFormat = PromptFormat()
    sampling: SamplingConfig = SamplingConfig(n=8, temperature=1.0, max_tokens=64, seed=1234)
    chunk_size: int = Field(512, ge=1)  # prompts per generation call and shard
    orm_model: str | None = None  # ORM folder; None: the methods that need it are skipped
    prm_model: str | None = None  # PRM folder; None: the prm_* methods are skipped
    rm_batch_size: int = Field(64, ge=1)
    judge: JudgeSettings = JudgeSettings()
    # None: every method whose model is available (others are skipped with the reason logged);
    # a list: exactly these, and a missing model is an error.
    methods: tuple[MethodName, ...] | None = None
    verifier_mode: Literal["exact", "math"] = "exact"  # reporting only: picks vs reference answers
    extractors: tuple[str, ...] = ("hash", "boxed", "answer_is", "answer_line")  # final-answer extraction for votes

    @field_validator("methods")
    @classmethod
    def _methods_listed_once(cls, methods: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if methods is None:
            return None
        if not methods:
            raise ValueError("methods is empty: list at least one, or leave it out for all")
        repeated = sorted({m for m in methods if methods.count(m) > 1})
        if repeated:
            raise ValueError(f"method {repeated[0]!r} is listed twice")
        return methods
