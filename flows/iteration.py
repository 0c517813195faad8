"""One iteration of the loop as a Prefect flow: generate → score → select → finetune → evaluate.

Round k starts from model M_k (M_0 is the base model). It evaluates M_k on the eval split (once),
samples candidates from M_k on train prompts, scores and selects them, finetunes M_{k+1} on what
was kept, and evaluates M_{k+1}. Every stage's output is keyed by content hashes of its inputs, so
the lake is the cache: a finished stage is skipped without starting an engine, and a crashed stage
redoes only what is missing. The engine over M_{k+1} stays up for the next round. Prefect's own
result cache is therefore off for every task (`cache_policy=NO_CACHE`): it would duplicate the
lake's, and it cannot hash an engine argument.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.errors import StageFailed
from flows.logs import run_logger
from schemas.loop import LoopConfig
from tasks.evaluation.evaluate import EVAL_SPLIT, eval_hash, evaluate_model
from tasks.generation.generate import LazyBackend, generate_for_stage, generation_chunks, generation_hash, model_id_for
from tasks.lake.lock import iteration_lock
from tasks.lake.sql import connect, refresh_views_file
from tasks.lake.store import Lake
from tasks.prompts.sources import split_prompts
from tasks.runtime.progress import progress_bar
from tasks.runtime.runners import group_units, run_shards
from tasks.scoring.score import PRLScorer, load_candidates, prompt_chunks, rule_scorers, score_candidates
from tasks.selection.select import policy_hash, select
from tasks.training.finetune import finetune_on_selection



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
    seconds: dict[str, float] = field(default_factory=dict)
    evals: dict[str, dict[str, float]] = field(default_factory=dict)


def _log() -> Any:
    return run_logger("flywheel.iteration")


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


def train_prompts(lake: Lake, config: LoopConfig, iteration: int) -> list[dict]:
    """This round's train prompts: all of them, or a rotating slice of `prompts_per_round`."""
    rows = split_prompts(lake, "train")
    per_round = config.generation.prompts_per_round
    if per_round is None or per_round >= len(rows):
        return rows
    start = (iteration * per_round) % len(rows)
    return (rows + rows)[start:start + per_round]


def eval_prompts(lake: Lake) -> list[dict]:
    """Every eval-split prompt."""
    return split_prompts(lake, EVAL_SPLIT)


def round_sampling_hash(config: LoopConfig) -> str:
    """The generation hash of the round's train candidates (with model_id, it names a round's set)."""
    g = config.generation
    return generation_hash(g.sampling, g.format, g.step_separator)


def make_scorers(config: LoopConfig) -> list[Any]:
    """The rule scorers every candidate gets."""
    return rule_scorers(config.scoring)


def _evaluated(lake: Lake, run_id: str, model_id: str, iteration: int, config_hash: str) -> dict[str, float] | None:
    rows = connect(lake).execute(
        "SELECT metric, k, scorer, value FROM evals WHERE run_id = ? AND model_id = ? AND iteration = ? "
        "AND eval_hash = ?", [run_id, model_id, iteration, config_hash]).fetchall()
    if not rows:
        return None
    return {f"{m}@{k}" + (f"[{s}]" if s else ""): v for m, k, s, v in rows}


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(config: LoopConfig, engine: LazyBackend, model: ModelRef, iteration: int) -> dict[str, float]:
    """Evaluate a model on the eval split, unless this run already has its evals rows."""
    lake = Lake(config.lake)
    scorers = make_scorers(config)
    prompts = eval_prompts(lake)
    e = config.evaluation
    config_hash = eval_hash(e.sampling, config.generation.format, [p["prompt_id"] for p in prompts], scorers,
                            e.rm_scorers, step_separator=config.generation.step_separator)
    done = _evaluated(lake, config.run_id, model.model_id, iteration, config_hash)
    if done is not None:
        _log().info("evaluate %s: already done", model.model_id)
        return done
    try:
        summary = evaluate_model(
            lake, engine, scorers, prompts, run_id=config.run_id, model_id=model.model_id,
            iteration=iteration, sampling=config.evaluation.sampling, fmt=config.generation.format,
            ks=config.evaluation.ks, benchmark=config.evaluation.benchmark,
            rm_scorers=config.evaluation.rm_scorers, chunk_size=config.generation.chunk_size,
            step_separator=config.generation.step_separator)
    finally:
        for scorer in scorers:
            scorer.close()
    v = summary.values
    _log().info("evaluate %s: pass@1 %.3f, pass@%d %.3f, greedy %.3f", model.model_id, v["pass@1"],
                config.evaluation.sampling.n, v.get(f"pass@{config.evaluation.sampling.n}", float("nan")),
                v["greedy@1"])
    return v


@task(name="generate-shard", cache_policy=NO_CACHE)
def generate_shard_task(config: LoopConfig, engine: LazyBackend, model: ModelRef, iteration: int,
                        prompts: list[dict]) -> dict:
    """Sample candidates for one shard of the round's train prompts (resuming).

    On a Dask or Ray worker `engine` is a copy: it starts its own engine and stops it at the end.
    """
    g = config.generation
    try:
        with progress_bar(f"generate iteration {iteration}", len(prompts), "prompt") as bar:
            report = generate_for_stage(
                Lake(config.lake), engine, prompts, model_id=model.model_id, iteration=iteration, stage=g,
                progress=lambda done, total: bar.to(min(len(prompts), done * g.chunk_size)))
    finally:
        if engine.is_copy:
            engine.close()
    return {"prompts": report.prompts, "written": report.candidates_written, "tokens": report.tokens,
            "chunks": report.chunks_total, "chunks_skipped": report.chunks_skipped}


def generate_stage(config: LoopConfig, engine: LazyBackend, model: ModelRef, iteration: int) -> dict:
    """Sample from the model on this round's train prompts, mapped over prompt shards."""
    started = time.perf_counter()
    g = config.generation
    chunks = generation_chunks(train_prompts(Lake(config.lake), config, iteration), g.chunk_size)
    shards = group_units(chunks, config.runner.shard_count)
    if config.runner.kind != "threads":
        engine.close()  # the workers start their own engines; free this one's memory first
    reports = run_shards(generate_shard_task, config.runner,
                         [{"config": config, "engine": engine, "model": model, "iteration": iteration,
                           "prompts": shard} for shard in shards])
    total = {key: sum(r[key] for r in reports) for key in reports[0]}
    _log().info("generate: %d prompts in %d shard(s), %d candidates written, %d/%d chunks already done, "
                "%.1f s", total["prompts"], len(shards), total["written"], total["chunks_skipped"],
                total["chunks"], time.perf_counter() - started)
    return {**total, "candidates": total["prompts"] * g.sampling.n, "shards": len(shards)}


def round_scorers(config: LoopConfig, iteration: int) -> list[Any]:
    """The scorers every candidate of a round gets, in order (PRL reads the verifier's rows)."""
    scorers = make_scorers(config)
    if config.scoring.prl_eta is not None:
        scorers.append(PRLScorer(Lake(config.lake), iteration, config.base_model, config.scoring.prl_eta,
                                 config.generation.format))
    return scorers


@task(name="score-shard", cache_policy=NO_CACHE)
def score_shard_task(config: LoopConfig, model: ModelRef, iteration: int, prompt_ids: list[str]) -> dict[str, dict]:
    """Run every rule scorer on the candidates of one shard of prompts (resuming)."""
    lake = Lake(config.lake)
    candidates = load_candidates(lake, iteration, model_id=model.model_id, prompt_split="train",
                                 sampling_hash=round_sampling_hash(config), prompt_ids=prompt_ids)
    out: dict[str, dict] = {}
    for scorer in round_scorers(config, iteration):
        try:
            report = score_candidates(lake, scorer, candidates, iteration, chunk_size=config.scoring.chunk_size)
        finally:
            scorer.close()
        out[scorer.name] = {"scored": report.scored, "skipped": report.skipped, "labels": report.labels}
    return out


def score_stage(config: LoopConfig, model: ModelRef, iteration: int) -> dict:
    """Score the model's candidates of this iteration, mapped over shards of whole prompt groups."""
    started = time.perf_counter()
    candidates = load_candidates(Lake(config.lake), iteration, model_id=model.model_id,
                                 prompt_split="train", sampling_hash=round_sampling_hash(config))
    chunks = [sorted({c["prompt_id"] for c in chunk}) for chunk in prompt_chunks(candidates, config.scoring.chunk_size)]
    shards = group_units(chunks, config.runner.shard_count)
    out: dict[str, dict] = {}
    for report in run_shards(score_shard_task, config.runner,
                             [{"config": config, "model": model, "iteration": iteration, "prompt_ids": shard}
                              for shard in shards]):
        for name, part in report.items():
            total = out.setdefault(name, {"scored": 0, "skipped": 0, "labels": {}})
            total["scored"] += part["scored"]
            total["skipped"] += part["skipped"]
            for label, count in part["labels"].items():
                total["labels"][label] = total["labels"].get(label, 0) + count
    for name, total in out.items():
        _log().info("score %s: %d scored, %d already scored in %d shard(s), labels %s, %.1f s", name,
                    total["scored"], total["skipped"], len(shards), json.dumps(total["labels"]),
                    time.perf_counter() - started)
    return out


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
    started = time.perf_counter()
    try:
        yield
    except Exception as error:  # noqa: BLE001 - named, logged and raised again below
        failure = StageFailed(result.iteration, name, error)
        _log().error("%s (after %.1f s)", failure, time.perf_counter() - started)
        raise failure from error
    result.seconds[name] = result.seconds.get(name, 0.0) + time.perf_counter() - started
    _log().info("iteration %d: stage %s done in %.1f s", result.iteration, name, result.seconds[name])


@task(name="select", cache_policy=NO_CACHE)
def select_task(round_: Round) -> dict:
    """Apply the selection policy to the model's scored candidates of this iteration."""
    config = round_.config
    result = select(round_.lake, round_.iteration, config.selection, model_id=round_.model_in.model_id,
                    sampling_hash=round_.sampling_hash, reuse=True)
    _log().info("select %s: kept %d of %d candidates (%d of %d prompts)", config.selection.name,
                result.kept, result.candidates, result.prompts_kept, result.prompts)
    return {"kept": result.kept, "candidates": result.candidates, "policy_hash": result.policy_hash}


@task(name="finetune", cache_policy=NO_CACHE)
def finetune_task(round_: Round) -> ModelRef:
    """Finetune M_{k+1} on the kept samples (reused when the same inputs already made it)."""
    config, model = round_.config, round_.model_in
    start = model if config.finetune.start_from == "previous" else model_for_round(config, 0)
    path, model_id, reused = finetune_on_selection(
        round_.lake, iteration=round_.iteration, source_model_id=model.model_id,
        policy_hash=policy_hash(config.selection), start_path=start.path, start_model_id=start.model_id,
        output=round_model_dir(config, round_.iteration + 1), stage=config.finetune,
        fmt=config.generation.format, sampling_hash=round_.sampling_hash, run_id=f"run {config.run_id}")
    _log().info("finetune: %s %s", "reused" if reused else "trained", model_id)
    return ModelRef(str(path), model_id)


def run_iteration(config: LoopConfig, iteration: int, engines: Engines | None = None) -> RoundResult:
    """Round `iteration` (tasks of the current flow run), holding the lake's lock for it. With
    `engines` (a run's `Engines`), the engine over the new model stays up for the next round;
    without, the round stops its engines itself."""
    if engines is None:
        with Engines(config) as own:
            return run_iteration(config, iteration, own)
    try:
        with iteration_lock(config.lake, iteration):
            result = _run_round(Round.start(config, iteration), engines)
    except BaseException:
        engines.release()
        raise
    refresh_views_file(config.lake)
    return result


def _run_round(round_: Round, engines: Engines) -> RoundResult:
    """evaluate M_k, generate, score, select, finetune, evaluate M_{k+1}."""
    config, iteration, model = round_.config, round_.iteration, round_.model_in
    result = RoundResult(iteration=iteration, model_in=model, model_out=model)
    with timed_stage(result, "evaluate"):
        result.evals[model.model_id] = evaluate_task(config, engines.over(model), model, iteration)
    with timed_stage(result, "generate"):
        generated = generate_stage(config, engines.over(model), model, iteration)
    result.prompts, result.candidates = generated["prompts"], generated["candidates"]
    engines.release()  # free the engine's memory before training
    with timed_stage(result, "score"):
        score_stage(config, model, iteration)
    with timed_stage(result, "select"):
        result.kept = select_task(round_)["kept"]
    with timed_stage(result, "finetune"):
        result.model_out = finetune_task(round_)
    new_model = result.model_out
    with timed_stage(result, "evaluate_next"):
        result.evals[new_model.model_id] = evaluate_task(config, engines.over(new_model), new_model,
                                                         iteration + 1)
    return result


@flow(name="flywheel-iteration", log_prints=True)
def iteration_flow(config: LoopConfig, iteration: int = 0) -> dict:
    """One round of the loop by hand: evaluate M_k, generate, score, select, finetune, evaluate M_{k+1}."""
    return summarise_round(run_iteration(config, iteration))


def summarise_round(result: RoundResult) -> dict:
    """A JSON-ready summary of a round."""
    return {
        "iteration": result.iteration, "model_in": result.model_in.model_id,
        "model_out": result.model_out.model_id, "prompts": result.prompts,
        "candidates": result.candidates, "kept": result.kept,
        "seconds": {k: round(v, 2) for k, v in result.seconds.items()},
        "pass@1_in": result.evals[result.model_in.model_id].get("pass@1"),
        "pass@1_out": result.evals[result.model_out.model_id].get("pass@1"),
    }

