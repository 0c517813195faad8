"""The self-improvement loop's config: one validated pydantic model, one YAML file."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from schemas.bootstrap import BootstrapConfig
from schemas.generation import EngineConfig, PromptFormat, SamplingConfig, Strict
from schemas.policy import SelectionPolicy, preset
from schemas.prompt_source import PromptSourceConfig
from schemas.runner import TaskRunnerConfig


class GenerationStage(Strict):
    """Sampling candidates from the current model on train prompts."""

    engine: EngineConfig = EngineConfig()
    sampling: SamplingConfig = SamplingConfig(n=8, temperature=0.8, max_tokens=64, seed=0)
    format: PromptFormat = PromptFormat()
    step_separator: str = "\n"
    chunk_size: int = Field(1024, ge=1)
    prompts_per_round: int | None = Field(None, ge=1)  # None: every train prompt each round


class ScoringStage(Strict):
    """Which scorers run on every candidate."""

    verifier_mode: Literal["exact", "math"] = "exact"
    extractors: tuple[str, ...] = ("hash", "boxed", "answer_is")
    timeout_s: float = Field(5.0, gt=0)
    workers: int = Field(2, ge=1)
    step_verifier: bool = True  # the demo task's process-level rule verifier
    prl_eta: float | None = Field(None, gt=0)  # set to compute PRL process values (scorer "prl")
    chunk_size: int = Field(4096, ge=1)  # candidates per scores shard (whole prompt groups)


class FinetuneStage(Strict):
    """SFT on each round's kept samples."""

    start_from: Literal["previous", "base"] = "previous"
    epochs: float = Field(3.0, gt=0)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(10, ge=0)
    max_length: int = Field(256, ge=8)
    seed: int = 0
    use_weights: bool = True  # per-sample weights from the selection (e.g. PRL)
    # LoRA through peft (for large models); None = full finetuning. The adapter is merged into the
    # saved checkpoint, so the next round's engine loads a plain model folder.
    lora_r: int | None = Field(None, ge=1)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    lora_target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")


class EvalStage(Strict):
    """Held-out evaluation of every model of the run."""

    sampling: SamplingConfig = SamplingConfig(n=8, temperature=1.0, max_tokens=64, seed=1234)
    ks: tuple[int, ...] = (1, 8)
    benchmark: str = "demo-arith"
    rm_scorers: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _k_fits_n(self) -> "EvalStage":
        for k in self.ks:
            if not 1 <= k <= self.sampling.n:
                raise ValueError(f"k={k} must be between 1 and eval n={self.sampling.n}")
        return self


class EarlyStop(Strict):
    """Stop when pass@1 does not improve by more than `min_delta` over the previous model."""

    enabled: bool = True
    min_delta: float = 0.0


class LoopConfig(Strict):
    """One run of the loop: where data and models live, and every stage's settings."""

    run_id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    lake: str = "data/lake"
    models_dir: str = "data/models"
    base_model: str = "data/models/base"
    bootstrap: BootstrapConfig | None = None  # make the demo base model and prompts first
    prompt_sources: list[PromptSourceConfig] = []  # loaded into the prompts table before round 0
    rounds: int = Field(3, ge=1)
    early_stop: EarlyStop = EarlyStop()
    generation: GenerationStage = GenerationStage()
    scoring: ScoringStage = ScoringStage()
    selection: SelectionPolicy = Field(default_factory=lambda: preset("all_steps_correct"))
    finetune: FinetuneStage = FinetuneStage()
    evaluation: EvalStage = EvalStage()
    runner: TaskRunnerConfig = TaskRunnerConfig()  # where generation and scoring shards run

    @field_validator("selection", mode="before")
    @classmethod
    def _preset_by_name(cls, value):
        return preset(value) if isinstance(value, str) else value
