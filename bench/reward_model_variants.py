"""Which trained reward model ranks a round's own samples best? Variants side by side on one round.

For each chosen round of a finished loop run (its config, lake and rounds.json; default the demo's
Math-Shepherd arm, `flywheel demo --all-arms`), the round's train prompts are split in two halves by a hash of their id. Every variant trains
on the first half's candidates, with the same number of steps, and is measured on the second half:
  - within-prompt AUROC: the mean over prompts with both outcomes of the AUROC of the model's score
    (ORM: its value; PRM: its lowest step) against the verifier's outcome;
  - step AUROC on answer-correct candidates against the demo's step verifier (PRM only).
Beside them, the round's own Math-Shepherd labels on the same held-out candidates (the signal the
PRM learns from, without a model). Under each PRM: the purity (share with every step right) of the
held-out answer-correct samples whose every label is above 0 (the demo's selection), and of as
many ranked first by the PRM's lowest step. Only final answers and Math-Shepherd labels train anything; the
step verifier only measures.

Variants: ORM pointwise (balanced BCE) vs pairwise (Bradley-Terry within a prompt); PRM soft vs
hard labels; each from the round's policy, and for rounds after the first also from the base model.
With --rollouts K, the held-out answer-correct candidates are also labelled again with K rollouts
per step by the round's policy (its vLLM engine; the loop's first rollouts are among them, sample i
being seeded seed + i): more rollouts on fewer samples.

Usage: python bench/reward_model_variants.py [--config configs/demo-mc.yaml] [--rounds 0 2]
                                             [--max-steps 150] [--work /tmp/rm-variants] [--rollouts 16]
Prints one row per round and variant; nothing is written to the lake.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from schemas.config import load_config  # noqa: E402
from schemas.loop import LoopConfig  # noqa: E402
from schemas.reward_models import RMTrainStage  # noqa: E402
from tasks.evaluation.report import reports_dir_for  # noqa: E402
from tasks.evaluation.rm_eval import step_auroc, within_prompt_auroc  # noqa: E402
from tasks.lake.sql import connect  # noqa: E402
from tasks.lake.store import Lake  # noqa: E402
from tasks.rounds.context import model_for_round  # noqa: E402
from tasks.scoring.reward_model import ORM_KIND, PRM_KIND, ORMScorer, PRMScorer  # noqa: E402
from tasks.training.reward_train import (RMTrainConfig, prompt_texts, reward_model_examples,  # noqa: E402
                                         train_reward_model)


def round_data(lake: Lake, iteration: int, model_id: str) -> tuple[list[dict], dict[str, dict[str, dict]]]:
    """The round's train candidates (with their problem) and its verifier, step-verifier and
    Math-Shepherd rows by candidate id."""
    con = connect(lake)
    candidates = con.execute(
        """SELECT DISTINCT c.candidate_id, c.prompt_id, c.iteration, c.text, p.problem, p.reference_answer
           FROM candidates c JOIN (SELECT DISTINCT prompt_id, problem, reference_answer, split FROM prompts) p
             USING (prompt_id)
           WHERE c.iteration = ? AND c.model_id = ? AND p.split = 'train'
           ORDER BY c.candidate_id""", [iteration, model_id]).to_arrow_table().to_pylist()
    scores: dict[str, dict[str, dict]] = {}
    for cid, scorer, value, label, steps in con.execute(
            """SELECT s.candidate_id, s.scorer, s.value, s.label, s.step_scores FROM scores s
               JOIN (SELECT DISTINCT candidate_id FROM candidates WHERE iteration = ? AND model_id = ?) c
                 USING (candidate_id)
               WHERE s.iteration = ? AND s.scorer IN ('verifier', 'step_verifier', 'math_shepherd')""",
            [iteration, model_id, iteration]).fetchall():
        scores.setdefault(scorer, {})[cid] = {"value": value, "label": label, "step_scores": steps}
    return candidates, scores


def half(prompt_id: str) -> int:
    """0 (train) or 1 (held out), by a hash of the prompt id."""
    return hashlib.sha256(prompt_id.encode()).digest()[0] % 2


def measure(held_out: list[dict], scores: dict[str, dict[str, dict]], rows: dict[str, dict], kind: str,
            reps: int = 200) -> dict:
    """Within-prompt AUROC against the verifier and step AUROC on answer-correct candidates, each
    with a 95% bootstrap interval over held-out prompts (`reps` resamples)."""
    verifier, truth = scores.get("verifier", {}), scores.get("step_verifier", {})
    correct = {cid for cid, r in verifier.items() if r["label"] == "correct"}

    def figures(cands: list[dict]) -> tuple[dict, dict]:
        within = within_prompt_auroc(cands, verifier, rows, None if kind == ORM_KIND else "min")
        steps = step_auroc(cands, truth, rows, only=correct) if kind == PRM_KIND else {"auroc": None, "candidates": 0}
        return within, steps

    within, steps = figures(held_out)
    groups: dict[str, list[dict]] = {}
    for c in held_out:
        groups.setdefault(c["prompt_id"], []).append(c)
    rng, names, draws = random.Random(0), sorted(groups), ([], [])
    for _ in range(reps):
        sample = [{**c, "prompt_id": f"{p}#{j}"} for j, p in enumerate(rng.choices(names, k=len(names)))
                  for c in groups[p]]
        w, st = figures(sample)
        for draw, value in zip(draws, (w["auroc"], st["auroc"])):
            if value is not None:
                draw.append(value)
    ci = [(sorted(d)[int(0.025 * len(d))], sorted(d)[int(0.975 * len(d)) - 1]) if d else None for d in draws]
    return {"within": within["auroc"], "within_ci": ci[0], "prompts": within["prompts"], "step": steps["auroc"],
            "step_ci": ci[1], "step_candidates": steps["candidates"]}


def relabel(config: LoopConfig, policy_path: str, policy_id: str, held_out: list[dict],
            scores: dict[str, dict[str, dict]], rollouts: int) -> dict[str, dict]:
    """Math-Shepherd labels of the held-out answer-correct candidates with `rollouts` per step, from
    the round's policy on the run's engine, with the run's other Math-Shepherd settings."""
    from tasks.generation.generate import start_backend
    from tasks.scoring.math_shepherd import MathShepherdScorer

    entry = next(r for r in config.scoring.reward_models if r.kind == "math_shepherd")
    correct = [c for c in held_out if (scores["verifier"].get(c["candidate_id"]) or {}).get("label") == "correct"]
    sampling = config.generation.sampling.model_copy(update={
        "n": rollouts, "temperature": entry.temperature, "max_tokens": entry.max_tokens, "seed": entry.seed})
    backend = start_backend(policy_path, config.generation.engine)
    scorer = MathShepherdScorer(backend, sampling, model_id=policy_id, prompt_format=config.generation.format,
                                step_separator=config.generation.step_separator)
    try:
        return {r["candidate_id"]: r for r in scorer.score(correct)}
    finally:
        scorer.close()
        backend.close()


def purity_at_label_yield(held_out: list[dict], scores: dict[str, dict[str, dict]], rows: dict[str, dict]) -> str:
    """Of the held-out answer-correct candidates with Math-Shepherd labels: the share with every step
    right among those whose every label is above 0 (the demo's selection), and among as many
    ranked first by `rows`' lowest step; as text."""
    verifier, truth, labels = scores["verifier"], scores["step_verifier"], scores.get("math_shepherd", {})
    ids = [c["candidate_id"] for c in held_out
           if verifier[c["candidate_id"]]["label"] == "correct" and labels.get(c["candidate_id"])
           and (rows.get(c["candidate_id"]) or {}).get("step_scores")]
    kept = [i for i in ids if all(x > 0 for x in labels[i]["step_scores"])]
    ranked = sorted(ids, key=lambda i: (-min(rows[i]["step_scores"]), i))[:len(kept)]

    def pure(chosen: list[str]) -> float:
        return sum(truth[i]["value"] == 1.0 for i in chosen) / len(chosen) if chosen else float("nan")

    return (f"purity of {len(kept)} of {len(ids)} answer-correct: labels > 0 {pure(kept):.3f}, "
            f"top by it {pure(ranked):.3f}")


def fmt(x: float | None, ci: tuple[float, float] | None = None) -> str:
    """A figure with its interval, or – ."""
    if x is None:
        return "  –  "
    return f"{x:.3f}" + (f" [{ci[0]:.3f}–{ci[1]:.3f}]" if ci else "")


def row(it: int, name: str, examples: str, q: dict, seconds: str) -> str:
    """One printed line of the table."""
    return (f"{it:5d} | {name:26s} | {examples:>14} | {fmt(q['within'], q['within_ci'])} ({q['prompts']:4d}) | "
            f"{fmt(q['step'], q['step_ci'])} ({q['step_candidates']:4d}) | {seconds}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/demo-mc.yaml")
    parser.add_argument("--rounds", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--max-steps", type=int, default=150)
    parser.add_argument("--work", default="/tmp/rm-variants")
    parser.add_argument("--rollouts", type=int, nargs="*", default=[], help="relabel with K rollouts per step")
    parser.add_argument("--skip-variants", action="store_true", help="only the Math-Shepherd rows")
    args = parser.parse_args()
    config = load_config(args.config, LoopConfig)
    lake = Lake(config.lake)
    summary = json.loads((reports_dir_for(config.lake) / config.run_id / "rounds.json").read_text())
    model_in = {r["iteration"]: r["model_in"] for r in summary["rounds"]}
    base = model_for_round(config, 0)
    entry = next(r for r in config.scoring.reward_models if r.kind == "math_shepherd")
    print(f"run {config.run_id}; {args.max_steps} steps of 32 sequences per variant; held out: half the prompts")
    print("round | variant (rollouts)         | train examples | within-prompt AUROC [95% CI] (prompts) | "
          "step AUROC, answer-correct [95% CI] (candidates) | seconds")
    for it in args.rounds:
        policy = model_for_round(config, it)
        assert policy.model_id == model_in[it], f"round {it}'s model is not the one in rounds.json"
        candidates, scores = round_data(lake, it, policy.model_id)
        train = [c for c in candidates if half(c["prompt_id"]) == 0]
        held_out = [c for c in candidates if half(c["prompt_id"]) == 1]
        prompts = prompt_texts(config.generation.format, config.base_model, candidates)
        outcomes = {cid: r["label"] == "correct" for cid, r in scores["verifier"].items()
                    if r["label"] in ("correct", "incorrect")}
        labels = {cid: r["step_scores"] for cid, r in scores.get("math_shepherd", {}).items() if r["step_scores"]}
        q = measure(held_out, scores, scores.get("math_shepherd", {}), PRM_KIND)
        print(row(it, f"Math-Shepherd labels ({entry.rollouts})", "–", q, "–"), flush=True)
        for k in args.rollouts:
            started = time.perf_counter()
            q = measure(held_out, scores, relabel(config, policy.path, policy.model_id, held_out, scores, k), PRM_KIND)
            print(row(it, f"Math-Shepherd labels ({k})", "–", q, f"{time.perf_counter() - started:.0f}"), flush=True)
        variants = [(ORM_KIND, "pointwise", "soft", "policy"), (ORM_KIND, "pairwise", "soft", "policy"),
                    (PRM_KIND, "pointwise", "soft", "policy"), (PRM_KIND, "pointwise", "hard", "policy")]
        if it > 0:  # from the base model too, where the policy is not the base model
            variants += [(ORM_KIND, "pairwise", "soft", "base"), (PRM_KIND, "pointwise", "soft", "base")]
        if args.skip_variants:
            variants = []
        for kind, objective, label_kind, start in variants:
            stage = RMTrainStage(objective=objective, labels=label_kind)
            examples = reward_model_examples(kind, stage, train, prompts, outcomes=outcomes, step_labels=labels)
            settings = RMTrainConfig(max_steps=args.max_steps, batch_size=32, learning_rate=1e-3, warmup_steps=10,
                                     objective=objective)
            start_model = policy if start == "policy" else base
            name = f"{'orm' if kind == ORM_KIND else 'prm'}-{objective if kind == ORM_KIND else label_kind}-{start}"
            started = time.perf_counter()
            result = train_reward_model(start_model.path, kind, examples, settings,
                                        Path(args.work) / config.run_id / f"iter-{it}-{name}", prefix=name)
            scorer = (ORMScorer if kind == ORM_KIND else PRMScorer)(result.path, prompt_format=config.generation.format)
            rows = {r["candidate_id"]: r for r in scorer.score(held_out)}
            q = measure(held_out, scores, rows, kind)
            print(row(it, name, str(len(examples)), q, f"{time.perf_counter() - started:.0f}"), flush=True)
            if kind == PRM_KIND:
                print(f"{'':5s} | {'':26s} | {purity_at_label_yield(held_out, scores, rows)}", flush=True)


if __name__ == "__main__":
    main()
