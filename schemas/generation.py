"""Generation configs: sampling parameters, prompt formatting and the engine backend."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Strict(BaseModel):
    """Base for configs: unknown keys are errors that name the key, and so are NaN and infinite
    numbers (`.nan`, `.inf` in YAML): no setting means either, and `lr: .inf` or `epochs: .inf`
    would otherwise pass a `> 0` bound and fail, or never end, rounds later."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SamplingConfig(Strict):
    """How to sample: n per prompt, temperature, nucleus, length budget, seed."""

    n: int = Field(8, ge=1)
    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(64, ge=1)
    seed: int = 0
    logprobs: bool = True

    @model_validator(mode="after")
    def _greedy_means_one(self) -> "SamplingConfig":
        if self.temperature == 0 and self.n > 1:
            raise ValueError(f"temperature 0 (greedy) gives one answer: n must be 1, got {self.n}")
        return self


class PromptFormat(Strict):
    """How a problem becomes model input: a plain template, or the tokenizer's chat template."""

    kind: Literal["plain", "chat"] = "plain"
    template: str = "Q: {problem}\n"
    system_prompt: str | None = None

    @model_validator(mode="after")
    def _template_has_problem(self) -> "PromptFormat":
        if "{problem}" not in self.template:
            raise ValueError("prompt template must contain '{problem}'")
        return self


class EngineConfig(Strict):
    """Which generation backend, and its engine settings."""

    backend: Literal["vllm", "hf", "openai"] = "vllm"
    dtype: str = "auto"
    gpu_memory_utilization: float | None = Field(None, gt=0.0, le=1.0)
    max_model_len: int | None = Field(None, ge=1)
    max_num_seqs: int | None = Field(None, ge=1)  # None: 1,024 on the CPU, vLLM's default on a GPU
    enforce_eager: bool | None = None
    # vLLM's engine core in this process (True) or in its own (False, vLLM's default); None: in
    # this process on the CPU, where spawning it re-imports torch and vLLM (engine start ~3 s
    # instead of ~25 s), its own process on a GPU. Several GPUs (tensor parallel) need False.
    in_process: bool | None = None
    tensor_parallel_size: int = Field(1, ge=1)
    hf_batch_size: int = Field(256, ge=1)
    base_url: str | None = None  # openai backend: e.g. http://127.0.0.1:8000/v1
    api_model: str | None = None  # openai backend: the served model name
    request_timeout_s: float = Field(600.0, gt=0)
    extra: dict[str, Any] = Field(default_factory=dict)  # passed to vllm.LLM as keyword arguments

    @model_validator(mode="after")
    def _one_process_one_device(self) -> "EngineConfig":
        if self.in_process and self.tensor_parallel_size > 1:
            raise ValueError(f"in_process: true runs one engine process, but tensor_parallel_size is "
                             f"{self.tensor_parallel_size}: set in_process: false")
        return self

    def engine_in_process(self, on_gpu: bool) -> bool:
        """Whether vLLM's engine core runs in the calling process (see `in_process`)."""
        if self.in_process is not None:
            return self.in_process
        return not on_gpu and self.tensor_parallel_size == 1
