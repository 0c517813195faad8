"""The reward-model flow: train an ORM and a step-level PRM from a policy's samples, and measure them.

    sample train + eval candidates (policy) ─ verifier, step verifier
      ─ Math-Shepherd step labels (rollouts through the same engine) ─ release the engine
      ─ train ORM (verified, balanced) and PRM (soft step labels)
      ─ score held-out candidates: ORM, PRM, PRL (reference = base model)
      ─ figures: ORM AUROC, best-of-n per method, step-level AUROC vs true step labels
      ─ data/reports/<run>/reward_models.{md,json} and rm@n rows in evals

Every stage resumes through the lake (candidates and scores by id) and the model folders (by the
hash of their inputs), so a rerun does only what is missing.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.logs import run_logger
from schemas.reward_models import RewardModelsConfig
from tasks.evaluation.evaluate import EVAL_SPLIT, score_map
from tasks.evaluation.metrics import metric_rows
from tasks.evaluation.rm_eval import answer_correct_with_wrong_step, best_of_n_values, outcome_auroc, step_auroc, summarise
from tasks.generation.generate import LazyBackend, check_model_folder, format_prompt, generate_candidates, generation_hash
from tasks.generation.generate import model_id_for
from tasks.lake.ids import content_hash
from tasks.lake.sql import connect, refresh_views_file
from tasks.evaluation.report import reports_dir_for
from tasks.lake.store import Lake
from tasks.prompts.sources import split_prompts
from tasks.scoring.math_shepherd import MathShepherdScorer
from tasks.scoring.reward_model import ORM_KIND, PRM_KIND, ORMScorer, PRMScorer
from tasks.scoring.score import PRLScorer, StepVerifierScorer, VerifierScorer, load_candidates, score_candidates
from tasks.training.reward_train import RMTrainConfig, balanced_orm_examples, prm_examples, train_reward_model

BENCHMARK = "demo-arith"


def _log() -> Any:
    return run_logger("flywheel.reward_models")


def _run_scorer(lake: Lake, scorer: Any, candidates: list[dict], iteration: int) -> dict:
    try:
        report = score_candidates(lake, scorer, candidates, iteration)
    finally:
        scorer.close()
    _log().info("score %s: %d scored, %d already scored in %.1f s", scorer.name, report.scored,
                report.skipped, report.seconds)
    return report.labels


def labelling_subset(candidates: list[dict], limit: int | None) -> list[dict]:
    """A deterministic subset of whole prompt groups, about `limit` candidates (hash order of prompts)."""
    if limit is None or limit >= len(candidates):
        return candidates
    by_prompt: dict[str, list[dict]] = {}
    for c in candidates:
        by_prompt.setdefault(c["prompt_id"], []).append(c)
    order = sorted(by_prompt, key=lambda p: hashlib.sha256(p.encode()).hexdigest())
    chosen: list[dict] = []
    for prompt_id in order:
        if len(chosen) >= limit:
            break
        chosen += by_prompt[prompt_id]
    return chosen


@task(name="sample-and-label", cache_policy=NO_CACHE)
def sample_and_label_task(config: RewardModelsConfig, policy_path: str, policy_id: str) -> dict:
    """Generate train and eval candidates, rule-score them, and label steps Math-Shepherd style."""
    lake, it = Lake(config.lake), config.iteration
    engine = LazyBackend(policy_path, config.engine)
    ms = config.math_shepherd
    try:
        for split, sampling, limit in (("train", config.train_sampling, config.train_prompts),
                                       (EVAL_SPLIT, config.eval_sampling, None)):
            report = generate_candidates(lake, engine, split_prompts(lake, split, limit), model_id=policy_id,
                                         iteration=it, sampling=sampling, fmt=config.format,
                                         chunk_size=config.chunk_size)
            _log().info("generate %s: %d prompts, %d written, %.1f s", split, report.prompts,
                        report.candidates_written, report.seconds)
        train = _candidates(config, policy_id, "train")
        held_out = _candidates(config, policy_id, EVAL_SPLIT)
        for scorer in (VerifierScorer(), StepVerifierScorer()):
            _run_scorer(lake, scorer, train + held_out, it)
        rollout = config.train_sampling.model_copy(update={
            "n": ms.rollouts, "temperature": ms.temperature, "max_tokens": ms.max_tokens, "seed": ms.seed})
        subset = labelling_subset(train, ms.max_candidates)
        scorer = MathShepherdScorer(engine, rollout, model_id=policy_id, prompt_format=config.format)
        started = time.perf_counter()
        _run_scorer(lake, scorer, subset, it)
        _log().info("math-shepherd: %d rollouts for %d candidates in %.1f s", scorer.rollouts, len(subset),
                    time.perf_counter() - started)
    finally:
        engine.close()  # release the engine before training
    return {"train": len(train), "eval": len(held_out), "labelled": len(subset)}


def _candidates(config: RewardModelsConfig, policy_id: str, split: str) -> list[dict]:
    sampling = config.train_sampling if split == "train" else config.eval_sampling
    return load_candidates(Lake(config.lake), config.iteration, model_id=policy_id, prompt_split=split,
                           sampling_hash=generation_hash(sampling, config.format, "\n"))


def _prompt_texts(config: RewardModelsConfig, candidates: list[dict]) -> dict[str, str]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(config.base_model) if config.format.kind == "chat" else None
    return {c["prompt_id"]: format_prompt(c["problem"], config.format, tokenizer) for c in candidates}


def _train_config(stage: Any) -> RMTrainConfig:
    return RMTrainConfig(epochs=stage.epochs, batch_size=stage.batch_size, learning_rate=stage.learning_rate,
                         warmup_steps=stage.warmup_steps, seed=stage.seed)


@task(name="train-reward-models", cache_policy=NO_CACHE)
def train_reward_models_task(config: RewardModelsConfig, policy_id: str) -> dict[str, dict]:
    """Train (or reuse) the ORM on verified train candidates and the PRM on Math-Shepherd labels."""
    lake, it = Lake(config.lake), config.iteration
    train = _candidates(config, policy_id, "train")
    prompts = _prompt_texts(config, train)
    verdicts = score_map(lake, it, "verifier")
    correct = {cid: row["label"] == "correct" for cid, row in verdicts.items()
               if row["label"] in ("correct", "incorrect")}
    labels = {cid: row["step_scores"] for cid, row in score_map(lake, it, "math_shepherd").items()}
    out_dir = Path(config.models_dir) / config.run_id
    results = {}
    for name, kind, examples, stage in (
            ("orm", ORM_KIND, balanced_orm_examples(train, correct, prompts, config.orm.seed), config.orm),
            ("prm", PRM_KIND, prm_examples(train, labels, prompts), config.prm)):
        result = train_reward_model(config.base_model, kind, examples, _train_config(stage), out_dir / name,
                                    prefix=name, extra_card={"policy_id": policy_id, "run_id": config.run_id})
        _log().info("%s: %s %s on %d examples, %d steps, loss %.4f, %.1f s", name,
                    "reused" if result.reused else "trained", result.model_id, result.examples, result.steps,
                    result.mean_loss_last_10pct, result.seconds)
        results[name] = result.__dict__
    return results


@task(name="score-held-out", cache_policy=NO_CACHE)
def score_held_out_task(config: RewardModelsConfig, policy_id: str, models: dict[str, dict]) -> None:
    """Score the held-out candidates with the ORM, the PRM and PRL (reference: the base model)."""
    lake = Lake(config.lake)
    held_out = _candidates(config, policy_id, EVAL_SPLIT)
    for scorer in (ORMScorer(models["orm"]["path"], prompt_format=config.format),
                   PRMScorer(models["prm"]["path"], prompt_format=config.format),
                   PRLScorer(lake, config.iteration, config.base_model, config.prl_eta, config.format)):
        _run_scorer(lake, scorer, held_out, config.iteration)


def measure(config: RewardModelsConfig, policy_id: str) -> dict:
    """The figures of the report, from the lake."""
    lake, it = Lake(config.lake), config.iteration
    held_out = _candidates(config, policy_id, EVAL_SPLIT)
    train = _candidates(config, policy_id, "train")
    verifier = score_map(lake, it, "verifier")
    truth = score_map(lake, it, "step_verifier")
    orm, prm, prl = score_map(lake, it, "orm"), score_map(lake, it, "prm"), score_map(lake, it, "prl")
    shepherd = score_map(lake, it, "math_shepherd")
    answer_correct = {c["candidate_id"] for c in held_out
                      if (verifier.get(c["candidate_id"]) or {}).get("label") == "correct"}
    values = best_of_n_values(held_out, verifier, {"orm": orm}, {"prm": prm}, truth)
    return {
        "policy_id": policy_id,
        "held_out_candidates": len(held_out),
        "orm_auroc": outcome_auroc(held_out, verifier, orm),
        "best_of_n": summarise(values),
        "step_auroc": {
            "prm": step_auroc(held_out, truth, prm),
            "prl": step_auroc(held_out, truth, prl),
            "prm_answer_correct_only": step_auroc(held_out, truth, prm, only=answer_correct),
            "prl_answer_correct_only": step_auroc(held_out, truth, prl, only=answer_correct),
            "math_shepherd_labels_train": step_auroc(train, truth, shepherd),
        },
        "answer_correct_with_wrong_step": answer_correct_with_wrong_step(held_out, verifier, truth),
        "_metric_values": values,
    }


def render_markdown(config: RewardModelsConfig, figures: dict, models: dict[str, dict]) -> str:
    """The report as markdown."""
    def fmt(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    bon = figures["best_of_n"]
    n = config.eval_sampling.n
    lines = [f"# Reward models: {config.run_id}", "",
             f"Policy `{figures['policy_id']}`; {figures['held_out_candidates']} held-out candidates "
             f"({n} per eval prompt, T={config.eval_sampling.temperature}).", "",
             "## Outcome reward model", "",
             f"AUROC against the verifier on held-out candidates: **{fmt(figures['orm_auroc']['auroc'])}** "
             f"({figures['orm_auroc']['candidates']} candidates, {figures['orm_auroc']['positives']} correct). "
             f"Trained on {models['orm']['examples']} balanced examples, {models['orm']['steps']} steps.", "",
             f"## Best-of-{n} accuracy on held-out prompts", "",
             "| method | accuracy | 95% CI |", "|---|---|---|"]
    rows = [("oracle (pass@n)", "pass"), ("random pick (expected, avg@n)", "avg"), ("majority vote", "maj"),
            ("ORM", "rm[orm]")] + [(f"PRM, {how}", f"rm[prm:{how}]") for how in ("min", "last", "product", "mean")]
    for label, key in rows:
        if key in bon:
            v = bon[key]
            lines.append(f"| {label} | {v['value']:.3f} | {v['ci'][0]:.3f}–{v['ci'][1]:.3f} |")
    lines += ["", "## Step-level AUROC against the process verifier's true step labels", "",
              "| step scores | AUROC | candidates | steps | wrong steps |", "|---|---|---|---|---|"]
    for name, v in figures["step_auroc"].items():
        lines.append(f"| {name} | {fmt(v['auroc'])} | {v['candidates']} | {v['steps']} | {v['wrong_steps']} |")
    wrong = figures["answer_correct_with_wrong_step"]
    lines += ["", f"Answer-correct held-out samples with a wrong step: {wrong['with_wrong_step']} of "
              f"{wrong['answer_correct']} ({fmt(wrong['share'])}).", ""]
    if config.policy_model in (None, config.base_model):
        lines += ["The policy is the reference model, so PRL's KL term is about zero and its step values "
                  "are the outcome advantage (which uses the reference answer); set `policy_model` to a "
                  "finetuned round's model to see the KL term at work.", ""]
    return "\n".join(lines)


@flow(name="flywheel-reward-models", log_prints=True)
def reward_models_flow(config: RewardModelsConfig) -> dict:
    """Train the ORM and PRM from the policy's samples and report how well they rank held-out samples."""
    lake = Lake(config.lake)
    policy_path = str(check_model_folder(config.policy_model or config.base_model))
    policy_id = model_id_for(policy_path)
    check_model_folder(config.base_model)
    counts = sample_and_label_task(config, policy_path, policy_id)
    models = train_reward_models_task(config, policy_id)
    score_held_out_task(config, policy_id, models)
    figures = measure(config, policy_id)
    values = figures.pop("_metric_values")
    config_hash = content_hash("reward-models-eval", config.model_dump(mode="json"),
                               {name: model["model_id"] for name, model in models.items()})
    lake.write("evals", metric_rows(values, config.run_id, config.iteration, policy_id, EVAL_SPLIT, BENCHMARK,
                                    config_hash),
               iteration=config.iteration, shard=f"evals-{config.run_id}-{policy_id}-reward-models")
    out_dir = reports_dir_for(config.lake) / config.run_id
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {"config": config.model_dump(), "counts": counts, "models": models, "figures": figures}
    (out_dir / "reward_models.json").write_text(json.dumps(result, indent=2, default=str))
    markdown = render_markdown(config, figures, models)
    (out_dir / "reward_models.md").write_text(markdown)
    print(f"reward-model report written to {out_dir / 'reward_models.md'}")
    refresh_views_file(config.lake)
    return result
