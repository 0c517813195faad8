"""Selection (rejection sampling) policies: declarative, hashed configs.

A policy is a name and a list of steps applied in order to one iteration's scored candidates:
filters drop candidates or whole prompts, ranking steps reorder each prompt's survivors best first,
truncation keeps the first m. Steps are a discriminated union on `kind`; unknown keys are errors.
`tasks.selection.select` holds what each step does; this module only says what a policy is.

    name: rft
    steps:
      - {kind: keep_correct}
      - {kind: pass_rate_band, low: 0.0, high: 1.0}
      - {kind: dedup, mode: normalised}
      - {kind: max_per_prompt, m: 4}
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Sequence, Union, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


Aggregate = Literal["min", "last", "product", "mean"]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
ScorerName = Annotated[str, Field(min_length=1)]


class PolicyError(ValueError):
    """A policy config is invalid; the message is one line naming the key or value."""


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ScoreRef(_Config):
    """A number per candidate: a scorer's `value`, or an aggregate of its per-step scores."""

    scorer: ScorerName
    field: Literal["value", "steps"] = "value"
    aggregate: Aggregate | None = None

    @model_validator(mode="after")
    def _aggregate_matches_field(self) -> ScoreRef:
        if self.field == "steps" and self.aggregate is None:
            raise ValueError(
                "aggregate (min, last, product or mean) is required when field is 'steps'")
        if self.field == "value" and self.aggregate is not None:
            raise ValueError("aggregate is only allowed when field is 'steps'")
        return self

    def label(self) -> str:
        """A short readable name, e.g. `orm.value` or `prm.steps.min`."""
        return f"{self.scorer}.{self.field}" + (f".{self.aggregate}" if self.aggregate else "")


SCORE_NAME_SEP = ":"


def score_ref(name: str) -> ScoreRef:
    """The ScoreRef a score name denotes: `orm` is scorer orm's value, `prm:min` (or `:last`,
    `:product`, `:mean`) the aggregate of scorer prm's per-step scores.

    A name that is empty, has whitespace, no scorer or an unknown aggregate is a PolicyError.
    """
    if not isinstance(name, str):
        raise PolicyError(f"score name {name!r} is not a string")
    if not name:
        raise PolicyError("score name is empty")
    if any(ch.isspace() for ch in name):
        raise PolicyError(f"score name {name!r} contains whitespace")
    scorer, sep, aggregate = name.rpartition(SCORE_NAME_SEP)
    if not sep:
        return ScoreRef(scorer=name)
    if not scorer:
        raise PolicyError(f"score name {name!r} has no scorer before {SCORE_NAME_SEP!r}")
    if aggregate not in get_args(Aggregate):
        raise PolicyError(f"score name {name!r}: unknown step aggregate {aggregate!r} "
                          f"(known: {', '.join(get_args(Aggregate))})")
    return ScoreRef(scorer=scorer, field="steps", aggregate=aggregate)


def check_score_names(names: Sequence[str], what: str = "rm scorer") -> list[ScoreRef]:
    """The ScoreRef of each name (`score_ref`); a bad or repeated name is a PolicyError naming it."""
    if isinstance(names, str):
        raise PolicyError(f"{what}s must be a list of names, got the string {names!r}")
    refs, seen = [], set()
    for name in names:
        refs.append(score_ref(name))
        if name in seen:
            raise PolicyError(f"{what} {name!r} is listed twice")
        seen.add(name)
    return refs


class KeepCorrect(_Config):
    """Keep candidates whose verifier label is 'correct'."""

    kind: Literal["keep_correct"] = "keep_correct"
    scorer: ScorerName = "verifier"


class KeepAllStepsCorrect(_Config):
    """Keep candidates whose process-level verifier value is 1.0 (every step correct)."""

    kind: Literal["keep_all_steps_correct"] = "keep_all_steps_correct"
    scorer: ScorerName = "step_verifier"


class Threshold(_Config):
    """Keep candidates whose score is at least `min`; a null score does not pass."""

    kind: Literal["threshold"] = "threshold"
    score: ScoreRef
    min: FiniteFloat


class ThresholdOrTopK(_Config):
    """Keep candidates whose score is at least `min`, and in every prompt its `k` best by the score
    even below `min`: a prompt none of whose candidates reach the threshold still keeps its best
    (ties to the lower sample_index). The current order is kept; a null score does not pass."""

    kind: Literal["threshold_or_top_k"] = "threshold_or_top_k"
    score: ScoreRef
    min: FiniteFloat
    k: Annotated[int, Field(ge=1)] = 1


class PrmMinThreshold(_Config):
    """Keep candidates whose lowest PRM step score is at least `min`; no step scores do not pass."""

    kind: Literal["prm_min_threshold"] = "prm_min_threshold"
    scorer: ScorerName = "prm"
    min: FiniteFloat


class StepsAbove(_Config):
    """Keep candidates whose every step score is above `above` (Math-Shepherd: every step reached
    the reference in some rollout). A candidate the scorer left unlabelled does not pass: lazy
    labelling stops once a prompt has enough candidates that pass."""

    kind: Literal["steps_above"] = "steps_above"
    scorer: ScorerName = "math_shepherd"
    above: FiniteFloat = 0.0


class BestOfN(_Config):
    """Keep the single best candidate per prompt by a score (ties to the lower sample_index)."""

    kind: Literal["best_of_n"] = "best_of_n"
    score: ScoreRef


class TopK(_Config):
    """Keep the k best candidates per prompt by a score (ties to the lower sample_index)."""

    kind: Literal["top_k"] = "top_k"
    score: ScoreRef
    k: Annotated[int, Field(ge=1)]


class MajorityPseudoLabel(_Config):
    """Keep candidates whose extracted answer equals their prompt's majority answer.

    The vote runs over all of a prompt's candidates (unparseable answers do not vote), optionally
    weighted by a score. `referenced` says what happens to prompts that have a reference answer:
    pass through untouched, drop, or vote like the others.

    With `weight`, a sample's vote is the sigmoid of its score (`tasks.selection.best_of_n.orm_vote_weight`,
    the weight best-of-N's weighted majority uses), in [0, 1]: an ORM logit may be any real
    number, negative included, and the sigmoid keeps the scores' order. A null score does not vote.
    """

    kind: Literal["majority_pseudo_label"] = "majority_pseudo_label"
    scorer: ScorerName = "verifier"
    weight: ScoreRef | None = None
    referenced: Literal["pass", "drop", "vote"] = "pass"


class PassRateBand(_Config):
    """Drop prompts whose verifier solve rate over all their samples is <= low or >= high."""

    kind: Literal["pass_rate_band"] = "pass_rate_band"
    scorer: ScorerName = "verifier"
    low: Fraction = 0.0
    high: Fraction = 1.0

    @model_validator(mode="after")
    def _ordered(self) -> PassRateBand:
        if not self.low < self.high:
            raise ValueError(f"need low < high, got low={self.low}, high={self.high}")
        return self


class Dedup(_Config):
    """Within each prompt keep the lowest sample_index of each group of duplicate texts.

    `normalised` compares texts with whitespace runs collapsed and case folded to lower.
    """

    kind: Literal["dedup"] = "dedup"
    mode: Literal["exact", "normalised"] = "exact"


class MaxPerPrompt(_Config):
    """Keep at most the first m candidates of each prompt in the current order."""

    kind: Literal["max_per_prompt"] = "max_per_prompt"
    m: Annotated[int, Field(ge=1)]


class Subsample(_Config):
    """Keep a pseudo-random `share` of the candidates, each kept or not by a hash of `seed` and its
    candidate_id alone (so the same candidate is kept in every run, whatever else the frame holds).
    A control for a filter that keeps that share: what fewer samples do without a signal."""

    kind: Literal["subsample"] = "subsample"
    share: Fraction
    seed: int = 0


class AnyOf(_Config):
    """Keep a candidate when any of `steps` keeps it, each step applied alone to the candidates
    that reach this one: a union of filters (listing steps one after another requires them all).
    The current order is kept. E.g. a confident right answer, or an unsure one whose every
    Math-Shepherd label is above 0."""

    kind: Literal["any_of"] = "any_of"
    steps: Annotated[list["Step"], Field(min_length=2)]

    @model_validator(mode="after")
    def _no_weighting(self) -> AnyOf:
        if any(isinstance(step, PrlWeights) for step in self.steps):
            raise ValueError("prl_weights sets weights, it is not a filter: put it outside any_of")
        return self


class PrlWeights(_Config):
    """Give each kept sample a weight from a PRL score instead of 1.0.

    The weight is the score, clipped to [clip_min, clip_max] when given, then optionally divided
    by the mean weight of all kept samples (`mean`) or of the prompt's kept samples
    (`prompt_mean`). Weights are computed over the final kept set wherever the step sits.
    """

    kind: Literal["prl_weights"] = "prl_weights"
    score: ScoreRef = ScoreRef(scorer="prl", field="value")
    clip_min: FiniteFloat | None = None
    clip_max: FiniteFloat | None = None
    normalise: Literal["none", "mean", "prompt_mean"] = "none"

    @model_validator(mode="after")
    def _ordered(self) -> PrlWeights:
        low, high = self.clip_min, self.clip_max
        if low is not None and high is not None and low > high:
            raise ValueError(f"need clip_min <= clip_max, got {self.clip_min} > {self.clip_max}")
        return self


Step = Annotated[
    Union[
        KeepCorrect, KeepAllStepsCorrect, Threshold, ThresholdOrTopK, PrmMinThreshold, StepsAbove,
        BestOfN, TopK, MajorityPseudoLabel, PassRateBand, Dedup, MaxPerPrompt, Subsample, AnyOf,
        PrlWeights,
    ],
    Field(discriminator="kind"),
]
STEP_KINDS: tuple[str, ...] = tuple(
    model.model_fields["kind"].default for model in get_args(get_args(Step)[0]))
AnyOf.model_rebuild()


class SelectionPolicy(_Config):
    """A named list of selection steps applied in order."""

    name: Annotated[str, Field(min_length=1)]
    steps: Annotated[list[Step], Field(min_length=1)]

    @model_validator(mode="after")
    def _one_weighting(self) -> SelectionPolicy:
        if sum(isinstance(step, PrlWeights) for step in self.steps) > 1:
            raise ValueError("at most one prl_weights step per policy")
        return self


def canonical(policy: SelectionPolicy) -> dict[str, Any]:
    """The policy as plain JSON data with every default written out (what the hash covers)."""
    return policy.model_dump(mode="json")



def policy_from_dict(data: Mapping[str, Any]) -> SelectionPolicy:
    """Build a policy from a mapping; raise PolicyError naming the first unknown key or bad value.
    """
    if not isinstance(data, Mapping):
        raise PolicyError(f"a policy config must be a mapping, got {type(data).__name__}")
    try:
        return SelectionPolicy.model_validate(dict(data))
    except ValidationError as error:
        raise PolicyError(_describe(error)) from None


def policy_from_yaml(text: str) -> SelectionPolicy:
    """Build a policy from YAML text (a mapping with `name` and `steps`)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise PolicyError(f"policy YAML does not parse: {str(error).splitlines()[0]}") from None
    return policy_from_dict(data)


def read_policy(path: str | os.PathLike[str]) -> SelectionPolicy:
    """Build a policy from a YAML file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise PolicyError(f"cannot read policy file {path}: {error.strerror or error}") from None
    return policy_from_yaml(text)


def _describe(error: ValidationError) -> str:
    """One line for the first validation error, naming its key path."""
    first = error.errors()[0]
    raw = list(first["loc"])
    # a discriminated union puts the step's kind after its list index; drop it from the path
    loc = [p for i, p in enumerate(raw)
           if not (i and isinstance(raw[i - 1], int) and p in STEP_KINDS)]
    more = error.error_count() - 1
    suffix = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
    kind = first["type"]
    if kind == "extra_forbidden":
        return f"policy config: unknown key {loc[-1]!r} in {_path(loc[:-1])}{suffix}"
    if kind == "missing":
        return f"policy config: missing key {loc[-1]!r} in {_path(loc[:-1])}{suffix}"
    if kind == "union_tag_invalid":
        tag = first["ctx"]["tag"]
        return (f"policy config: unknown step kind {tag!r} in {_path(loc)} "
                f"(kinds: {', '.join(STEP_KINDS)}){suffix}")
    if kind == "union_tag_not_found":
        return f"policy config: {_path(loc)} has no 'kind'{suffix}"
    message = first["msg"].removeprefix("Value error, ")
    return f"policy config: {_path(loc)}: {message}{suffix}"


def _path(loc: list[Any]) -> str:
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    return text or "the policy"


PRESETS: dict[str, SelectionPolicy] = {
    policy.name: policy
    for policy in (
        SelectionPolicy(name="keep_correct", steps=[KeepCorrect()]),
        SelectionPolicy(name="all_steps_correct", steps=[KeepAllStepsCorrect()]),
        SelectionPolicy(
            name="rft",
            steps=[KeepCorrect(), PassRateBand(), Dedup(mode="normalised"), MaxPerPrompt(m=4)],
        ),
        SelectionPolicy(
            name="majority",
            steps=[MajorityPseudoLabel(), Dedup(mode="normalised"), MaxPerPrompt(m=4)],
        ),
        # answer-correct and every step's Math-Shepherd label above 0
        SelectionPolicy(
            name="rft_mc",
            steps=[KeepCorrect(), StepsAbove(), Dedup(mode="normalised"), MaxPerPrompt(m=4)],
        ),
        # answer-correct, the best 4 by their lowest PRM step score
        SelectionPolicy(
            name="rft_prm",
            steps=[KeepCorrect(), Dedup(mode="normalised"),
                   TopK(score=ScoreRef(scorer="prm", field="steps", aggregate="min"), k=4)],
        ),
        # answer-correct, the best 4 by the pairwise judge's tournament score
        SelectionPolicy(
            name="rft_judge",
            steps=[KeepCorrect(), Dedup(mode="normalised"), TopK(score=ScoreRef(scorer="judge"), k=4)],
        ),
        # answer-correct and drawn without a slip: the policy's mean log-probability of its own
        # tokens at least -0.2 (per token, e^-0.2 = 0.82 on average)
        SelectionPolicy(
            name="rft_conf",
            steps=[KeepCorrect(), Threshold(score=ScoreRef(scorer="confidence"), min=-0.2)],
        ),
        # answer-correct, weighted by PRL's process value (clipped to [0, 2], mean 1 over the kept set)
        SelectionPolicy(
            name="prl_weighted",
            steps=[KeepCorrect(), Dedup(mode="normalised"), MaxPerPrompt(m=4),
                   PrlWeights(clip_min=0.0, clip_max=2.0, normalise="mean")],
        ),
    )
}


def preset(name: str) -> SelectionPolicy:
    """A named built-in policy; raise PolicyError naming an unknown one."""
    try:
        return PRESETS[name]
    except KeyError:
        raise PolicyError(
            f"unknown policy preset {name!r} (presets: {', '.join(PRESETS)})") from None
