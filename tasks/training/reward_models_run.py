"""Training and measuring reward models from a policy's own samples, stage by stage: sample train
and held-out candidates, rule-score them, label train steps Math-Shepherd style (rollouts through
the same engine), train the ORM and the PRM, score held-out candidates with them and PRL, measure
(AUROC, best-of-n, step AUROC) and write the report. `flows/reward_models.py` composes these."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.reward_models import RewardModelsConfig
from tasks.evaluation.evaluate import EVAL_SPLIT, score_map
from tasks.evaluation.metrics import metric_rows
from tasks.evaluation.report import reports_dir_for
from tasks.evaluation.rm_eval import (answer_correct_with_wrong_step, best_of_n_values, outcome_auroc, step_auroc,
                                     summarise, within_prompt_auroc)
from tasks.generation.generate import (LazyBackend, check_model_folder, generate_candidates,
                                       generation_hash, model_id_for)
from tasks.lake.ids import content_hash
from tasks.lake.store import Lake
from tasks.prompts.sources import split_prompts
from tasks.runtime.logs import run_logger
from tasks.scoring.math_shepherd import MathShepherdScorer
from tasks.scoring.reward_model import ORM_KIND, PRM_KIND, ORMScorer, PRMScorer
from tasks.scoring.score import PRLScorer, StepVerifierScorer, VerifierScorer, load_candidates, score_candidates
from tasks.training.reward_train import (labelling_subset, prompt_texts, reward_model_examples, rm_train_config,
                                         train_reward_model)

BENCHMARK = "demo-arith"


@dataclass(frozen=True)
class RewardModelsRun:
    """What every stage of a reward-model run needs, built once: the config, the lake, the policy
    folder and its id (the base model unless `policy_model` is set)."""

    config: RewardModelsConfig
    lake: Lake
    policy_path: str
    policy_id: str

    @classmethod
    def start(cls, config: RewardModelsConfig) -> "RewardModelsRun":
        """The run's context; a policy or base folder that is not a model is an error."""
        policy_path = str(check_model_folder(config.policy_model or config.base_model))
        check_model_folder(config.base_model)
        return cls(config, Lake(config.lake), policy_path, model_id_for(policy_path))

    def candidates(self, split: str) -> list[dict]:
        """The policy's candidates of a split under the run's sampling for that split."""
        sampling = self.config.train_sampling if split == "train" else self.config.eval_sampling
        return load_candidates(self.lake, self.config.iteration, model_id=self.policy_id, prompt_split=split,
                               sampling_hash=generation_hash(sampling, self.config.format, "\n", self.config.engine))


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


def sample_and_label(run: RewardModelsRun) -> dict:
    """Generate train and eval candidates, rule-score them, and label steps Math-Shepherd style."""
    config, lake, it, policy_id = run.config, run.lake, run.config.iteration, run.policy_id
    engine = LazyBackend(run.policy_path, config.engine)
    ms = config.math_shepherd
    try:
        for split, sampling, limit in (("train", config.train_sampling, config.train_prompts),
                                       (EVAL_SPLIT, config.eval_sampling, None)):
            report = generate_candidates(lake, engine, split_prompts(lake, split, limit), model_id=policy_id,
                                         iteration=it, sampling=sampling, fmt=config.format,
                                         chunk_size=config.chunk_size)
            _log().info("generate %s: %d prompts, %d written, %.1f s", split, report.prompts,
                        report.candidates_written, report.seconds)
        train = run.candidates("train")
        held_out = run.candidates(EVAL_SPLIT)
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


def train_reward_models(run: RewardModelsRun) -> dict[str, dict]:
    """Train (or reuse) the ORM on verified train candidates and the PRM on Math-Shepherd labels."""
    config, lake, it, policy_id = run.config, run.lake, run.config.iteration, run.policy_id
    train = run.candidates("train")
    prompts = prompt_texts(config.format, config.base_model, train)
    verdicts = score_map(lake, it, "verifier")
    correct = {cid: row["label"] == "correct" for cid, row in verdicts.items()
               if row["label"] in ("correct", "incorrect")}
    labels = {cid: row["step_scores"] for cid, row in score_map(lake, it, "math_shepherd").items()}
    out_dir = Path(config.models_dir) / config.run_id
    results = {}
    for name, kind, examples, stage in (
            ("orm", ORM_KIND, reward_model_examples(ORM_KIND, config.orm, train, prompts, outcomes=correct), config.orm),
            ("prm", PRM_KIND, reward_model_examples(PRM_KIND, config.prm, train, prompts, step_labels=labels),
             config.prm)):
        result = train_reward_model(config.base_model, kind, examples, rm_train_config(stage), out_dir / name,
                                    prefix=name, extra_card={"policy_id": policy_id, "run_id": config.run_id})
        _log().info("%s: %s %s on %d examples, %d steps, loss %.4f, %.1f s", name,
                    "reused" if result.reused else "trained", result.model_id, result.examples, result.steps,
                    result.mean_loss_last_10pct, result.seconds)
        results[name] = result.__dict__
    return results


def score_held_out(run: RewardModelsRun, models: dict[str, dict]) -> None:
    """Score the held-out candidates with the ORM, the PRM and PRL (reference: the base model)."""
    config, lake = run.config, run.lake
    held_out = run.candidates(EVAL_SPLIT)
    for scorer in (ORMScorer(models["orm"]["path"], prompt_format=config.format),
                   PRMScorer(models["prm"]["path"], prompt_format=config.format),
                   PRLScorer(lake, config.iteration, config.base_model, config.prl_eta, config.format)):
        _run_scorer(lake, scorer, held_out, config.iteration)


def measure(run: RewardModelsRun) -> dict:
    """The figures of the report, from the lake."""
    lake, it, policy_id = run.lake, run.config.iteration, run.policy_id
    held_out = run.candidates(EVAL_SPLIT)
    train = run.candidates("train")
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
        "within_prompt_auroc": {"orm": within_prompt_auroc(held_out, verifier, orm),
                                "prm_min": within_prompt_auroc(held_out, verifier, prm, "min")},
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
             "Within prompts (mean AUROC over the prompts with both outcomes; 0.5 is a random ranking of "
             "a prompt's samples): ORM **{}**, PRM-min **{}** ({} prompts).".format(
                 fmt(figures["within_prompt_auroc"]["orm"]["auroc"]),
                 fmt(figures["within_prompt_auroc"]["prm_min"]["auroc"]),
                 figures["within_prompt_auroc"]["orm"]["prompts"]), "",
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


def write_results(run: RewardModelsRun, counts: dict, models: dict[str, dict], figures: dict) -> dict:
    """Write the rm@n rows to evals and data/reports/<run>/reward_models.{md,json}; the JSON's content."""
    config = run.config
    values = figures.pop("_metric_values")
    config_hash = content_hash("reward-models-eval", config.model_dump(mode="json"),
                               {name: model["model_id"] for name, model in models.items()})
    run.lake.write("evals", metric_rows(values, config.run_id, config.iteration, run.policy_id, EVAL_SPLIT,
                                        BENCHMARK, config_hash),
                   iteration=config.iteration, shard=f"evals-{config.run_id}-{run.policy_id}-reward-models")
    out_dir = reports_dir_for(config.lake) / config.run_id
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {"config": config.model_dump(), "counts": counts, "models": models, "figures": figures,
              "report": str(out_dir / "reward_models.md")}
    (out_dir / "reward_models.json").write_text(json.dumps(
        {k: v for k, v in result.items() if k != "report"}, indent=2, default=str))
    (out_dir / "reward_models.md").write_text(render_markdown(config, figures, models))
    return result
