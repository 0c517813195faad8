"""The context of one round: built once, handed to every stage.

Round k starts from model M_k (M_0 is the base model) and ends with M_{k+1}, finetuned on what it
kept. `Round` holds what every stage needs; `Engines` owns the generation engine across stages and
rounds (the engine over M_{k+1} that evaluated it serves round k+1); `RoundResult` is what a round
reports.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas.generation import PromptFormat
from schemas.loop import JudgeScorerConfig, LoopConfig, MathShepherdConfig, OrmScorerConfig, PrmScorerConfig
from tasks.evaluation.evaluate import EVAL_SPLIT
from tasks.generation.generate import GenerationBackend, LazyBackend, generation_hash, model_id_for
from tasks.lake.sql import connect
from tasks.lake.store import Lake
from tasks.prompts.sources import split_prompts
from tasks.runtime.errors import StageFailed
from tasks.runtime.logs import run_logger
from tasks.scoring.confidence import ConfidenceScorer
from tasks.scoring.math_shepherd import MathShepherdScorer
from tasks.scoring.public_prm import StepTagPRMScorer, TwoClassPRMScorer
from tasks.scoring.reward_model import ORMScorer, PRMScorer
from tasks.scoring.score import PRLScorer, rule_scorers


@dataclass
class ModelRef:
    """A checkpoint of the run: its folder and id."""

    path: str
    model_id: str


@dataclass
class RoundResult:
    """What one round did, with wall seconds per stage (0 when a stage was already done)."""

    iteration: int
    model_in: ModelRef
    model_out: ModelRef
    prompts: int = 0
    candidates: int = 0
    kept: int = 0
    policy_hash: str = ""
    seconds: dict[str, float] = field(default_factory=dict)
    evals: dict[str, dict[str, float]] = field(default_factory=dict)
    trained: dict[str, dict] = field(default_factory=dict)  # reward model name -> model_id, path, examples


def round_model_dir(config: LoopConfig, iteration: int) -> Path:
    """Folder of the run's model M_iteration (iteration >= 1)."""
    return Path(config.models_dir) / config.run_id / f"iter-{iteration}"


def model_for_round(config: LoopConfig, iteration: int) -> ModelRef:
    """M_iteration of this run: the base model for 0, else the checkpoint the previous round made."""
    path = Path(config.base_model) if iteration == 0 else round_model_dir(config, iteration)
    if not (path / "config.json").is_file():
        hint = "run `flywheel bootstrap` first" if iteration == 0 else f"run iteration {iteration - 1} first"
        raise FileNotFoundError(f"model for iteration {iteration} not found at {path}: {hint}")
    return ModelRef(str(path.resolve()), model_id_for(path))


def round_sampling_hash(config: LoopConfig) -> str:
    """The generation hash of the round's train candidates (with model_id, it names a round's set)."""
    g = config.generation
    return generation_hash(g.sampling, g.format, g.step_separator, g.engine)


@dataclass(frozen=True)
class Round:
    """What every stage of one round needs, built once: the run's config, the iteration, the lake,
    the model the round starts from, and the sampling hash that names its train candidates."""

    config: LoopConfig
    iteration: int
    lake: Lake
    model_in: ModelRef
    sampling_hash: str

    @classmethod
    def start(cls, config: LoopConfig, iteration: int) -> "Round":
        """The context of round `iteration` of this run (its start model must exist)."""
        return cls(config, iteration, Lake(config.lake), model_for_round(config, iteration),
                   round_sampling_hash(config))

    def train_prompts(self) -> list[dict]:
        """This round's train prompts: all of them, or a rotating slice of `prompts_per_round`."""
        rows = split_prompts(self.lake, "train")
        per_round = self.config.generation.prompts_per_round
        if per_round is None or per_round >= len(rows):
            return rows
        start = (self.iteration * per_round) % len(rows)
        return (rows + rows)[start:start + per_round]

    def base(self) -> ModelRef | None:
        """The run's base model M_0, which drift is measured against (None: its folder is missing)."""
        if self.iteration == 0 and Path(self.model_in.path) == Path(self.config.base_model).resolve():
            return self.model_in
        path = Path(self.config.base_model)
        return ModelRef(str(path.resolve()), model_id_for(path)) if (path / "config.json").is_file() else None

    def eval_prompts(self) -> list[dict]:
        """Every eval-split prompt."""
        return split_prompts(self.lake, EVAL_SPLIT)

    def rule_scorers(self) -> list[Any]:
        """The rule scorers every candidate gets (the verifier first)."""
        return rule_scorers(self.config.scoring)

    def scorers(self) -> list[Any]:
        """The scorers every train candidate of the round gets, in order: the rule scorers, then
        PRL (it reads the verifier's rows), the reward models from folders and the policy's
        confidence. Math-Shepherd labels are not among them: they need the engine (`labeller`)."""
        scoring, fmt = self.config.scoring, self.config.generation.format
        separator = self.config.generation.step_separator
        scorers = self.rule_scorers()
        if scoring.prl_eta is not None:
            scorers.append(PRLScorer(self.lake, self.iteration, self.config.base_model, scoring.prl_eta, fmt))
        for entry in scoring.reward_models:
            if entry.kind == "prl":
                scorers.append(PRLScorer(self.lake, self.iteration, self.config.base_model, entry.eta, fmt,
                                         name=entry.name))
            elif entry.kind in ("orm", "prm"):
                scorers.append(reward_model_scorer(entry, fmt, separator, self.reward_model_folder(entry)))
            elif entry.kind == "confidence":
                scorers.append(ConfidenceScorer(entry.name))
        return scorers

    def reward_model_folder(self, entry: OrmScorerConfig | PrmScorerConfig) -> str:
        """Where a reward model entry's model is: its folder, or where this round trains it."""
        if entry.path is not None:
            return entry.path
        return str(Path(self.config.models_dir) / self.config.run_id / f"iter-{self.iteration}-{entry.name}")

    def trained_reward_models(self) -> list[OrmScorerConfig | PrmScorerConfig]:
        """The reward-model entries this round trains from its own data."""
        return [r for r in self.config.scoring.reward_models if r.kind in ("orm", "prm") and r.train is not None]

    def math_shepherd(self) -> MathShepherdConfig | None:
        """The round's Math-Shepherd settings, when it labels steps."""
        return next((r for r in self.config.scoring.reward_models if r.kind == "math_shepherd"), None)

    def judge(self) -> JudgeScorerConfig | None:
        """The round's pairwise-judge settings, when it ranks candidates with a judge."""
        return next((r for r in self.config.scoring.reward_models if r.kind == "judge"), None)

    def labeller(self, engine: GenerationBackend) -> tuple[MathShepherdScorer, MathShepherdConfig] | None:
        """The Math-Shepherd scorer over the round's engine and its config entry, when configured."""
        entry = self.math_shepherd()
        if entry is None:
            return None
        g, scoring = self.config.generation, self.config.scoring
        rollout = g.sampling.model_copy(update={"n": entry.rollouts, "temperature": entry.temperature,
                                                "max_tokens": entry.max_tokens, "seed": entry.seed})
        scorer = MathShepherdScorer(engine, rollout, model_id=self.model_in.model_id, prompt_format=g.format,
                                    step_separator=g.step_separator, verifier_mode=scoring.verifier_mode,
                                    timeout_s=scoring.timeout_s, workers=scoring.workers, name=entry.name)
        return scorer, entry


def reward_model_scorer(entry: OrmScorerConfig | PrmScorerConfig, fmt: PromptFormat, separator: str,
                        folder: str | None = None) -> Any:
    """The scorer of an `orm` or `prm` entry of `scoring.reward_models` (its model in `folder`,
    default the entry's path), by the PRM's format."""
    path = folder or entry.path
    common = {"name": entry.name, "prompt_format": fmt, "batch_size": entry.batch_size, "step_separator": separator}
    if entry.kind == "orm":
        return ORMScorer(path, **common)
    if entry.format == "step_tag":
        return StepTagPRMScorer(path, entry.step_tag, entry.good_token, entry.bad_token, **common)
    if entry.format == "two_class":
        return TwoClassPRMScorer(path, entry.separator_token, **common)
    return PRMScorer(path, **common)


class Engines:
    """The generation engine of a run, one at a time, over whichever model a stage needs; a
    context manager that stops it at the end. `over(model)` keeps a running engine that serves
    that model (the engine over M_{k+1} that evaluated it serves round k+1) and otherwise starts
    one lazily; `release()` frees its memory before training."""

    def __init__(self, config: LoopConfig) -> None:
        self.engine_config = config.generation.engine
        self.current: LazyBackend | None = None

    def over(self, model: ModelRef) -> LazyBackend:
        """The engine over `model`, reused when it is the one already held."""
        if self.current is None or self.current.model_path != Path(model.path):
            self.release()
            self.current = LazyBackend(model.path, self.engine_config)
        return self.current

    def release(self) -> None:
        """Stop the held engine (a later `over` starts a new one)."""
        if self.current is not None:
            self.current.close()
            self.current = None

    def __enter__(self) -> "Engines":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextmanager
def timed_stage(result: RoundResult, name: str) -> Iterator[None]:
    """Time one stage into `result.seconds[name]` and log it; a failure becomes StageFailed naming
    the iteration and the stage."""
    log = run_logger("flywheel.iteration")
    started = time.perf_counter()
    try:
        yield
    except Exception as error:  # noqa: BLE001 - named, logged and raised again below
        failure = StageFailed(result.iteration, name, error)
        log.error("%s (after %.1f s)", failure, time.perf_counter() - started)
        raise failure from error
    result.seconds[name] = result.seconds.get(name, 0.0) + time.perf_counter() - started
    log.info("iteration %d: stage %s done in %.1f s", result.iteration, name, result.seconds[name])


def summarise_round(result: RoundResult) -> dict:
    """A JSON-ready summary of a round."""
    return {
        "iteration": result.iteration, "model_in": result.model_in.model_id,
        "model_out": result.model_out.model_id, "prompts": result.prompts,
        "candidates": result.candidates, "kept": result.kept, "policy_hash": result.policy_hash,
        "seconds": {k: round(v, 2) for k, v in result.seconds.items()},
        "pass@1_in": result.evals[result.model_in.model_id].get("pass@1"),
        "pass@1_out": result.evals[result.model_out.model_id].get("pass@1"),
        "trained": result.trained,
    }


def should_stop(config: LoopConfig, previous: float | None, current: float | None) -> bool:
    """True when early stopping is on and pass@1 did not improve by more than min_delta."""
    if not config.early_stop.enabled or previous is None or current is None:
        return False
    return current <= previous + config.early_stop.min_delta


def pass_at_1_by_iteration(config: LoopConfig) -> dict[int, float]:
    """pass@1 of each evaluated model of the run, by iteration (empty before the first evaluation)."""
    lake = Lake(config.lake)
    if not lake.shards("evals"):
        return {}
    rows = connect(lake).execute(
        "SELECT iteration, value FROM evals WHERE run_id = ? AND metric = 'pass' AND k = 1 AND scorer IS NULL",
        [config.run_id]).fetchall()
    return {int(iteration): float(value) for iteration, value in rows}


def next_iteration(config: LoopConfig) -> tuple[int | None, str]:
    """The round a scheduled run should do next, or None with the reason the run is finished.

    Round k is done when M_{k+1} has been evaluated; a round that crashed part-way is redone (its
    finished stages are skipped by the lake).
    """
    evaluated = pass_at_1_by_iteration(config)
    done = max(evaluated, default=0)  # rounds 0..done-1 are complete
    if done >= config.rounds:
        return None, f"all {config.rounds} rounds are done"
    if done >= 1 and should_stop(config, evaluated.get(done - 1), evaluated.get(done)):
        return None, (f"early stop: pass@1 went {evaluated.get(done - 1, float('nan')):.3f} → "
                      f"{evaluated[done]:.3f} in round {done - 1}")
    return done, f"round {done} of {config.rounds}"


def run_summary_path(config: LoopConfig) -> Path:
    """Where the run's round summaries are written (data/reports/<run>/rounds.json)."""
    return Path(config.lake).resolve().parent / "reports" / config.run_id / "rounds.json"


def write_run_summary(config: LoopConfig, summary: dict) -> dict:
    """Merge a run's summary into its rounds.json, with the run's reward models by name and kind;
    a rerun that found a round done keeps the stage seconds of the run that did the work. Returns
    what was written."""
    path = run_summary_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(path.read_text()) if path.is_file() else {}
    old = {r["iteration"]: r for r in previous.get("rounds", [])}
    for row in summary["rounds"]:
        before = old.get(row["iteration"])
        if before and before.get("model_out") == row["model_out"]:
            row["seconds"] = {k: max(v, before["seconds"].get(k, 0.0)) for k, v in row["seconds"].items()}
    summary = {**summary, "reward_models": {e.name: e.kind for e in config.scoring.reward_models},
               "recipe": {"selection": config.selection.name, "finetune": config.finetune.model_dump(mode="json")}}
    path.write_text(json.dumps(summary, indent=2))
    return summary
