"""The self-improvement loop's config: one validated pydantic model, one YAML file."""
from __future__ import annotations

import re
from typing import Annotated, Literal, Union

from pydantic import Field, field_validator, model_validator

from schemas.best_of_n import JudgeSettings
from schemas.bootstrap import BootstrapConfig
from schemas.reward_models import RMTrainStage
from schemas.generation import EngineConfig, PromptFormat, SamplingConfig, Strict
from schemas.policy import SelectionPolicy, check_score_names, preset
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


def check_regex(pattern: str) -> re.Pattern[str]:
    """The compiled pattern; ValueError in one line when it does not compile or has not exactly
    one capturing group."""
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise ValueError(f"answer regex {pattern!r} does not compile: {error}") from None
    if compiled.groups != 1:
        raise ValueError(f"answer regex {pattern!r} must have exactly one capturing group "
                         f"(it has {compiled.groups})")
    return compiled


class RegexExtractor(Strict):
    """A user-defined answer extractor: the one capturing group of `regex` at its first or last
    match, e.g. `{regex: '(?m)^A:\\s*(.+)$'}` for an answer on a line starting with `A:`."""

    regex: str
    occurrence: Literal["first", "last"] = "last"

    @field_validator("regex")
    @classmethod
    def _compiles_with_one_group(cls, value: str) -> str:
        check_regex(value)
        return value

    def spec(self) -> tuple[str, str, str]:
        """The verifier's form of this extractor."""
        return ("regex", self.regex, self.occurrence)


class MathVerifySettings(Strict):
    """math-verify's settings in math mode (its defaults): `verify`'s comparison arguments and the
    extraction configs `parse` reads a prediction with."""

    float_rounding: int = Field(6, ge=0, le=15)
    numeric_precision: int = Field(15, ge=1, le=100)
    strict: bool = True
    allow_set_relation_comp: bool = False
    extraction: tuple[Literal["latex", "expr", "string"], ...] = ("latex", "expr")
    boxed_match_priority: int = 50

    @field_validator("extraction")
    @classmethod
    def _not_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("extraction must name at least one of latex, expr, string")
        return value


ScorerName = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
RESERVED_SCORERS = ("verifier", "step_verifier")


class NamedScorer(Strict):
    """An entry of `scoring.reward_models`: its `name` (the scores.scorer of its rows) defaults to
    its kind."""

    @model_validator(mode="before")
    @classmethod
    def _name_defaults_to_kind(cls, value: object) -> object:
        if isinstance(value, dict) and "name" not in value:
            return {**value, "name": value.get("kind", cls.model_fields["kind"].default)}
        return value


class RewardModelTraining(RMTrainStage):
    """Train a reward model each round from that round's own data instead of reading a folder:
    the ORM on the verifier's labels (balanced, or `objective: pairwise`), the PRM on Math-Shepherd
    labels (`labels: soft | hard`). It starts from the round's policy (`policy`) or the run's base
    model, on at most `max_examples` candidates (whole prompt groups, a fixed hash order); reused
    when the inputs hash the same."""

    start: Literal["policy", "base"] = "policy"
    max_examples: int | None = Field(2000, ge=1)


class _FolderOrTrained(NamedScorer):
    path: str | None = Field(None, min_length=1)
    train: RewardModelTraining | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "_FolderOrTrained":
        if (self.path is None) == (self.train is None):
            raise ValueError(f"{self.kind} entry {self.name!r} needs exactly one of path (a model folder) "
                             "and train (training settings)")
        if self.train is not None:
            self.train.check_for(self.kind)
        return self


class OrmScorerConfig(_FolderOrTrained):
    """An outcome reward model (a one-label sequence-classification model), from a folder or trained
    each round: one value per candidate, its logit."""

    kind: Literal["orm"] = "orm"
    name: str = ScorerName
    batch_size: int = Field(64, ge=1)


class PrmScorerConfig(_FolderOrTrained):
    """A process reward model from a folder: one probability per step. `format` says how it reads
    steps: `token_classifier` (a one-label token-classification model, sigmoid at each step's last
    token), `step_tag` (a causal LM, P(good_token) against P(bad_token) at a `step_tag` after each
    step, as Math-Shepherd's and RLHFlow's PRMs), `two_class` (a two-label token classifier read at
    a `separator_token` after each step, as Qwen2.5-Math-PRM)."""

    kind: Literal["prm"] = "prm"
    name: str = ScorerName
    batch_size: int = Field(64, ge=1)
    format: Literal["token_classifier", "step_tag", "two_class"] = "token_classifier"
    step_tag: str = Field("ки", min_length=1)
    good_token: str = Field("+", min_length=1)
    bad_token: str = Field("-", min_length=1)
    separator_token: str = Field("<extra_0>", min_length=1)


class PrlScorerConfig(NamedScorer):
    """PRL process values: the outcome reward decomposed over steps by the policy's log-ratio to
    the base model, with KL coefficient `eta` (docs/architecture.md)."""

    kind: Literal["prl"] = "prl"
    name: str = ScorerName
    eta: float = Field(1.0, gt=0)


class MathShepherdConfig(NamedScorer):
    """Math-Shepherd step labels from rollouts of the round's own policy, on answer-correct
    candidates only and lazily: a prompt stops being labelled once `enough` of its candidates have
    every step's label above `above` (0: some rollout from each step reached the reference; set it
    to the selection's `steps_above` threshold). Only the final answer's reference is read."""

    kind: Literal["math_shepherd"] = "math_shepherd"
    name: str = ScorerName
    rollouts: int = Field(4, ge=1)
    temperature: float = Field(1.0, ge=0)
    max_tokens: int = Field(64, ge=1)
    seed: int = 0
    enough: int = Field(4, ge=1)
    above: float = Field(0.0, ge=0.0, lt=1.0)


class JudgeScorerConfig(NamedScorer, JudgeSettings):
    """A pairwise judge ranking each prompt's candidates by a knockout or ELO tournament; the
    value is the tournament score (ELO rating, or knockout rounds won). `model` is a generating
    model folder; None: the round's own policy judges, through its engine."""

    kind: Literal["judge"] = "judge"
    name: str = ScorerName
    method: Literal["knockout", "elo"] = "knockout"
    candidates: Literal["answer_correct", "all"] = "answer_correct"


class ConfidenceScorerConfig(NamedScorer):
    """The policy's confidence in its own sample: the mean log-probability of the tokens it drew,
    per step and over the completion (`tasks/scoring/confidence.py`). Needs no model pass: the
    engine returned the log-probabilities with the samples."""

    kind: Literal["confidence"] = "confidence"
    name: str = ScorerName


RewardScorer = Annotated[Union[OrmScorerConfig, PrmScorerConfig, PrlScorerConfig, MathShepherdConfig,
                               JudgeScorerConfig, ConfidenceScorerConfig],
                         Field(discriminator="kind")]


class ScoringStage(Strict):
    """Which scorers run on every candidate."""

    verifier_mode: Literal["exact", "math"] = "exact"
    # built-in names ("hash", "boxed", "answer_is", "answer_line") and regex extractors, tried in order
    extractors: tuple[str | RegexExtractor, ...] = ("hash", "boxed", "answer_is", "answer_line")
    math: MathVerifySettings = MathVerifySettings()

    @field_validator("extractors", mode="before")
    @classmethod
    def _known_extractors(cls, value: object) -> object:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ValueError("extractors must be a list of built-in names and {regex: ...} entries")
        if not value:
            raise ValueError("extractors must name at least one extractor")
        out: list[object] = []
        for entry in value:
            if isinstance(entry, dict):
                unknown = set(entry) - {"regex", "occurrence"}
                if unknown or "regex" not in entry:
                    raise ValueError(f"a regex extractor has keys regex and occurrence, got {sorted(entry)}")
                check_regex(str(entry["regex"]))
                out.append(RegexExtractor(**entry))
            elif entry in ("hash", "boxed", "answer_is", "answer_line") or isinstance(entry, RegexExtractor):
                out.append(entry)
            else:
                raise ValueError(f"unknown answer extractor {entry!r} (built-ins: hash, boxed, answer_is, answer_line; "
                                 "or {regex: ..., occurrence: first|last})")
        return tuple(out)
    timeout_s: float = Field(5.0, gt=0)
    workers: int = Field(2, ge=1)
    step_verifier: bool = True  # the demo task's process-level rule verifier
    prl_eta: float | None = Field(None, gt=0)  # set to compute PRL process values (scorer "prl")
    chunk_size: int = Field(4096, ge=1)  # candidates per scores shard (whole prompt groups)
    # learned and derived scorers run on each round's train candidates after the rule scorers
    reward_models: list[RewardScorer] = []

    @field_validator("reward_models")
    @classmethod
    def _distinct_names(cls, entries: list) -> list:
        names = [r.name for r in entries]
        for name in names:
            if name in RESERVED_SCORERS:
                raise ValueError(f"{name!r} is a rule scorer's name; give this one another name")
            if names.count(name) > 1:
                raise ValueError(f"two scorers are named {name!r}; set `name` on one")
        for kind in ("prl", "math_shepherd", "judge"):
            if sum(r.kind == kind for r in entries) > 1:
                raise ValueError(f"at most one {kind} entry")
        return entries

    @model_validator(mode="after")
    def _trained_prm_has_labels(self) -> "ScoringStage":
        for entry in self.reward_models:
            if entry.kind == "prm" and entry.train is not None:
                if entry.format != "token_classifier":
                    raise ValueError(f"reward_models: {entry.name}: only a token_classifier PRM is trained here")
                if not any(r.kind == "math_shepherd" for r in self.reward_models):
                    raise ValueError(f"reward_models: {entry.name} trains on Math-Shepherd labels: add a "
                                     "math_shepherd entry")
        return self

    @model_validator(mode="after")
    def _prl_once(self) -> "ScoringStage":
        if self.prl_eta is not None and any(r.kind == "prl" for r in self.reward_models):
            raise ValueError("PRL is set twice: use scoring.prl_eta or a reward_models entry of kind prl, not both")
        return self


# how a finetuning epoch is cut into batches (tasks/training/finetune.py, `step_batches`)
Batching = Literal["shuffle", "by_length"]


class FinetuneStage(Strict):
    """SFT on each round's kept samples."""

    start_from: Literal["previous", "base"] = "previous"
    epochs: float = Field(3.0, gt=0)
    # a fixed budget of optimiser steps a round, whatever the kept count (`epochs` is then unused)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(32, ge=1)
    # `by_length`: examples of similar token length share a batch (less padding; each epoch still
    # sees every example once); `shuffle`: each batch a plain random draw
    batching: Batching = "shuffle"
    learning_rate: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(10, ge=0)
    max_length: int = Field(256, ge=8)
    seed: int = 0
    use_weights: bool = True  # per-sample weights from the selection (e.g. PRL)
    # weight-space ensembling with the base model (WiSE-FT): the saved model's weights are
    # (1 - merge_with_base) * finetuned + merge_with_base * base; 0 saves the finetuned weights
    merge_with_base: float = Field(0.0, ge=0, lt=1)
    # per-token weights in the SFT loss from a step scorer's step scores (`token_weight_scorer`):
    # `prl` weighs each step's tokens by its PRL process value, clipped to [0, token_weight_clip],
    # divided by the sample's mean; `prefix` learns each sample only up to its first step scored below
    # `token_weight_min` (weight 1 before it, 0 from it on, EOS included)
    token_weights: Literal["none", "prl", "prefix"] = "none"
    token_weight_scorer: str = Field("prl", min_length=1)
    token_weight_clip: float = Field(2.0, gt=0)
    token_weight_min: float = 0.0
    # LoRA through peft (for large models); None = full finetuning. The adapter is merged into the
    # saved checkpoint, so the next round's engine loads a plain model folder.
    lora_r: int | None = Field(None, ge=1)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    lora_target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")

    @model_validator(mode="after")
    def _steps_or_epochs(self) -> "FinetuneStage":
        if self.max_steps is not None and "epochs" in self.model_fields_set:
            raise ValueError("set epochs or max_steps, not both: max_steps trains that many steps whatever the "
                             "epochs")
        return self


class EvalStage(Strict):
    """Held-out evaluation of every model of the run.

    `rm_scorers` names the reward scores rm@k ranks by (`schemas.policy.score_ref`): an ORM by its
    value (`orm`), a PRM by an aggregate of its step scores (`prm:min`, `prm:last`, `prm:mean`,
    `prm:product`). Each name is one rm@k row's `scorer`.
    """

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

    @field_validator("rm_scorers")
    @classmethod
    def _rm_scorers_parse(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        check_score_names(names)
        return names


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


def extractor_specs(extractors: tuple) -> tuple:
    """The verifier's form of configured extractors (names stay names, regexes become tuples)."""
    return tuple(e.spec() if isinstance(e, RegexExtractor) else e for e in extractors)
