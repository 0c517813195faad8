"""Do rollouts see the wrong step behind a right answer? Math-Shepherd labels where a step went wrong.

Math-Shepherd (and a PRM trained on its labels, and PRL's values) rest on one premise: from a
prefix that ends in a wrong step the policy reaches the reference answer less often than from a
clean prefix. This measures the premise on one round of a finished run (a lake whose round has
`verifier`, `step_verifier` and `confidence` scores: any demo arm's round 0). The round's
answer-correct train candidates below a confidence cut (the right answers the policy drew unsure,
where a strict confidence threshold drops clean ones with the others; `--all`: every one) are
labelled again with K rollouts per step by the round's policy, through the run's engine. Per K:

  - at a candidate's first wrong step (the step verifier's), its label against the labels of the
    same step of the same prompt's clean candidates (every step right): the mean difference,
    per prompt, with a 95% bootstrap interval over prompts. The premise says clearly negative;
  - purity AUROC (clean against behind a wrong step) of the lowest label, of the mean label and of
    the confidence, over the labelled candidates;
  - what "every label above 0" keeps of them, and its purity.
Before the rollouts, beside them: the policy's step consensus, a signal from its samples alone —
per written equation `lhs=rhs`, the share of the round's samples writing the same `lhs` that wrote
the same result, a candidate's lowest share (1 without an equation) — and its purity AUROC.

Only the step verifier marks the wrong steps, to measure; nothing is written to the lake.

Usage: python bench/wrong_step_rollouts.py [--config configs/demo.yaml] [--iteration 0]
                                           [--below -0.1 | --all] [--rollouts 16 64]
(run from the folder the config's `lake` is relative to.)
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from schemas.config import load_config  # noqa: E402
from schemas.loop import LoopConfig  # noqa: E402
from tasks.evaluation.metrics import auroc, bootstrap_ci  # noqa: E402
from tasks.generation.generate import start_backend  # noqa: E402
from tasks.lake.sql import connect  # noqa: E402
from tasks.lake.store import Lake  # noqa: E402
from tasks.rounds.context import model_for_round  # noqa: E402
from tasks.scoring.math_shepherd import MathShepherdScorer  # noqa: E402
from tasks.scoring.score import load_candidates  # noqa: E402

SCORERS = ("verifier", "step_verifier", "confidence")


def round_scores(lake: Lake, iteration: int) -> dict[str, dict[str, tuple]]:
    """scorer -> candidate id -> (label, value, step_scores), for the scorers this bench reads;
    a candidate whose identical rows several runs wrote counts once, disagreeing rows are an error."""
    rows = connect(lake).execute(
        "SELECT DISTINCT scorer, candidate_id, label, value, step_scores FROM scores "
        f"WHERE iteration = ? AND scorer IN ({', '.join('?' * len(SCORERS))})", [iteration, *SCORERS]).fetchall()
    out: dict[str, dict[str, tuple]] = {name: {} for name in SCORERS}
    for scorer, cid, label, value, steps in rows:
        if cid in out[scorer] and out[scorer][cid] != (label, value, steps):
            raise SystemExit(f"candidate {cid} has disagreeing {scorer!r} rows in iteration {iteration}")
        out[scorer][cid] = (label, value, steps)
    for name, found in out.items():
        if not found:
            raise SystemExit(f"iteration {iteration} has no {name!r} scores in {lake.root}")
    return out


def first_wrong_step(step_truth: list[float]) -> int | None:
    """The index of the first step the step verifier marks wrong, None when every step is right."""
    return next((t for t, ok in enumerate(step_truth) if ok != 1.0), None)


def label_gap(labelled: list[dict], labels: dict[str, list[float]], truth: dict[str, list[float]]) -> list[float]:
    """Per prompt with both kinds: the mean over its candidates behind a wrong step of (the label at
    their first wrong step − the mean label of the prompt's clean candidates at that step). Only
    rolled-out steps count (the last step's label is the outcome)."""
    by_prompt: dict[str, list[dict]] = {}
    for c in labelled:
        by_prompt.setdefault(c["prompt_id"], []).append(c)
    gaps = []
    for group in by_prompt.values():
        clean = [labels[c["candidate_id"]] for c in group if first_wrong_step(truth[c["candidate_id"]]) is None]
        diffs = []
        for c in group:
            t = first_wrong_step(truth[c["candidate_id"]])
            own = labels[c["candidate_id"]]
            if t is None or t >= len(own) - 1:
                continue
            same_step = [lab[t] for lab in clean if t < len(lab) - 1]
            if same_step:
                diffs.append(own[t] - statistics.fmean(same_step))
        if diffs:
            gaps.append(statistics.fmean(diffs))
    return gaps


def step_consensus(candidates: list[dict], separator: str = "\n") -> dict[str, float]:
    """Candidate id -> its lowest agreement: over its steps of the form `lhs=rhs` (the final-answer
    line aside), the share of the candidates' equations with the same `lhs` (spaces removed) that
    have the same result; 1.0 for a candidate with no equation."""
    def equations(text: str) -> list[tuple[str, str]]:
        out = []
        for line in text.split(separator):
            if "=" in line and not line.lstrip().startswith("####"):
                lhs, _, rhs = line.rpartition("=")
                out.append(("".join(lhs.split()), rhs.strip()))
        return out

    parsed = {c["candidate_id"]: equations(c["text"]) for c in candidates}
    votes: dict[str, dict[str, int]] = {}
    for eqs in parsed.values():
        for lhs, rhs in eqs:
            votes.setdefault(lhs, {}).setdefault(rhs, 0)
            votes[lhs][rhs] += 1
    return {cid: min((votes[lhs][rhs] / sum(votes[lhs].values()) for lhs, rhs in eqs), default=1.0)
            for cid, eqs in parsed.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--iteration", type=int, default=0)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--below", type=float, default=-0.1, help="label the answer-correct candidates whose "
                       "confidence is below this")
    group.add_argument("--all", action="store_true", help="label every answer-correct candidate")
    parser.add_argument("--rollouts", type=int, nargs="+", default=[16])
    args = parser.parse_args()
    config = load_config(args.config, LoopConfig)
    lake = Lake(config.lake)
    policy = model_for_round(config, args.iteration)
    scores = round_scores(lake, args.iteration)
    candidates = load_candidates(lake, args.iteration, model_id=policy.model_id, prompt_split="train")
    correct = [c for c in candidates if scores["verifier"].get(c["candidate_id"], (None,))[0] == "correct"]
    truth = {c["candidate_id"]: scores["step_verifier"][c["candidate_id"]][2] for c in correct}
    confidence = {c["candidate_id"]: scores["confidence"][c["candidate_id"]][1] for c in correct}
    chosen = correct if args.all else [c for c in correct if confidence[c["candidate_id"]] < args.below]
    clean = {cid for cid, steps in truth.items() if first_wrong_step(steps) is None}
    if len({c["candidate_id"] in clean for c in chosen}) < 2:
        raise SystemExit(f"the {len(chosen)} candidates to label are not both clean and behind a wrong step: "
                         "nothing to tell apart (try another --below, or --all)")
    scope = "every answer-correct candidate" if args.all else f"answer-correct with confidence < {args.below}"
    print(f"round {args.iteration} of {config.run_id}, policy {policy.model_id}: {len(correct)} answer-correct "
          f"({len(clean)} clean); labelling {len(chosen)} ({scope}; "
          f"{sum(c['candidate_id'] in clean for c in chosen)} clean)", flush=True)
    consensus = step_consensus(candidates, config.generation.step_separator)
    pure = [c["candidate_id"] in clean for c in chosen]
    print(f"purity AUROC of the step consensus over them: "
          f"{auroc([consensus[c['candidate_id']] for c in chosen], pure):.3f} "
          f"(the confidence: {auroc([confidence[c['candidate_id']] for c in chosen], pure):.3f})", flush=True)
    entry = next((r for r in config.scoring.reward_models if r.kind == "math_shepherd"), None)
    backend = start_backend(policy.path, config.generation.engine)
    try:
        for k in args.rollouts:
            sampling = config.generation.sampling.model_copy(update={
                "n": k, "temperature": entry.temperature if entry else 1.0, "seed": entry.seed if entry else 0,
                "max_tokens": entry.max_tokens if entry else config.generation.sampling.max_tokens})
            scorer = MathShepherdScorer(backend, sampling, model_id=policy.model_id,
                                        prompt_format=config.generation.format,
                                        step_separator=config.generation.step_separator)
            started = time.perf_counter()
            try:
                labels = {r["candidate_id"]: r["step_scores"] for r in scorer.score(chosen) if r["step_scores"]}
            finally:
                scorer.close()
            seconds = time.perf_counter() - started
            labelled = [c for c in chosen if c["candidate_id"] in labels]
            pure = [c["candidate_id"] in clean for c in labelled]
            gaps = label_gap(labelled, labels, truth)
            print(f"\n{k} rollouts a step: {scorer.rollouts} rollouts in {seconds:.0f} s; {len(labelled)} labelled")
            if gaps:
                low, high = bootstrap_ci(gaps, n_boot=10000, seed=0)
                print(f"  label at the first wrong step − the clean candidates' at that step: "
                      f"{statistics.fmean(gaps):+.3f} [{low:+.3f}, {high:+.3f}] ({len(gaps)} prompts)")
            else:
                print("  label at the first wrong step: no prompt has both a clean candidate and one behind a "
                      "rolled-out wrong step")
            for name, numbers in (("lowest label", [min(labels[c["candidate_id"]]) for c in labelled]),
                                  ("mean label", [statistics.fmean(labels[c["candidate_id"]]) for c in labelled]),
                                  ("confidence", [confidence[c["candidate_id"]] for c in labelled])):
                print(f"  purity AUROC of the {name}: {auroc(numbers, pure):.3f}")
            kept = [p for c, p in zip(labelled, pure) if min(labels[c["candidate_id"]]) > 0]
            print(f"  every label above 0 keeps {len(kept)} of {len(labelled)}: purity "
                  f"{100 * sum(kept) / max(len(kept), 1):.1f}% (all labelled: {100 * sum(pure) / len(pure):.1f}%)")
    finally:
        backend.close()


if __name__ == "__main__":
    main()
