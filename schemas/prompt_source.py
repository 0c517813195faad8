"""Config of one prompt source: where its problems come from and how to read their references.

One YAML file holds one source, e.g.

    name: gsm8k-fixture                      # stored in prompts.source
    path: data/fixtures/gsm8k_sample.jsonl   # or a folder; or `hub:` with `hf_split:` (+ `subset:`)
    problem_column: question
    answer_column: answer                    # may hold a full worked solution
    reference_style: gsm8k                   # gsm8k (#### 42) | boxed (\\boxed{..}) | plain
    eval_fraction: 0.25                      # or `split: train` / `split: eval`
    seed: 0

Unknown keys are errors that name the key.
"""
from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.config import read_yaml

ReferenceStyle = Literal["gsm8k", "boxed", "plain"]
SourceSplit = Literal["train", "eval"]
REFERENCE_STYLES: tuple[str, ...] = ("gsm8k", "boxed", "plain")


class PromptSourceConfigError(ValueError):
    """A prompt source config is missing, unreadable or invalid; the message is one line."""


class PromptSourceConfig(BaseModel):
    """Where one source's problems come from, how to map its columns, and which split they join."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: str = Field(min_length=1)
    path: str | None = None
    hub: str | None = None
    subset: str | None = None
    hf_split: str | None = None
    problem_column: str = Field(min_length=1)
    answer_column: str | None = None
    reference_style: ReferenceStyle | None = None
    split: SourceSplit | None = None
    limit: int | None = Field(default=None, ge=1)
    eval_fraction: float | None = Field(default=None, gt=0, lt=1)
    seed: int | None = None

    @model_validator(mode="after")
    def _check_combinations(self) -> "PromptSourceConfig":
        if self.name.strip() != self.name:
            raise ValueError(f"name {self.name!r} has surrounding whitespace")
        if (self.path is None) == (self.hub is None):
            raise ValueError("give exactly one of 'path' (a local file or folder) or 'hub'")
        if self.path is not None:
            for key in ("subset", "hf_split"):
                if getattr(self, key) is not None:
                    raise ValueError(f"'{key}' only applies to a 'hub' source")
        if self.hub is not None and self.hf_split is None:
            raise ValueError("a 'hub' source needs 'hf_split' (e.g. train or test)")
        if (self.answer_column is None) != (self.reference_style is None):
            raise ValueError("give 'answer_column' and 'reference_style' together")
        if (self.split is None) == (self.eval_fraction is None):
            raise ValueError("give exactly one of 'split' (train or eval) or 'eval_fraction'")
        if (self.eval_fraction is None) != (self.seed is None):
            raise ValueError("give 'eval_fraction' and 'seed' together")
        if self.answer_column is None and (self.split == "eval" or self.eval_fraction is not None):
            raise ValueError("eval problems need a reference: set 'answer_column'")
        return self

    @classmethod
    def from_dict(cls, data: Any, origin: str = "prompt source config") -> "PromptSourceConfig":
        """Validate a mapping; raise PromptSourceConfigError with one line naming each problem."""
        if not isinstance(data, dict):
            raise PromptSourceConfigError(
                f"{origin}: expected a mapping of keys, got {type(data).__name__}")
        try:
            return cls(**data)
        except ValidationError as error:
            raise PromptSourceConfigError(f"{origin}: {validation_message(error)}") from None

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> "PromptSourceConfig":
        """Read and validate one YAML config file."""
        data = read_yaml(path, "prompt source config", PromptSourceConfigError)
        return cls.from_dict(data, origin=str(path))


def validation_message(error: ValidationError) -> str:
    """One line describing every problem in a pydantic ValidationError, naming keys."""
    parts = []
    for item in error.errors(include_url=False):
        key = ".".join(str(part) for part in item["loc"])
        kind = item["type"]
        if kind == "extra_forbidden":
            parts.append(f"unknown key {key!r}")
        elif kind == "missing":
            parts.append(f"missing key {key!r}")
        elif not key:
            parts.append(str(item["msg"]).removeprefix("Value error, "))
        else:
            parts.append(f"{key}: {item['msg']} (got {item.get('input')!r})")
    return "; ".join(parts)
