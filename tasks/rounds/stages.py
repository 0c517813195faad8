"""Each stage of a round as a plain function over the round's context; flows wrap them in Prefect
tasks and compose them. A stage whose output the lake already holds is skipped (the lake is the
cache): evaluation finds its evals rows, generation and scoring their chunks, selection its
policy's rows, finetuning its model id."""
from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from schemas import table_spec
from tasks.evaluation.evaluate import eval_hash, evaluate_model
from tasks.generation.generate import LazyBackend, generate_for_stage, model_id_for
from tasks.lake.ids import content_hash
from tasks.lake.sql import connect
from tasks.lake.store import Lake
from tasks.rounds.context import ModelRef, Round, model_for_round, round_model_dir
from tasks.runtime.logs import run_logger
from tasks.runtime.progress import progress_bar
from tasks.scoring.judge import judge_from_settings
from tasks.scoring.judge_stage import judge_candidates
from tasks.scoring.math_shepherd import label_lazily
from tasks.scoring.reward_model import ORM_KIND, PRM_KIND
from tasks.scoring.score import load_candidates, prompt_chunks, score_candidates
from tasks.selection.select import policy_hash, select
from tasks.training.finetune import finetune_on_selection
from tasks.training.reward_train import (labelling_subset, prompt_texts, reward_model_examples, rm_train_config,
                                         train_reward_model)


def _log() -> Any:
    return run_logger("flywheel.iteration")


def evaluated(lake: Lake, run_id: str, model_id: str, iteration: int, config_hash: str) -> dict[str, float] | None:
    """The headline metrics this run already wrote for the model under this eval config, or None."""
    rows = connect(lake).execute(
        "SELECT metric, k, scorer, value FROM evals WHERE run_id = ? AND model_id = ? AND iteration = ? "
        "AND eval_hash = ?", [run_id, model_id, iteration, config_hash]).fetchall()
    if not rows:
        return None
    return {f"{m}@{k}" + (f"[{s}]" if s else ""): v for m, k, s, v in rows}


def copy_evaluation(lake: Lake, run_id: str, model_id: str, iteration: int, config_hash: str) -> str | None:
    """Copy another run's evals rows of the same model, iteration and eval config under `run_id`
    (same candidates, same scores, same seeds: the rows a new evaluation would write), so arms that
    start from one base model share its evaluation; returns the run copied from, or None."""
    columns = ", ".join(table_spec("evals").columns)
    rows = connect(lake).execute(
        f"SELECT {columns} FROM evals WHERE model_id = ? AND iteration = ? AND eval_hash = ? AND run_id = "
        "(SELECT min(run_id) FROM evals WHERE model_id = ? AND iteration = ? AND eval_hash = ?)",
        [model_id, iteration, config_hash, model_id, iteration, config_hash]).to_arrow_table().to_pylist()
    if not rows:
        return None
    donor = rows[0]["run_id"]
    copied = [{**row, "run_id": run_id} for row in rows]
    lake.write("evals", copied, iteration=iteration, shard=f"evals-{run_id}-{model_id}-{config_hash}")
    return donor


def evaluate_in_round(round_: Round, engine: LazyBackend, model: ModelRef, iteration: int) -> dict[str, float]:
    """Evaluate `model` (as M_iteration) on the eval split, unless the run already has its rows."""
    config, lake = round_.config, round_.lake
    scorers = round_.rule_scorers()
    prompts = round_.eval_prompts()
    e, g = config.evaluation, config.generation
    base = round_.base()
    config_hash = eval_hash(e.sampling, g.format, [p["prompt_id"] for p in prompts], scorers, e.rm_scorers,
                            step_separator=g.step_separator,
                            reference_id=base and base.model_id, engine=g.engine)
    done = evaluated(lake, config.run_id, model.model_id, iteration, config_hash)
    if done is not None:
        _log().info("evaluate %s: already done", model.model_id)
        return done
    donor = copy_evaluation(lake, config.run_id, model.model_id, iteration, config_hash)
    if donor is not None:
        _log().info("evaluate %s: the same evaluation of run %s, copied", model.model_id, donor)
        return evaluated(lake, config.run_id, model.model_id, iteration, config_hash)
    try:
        summary = evaluate_model(lake, engine, scorers, prompts, run_id=config.run_id, model_id=model.model_id,
                                 iteration=iteration, stage=e, generation=g,
                                 reference=base and (base.path, base.model_id))
    finally:
        for scorer in scorers:
            scorer.close()
    v = summary.values
    _log().info("evaluate %s: pass@1 %.3f, pass@%d %.3f, greedy %.3f", model.model_id, v["pass@1"],
                e.sampling.n, v.get(f"pass@{e.sampling.n}", float("nan")), v["greedy@1"])
    return v


def generate_shard(round_: Round, engine: LazyBackend, prompts: list[dict]) -> dict:
    """Sample candidates from the round's model for one shard of its train prompts (resuming).

    On a Dask or Ray worker `engine` is a copy: it starts its own engine and stops it at the end.
    """
    g = round_.config.generation
    try:
        with progress_bar(f"generate iteration {round_.iteration}", len(prompts), "prompt") as bar:
            report = generate_for_stage(
                round_.lake, engine, prompts, model_id=round_.model_in.model_id, iteration=round_.iteration,
                stage=g, progress=lambda done, total: bar.to(min(len(prompts), done * g.chunk_size)))
    finally:
        if engine.is_copy:
            engine.close()
    return {"prompts": report.prompts, "written": report.candidates_written, "tokens": report.tokens,
            "chunks": report.chunks_total, "chunks_skipped": report.chunks_skipped}


def round_candidates(round_: Round, prompt_ids: list[str] | None = None) -> list[dict]:
    """The round's train candidates from its start model (of some prompts, or all)."""
    return load_candidates(round_.lake, round_.iteration, model_id=round_.model_in.model_id,
                           prompt_split="train", sampling_hash=round_.sampling_hash, prompt_ids=prompt_ids)


def scoring_units(round_: Round) -> list[list[str]]:
    """The round's train prompt ids in scoring chunks of whole prompt groups."""
    return [sorted({c["prompt_id"] for c in chunk})
            for chunk in prompt_chunks(round_candidates(round_), round_.config.scoring.chunk_size)]


def score_shard(round_: Round, prompt_ids: list[str]) -> dict[str, dict]:
    """Run every scorer of the round on the candidates of one shard of prompts (resuming)."""
    candidates = round_candidates(round_, prompt_ids)
    out: dict[str, dict] = {}
    for scorer in round_.scorers():
        try:
            report = score_candidates(round_.lake, scorer, candidates, round_.iteration,
                                      chunk_size=round_.config.scoring.chunk_size)
        finally:
            scorer.close()
        out[scorer.name] = {"scored": report.scored, "skipped": report.skipped, "labels": report.labels}
    return out


def merge_score_reports(reports: Iterable[dict[str, dict]]) -> dict[str, dict]:
    """Per scorer, the shards' counts added up."""
    out: dict[str, dict] = {}
    for report in reports:
        for name, part in report.items():
            total = out.setdefault(name, {"scored": 0, "skipped": 0, "labels": {}})
            total["scored"] += part["scored"]
            total["skipped"] += part["skipped"]
            for label, count in part["labels"].items():
                total["labels"][label] = total["labels"].get(label, 0) + count
    return out


def select_in_round(round_: Round) -> dict:
    """Apply the run's selection policy to the round's scored candidates."""
    policy = round_.config.selection
    result = select(round_.lake, round_.iteration, policy, model_id=round_.model_in.model_id,
                    sampling_hash=round_.sampling_hash, reuse=True)
    _log().info("select %s: kept %d of %d candidates (%d of %d prompts)", policy.name,
                result.kept, result.candidates, result.prompts_kept, result.prompts)
    return {"kept": result.kept, "candidates": result.candidates, "policy_hash": result.policy_hash}


def finetune_in_round(round_: Round) -> ModelRef:
    """Finetune M_{k+1} on the round's kept samples (reused when the same inputs already made it)."""
    config, model = round_.config, round_.model_in
    base = model_for_round(config, 0)
    start = model if config.finetune.start_from == "previous" else base
    path, model_id, reused = finetune_on_selection(
        round_.lake, iteration=round_.iteration, source_model_id=model.model_id,
        policy_hash=policy_hash(config.selection), start_path=start.path, start_model_id=start.model_id,
        output=round_model_dir(config, round_.iteration + 1), stage=config.finetune,
        fmt=config.generation.format, sampling_hash=round_.sampling_hash, run_id=f"run {config.run_id}",
        step_separator=config.generation.step_separator, base_path=base.path, base_model_id=base.model_id)
    _log().info("finetune: %s %s", "reused" if reused else "trained", model_id)
    return ModelRef(str(path), model_id)


def verified_candidates(round_: Round) -> tuple[list[dict], dict[str, bool]]:
    """The round's train candidates, verifier-scored (resuming: the rows the score stage would
    write), and the verifier's outcome of those it could judge (True: answer-correct)."""
    candidates = round_candidates(round_)
    verifier = round_.rule_scorers()[0]
    try:
        score_candidates(round_.lake, verifier, candidates, round_.iteration,
                         chunk_size=round_.config.scoring.chunk_size)
    finally:
        verifier.close()
    return candidates, verifier_outcomes(round_.lake, round_.iteration, verifier.version)


def label_in_round(round_: Round, engine: LazyBackend) -> dict | None:
    """Math-Shepherd labels for the round's answer-correct candidates, rolled out by the round's
    own engine, lazily (`tasks.scoring.math_shepherd.label_lazily`); None when not configured."""
    made = round_.labeller(engine)
    if made is None:
        return None
    scorer, entry = made
    try:
        candidates, outcomes = verified_candidates(round_)
        correct = {cid for cid, ok in outcomes.items() if ok}
        report = label_lazily(round_.lake, scorer, candidates, correct, round_.iteration, entry.enough,
                              entry.above)
    finally:
        scorer.close()
    _log().info("math-shepherd: %d candidates labelled (%d already) in %d wave(s), %d rollouts; %d prompts "
                "reached %d candidates with every step above %g", report.labelled, report.already, report.waves,
                report.rollouts, report.prompts_enough, entry.enough, entry.above)
    return report.__dict__


def verifier_outcomes(lake: Lake, iteration: int, verifier_version: str) -> dict[str, bool]:
    """Candidate id -> answer-correct, for the iteration's candidates this verifier version found
    correct or incorrect (unparseable and timed-out ones are left out)."""
    rows = connect(lake).execute(
        "SELECT candidate_id, label = 'correct' FROM scores WHERE iteration = ? AND scorer = 'verifier' "
        "AND scorer_version = ? AND label IN ('correct', 'incorrect')", [iteration, verifier_version]).fetchall()
    return dict(rows)


def judge_in_round(round_: Round, engine: LazyBackend) -> dict | None:
    """Rank each prompt's candidates (answer-correct ones by default) with the configured pairwise
    judge's tournament, written as scores of the judge's name; None when not configured. The
    round's policy judges through `engine` unless the settings name another model folder."""
    settings = round_.judge()
    if settings is None:
        return None
    candidates, outcomes = verified_candidates(round_)
    if settings.candidates == "answer_correct":
        candidates = [c for c in candidates if outcomes.get(c["candidate_id"])]
    own = settings.model is None
    backend = engine if own else LazyBackend(settings.model, round_.config.generation.engine)
    try:
        judge_id = round_.model_in.model_id if own else model_id_for(settings.model)
        report = judge_candidates(round_.lake, judge_from_settings(settings, backend), candidates, round_.iteration,
                                  method=settings.method, votes_k=settings.votes, seed=settings.seed,
                                  judge_name=settings.name, judge_version=judge_id, scorer=settings.name)
    finally:
        if not own:
            backend.close()
    _log().info("judge %s: %d prompts (%d already ranked), %d comparisons, %d unparseable, %.1f s",
                settings.method, report.prompts, report.prompts_skipped, report.comparisons, report.unparseable,
                report.seconds)
    return report.__dict__


def train_reward_models_in_round(round_: Round) -> dict[str, dict]:
    """Train (or reuse) the round's `train:` reward models from its own data: the ORM on the
    verifier's labels (balanced, or pairs within a prompt), the PRM on Math-Shepherd labels (soft or
    hard); a `models` row each (parent: the start model, selection_hash: the training data's hash,
    metrics: kind and scorer), the candidates it trained on in its card (`example_keys`)."""
    config, lake, it = round_.config, round_.lake, round_.iteration
    candidates, outcomes = verified_candidates(round_)
    prompts = prompt_texts(config.generation.format, config.base_model, candidates)
    out = {}
    for entry in round_.trained_reward_models():
        settings = entry.train
        kind = ORM_KIND if entry.kind == "orm" else PRM_KIND
        try:
            if entry.kind == "orm":
                subset = labelling_subset([c for c in candidates if c["candidate_id"] in outcomes],
                                          settings.max_examples)
                examples = reward_model_examples(kind, settings, subset, prompts, outcomes=outcomes)
            else:
                labels = {cid: steps for cid, steps in connect(lake).execute(
                    "SELECT candidate_id, step_scores FROM scores WHERE iteration = ? AND scorer = ?",
                    [it, round_.math_shepherd().name]).fetchall()}
                subset = labelling_subset([c for c in candidates if labels.get(c["candidate_id"])],
                                          settings.max_examples)
                examples = reward_model_examples(kind, settings, subset, prompts, step_labels=labels)
        except ValueError as error:
            raise ValueError(f"round {it}: cannot train {entry.name}: {error}") from None
        start = round_.model_in if settings.start == "policy" else model_for_round(config, 0)
        result = train_reward_model(start.path, kind, examples, rm_train_config(settings),
                                    round_.reward_model_folder(entry), prefix=entry.name,
                                    step_separator=config.generation.step_separator,
                                    extra_card={"run_id": config.run_id, "iteration": it, "scorer": entry.name,
                                                "example_keys": sorted({e.key for e in examples})})
        data_hash = content_hash("examples", [(e.key, e.prompt, e.targets) for e in examples])
        if (result.model_id,) not in lake.existing_keys("models", it, ["model_id"]):
            lake.write("models", [{
                "model_id": result.model_id, "parent_id": start.model_id, "iteration": it, "path": result.path,
                "selection_hash": data_hash, "num_examples": result.examples, "train_steps": result.steps,
                "train_loss": result.mean_loss_last_10pct, "train_seconds": result.seconds,
                "created_at": datetime.now(timezone.utc).replace(microsecond=0),
                "metrics": json.dumps({"kind": entry.kind, "scorer": entry.name, "training_data_hash": data_hash}),
            }], iteration=it, shard=f"model-{result.model_id}")
        _log().info("%s: %s %s on %d examples, %d steps, loss %.4f", entry.name,
                    "reused" if result.reused else "trained", result.model_id, result.examples, result.steps,
                    result.mean_loss_last_10pct)
        out[entry.name] = {"model_id": result.model_id, "path": result.path, "reused": result.reused,
                          "examples": result.examples}
    return out

