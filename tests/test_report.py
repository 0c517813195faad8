"""The run report from a hand-built lake: rows per round, exact figures, plots."""
from __future__ import annotations

import json
from pathlib import Path

from tasks.evaluation.metrics import MetricValue, metric_rows
from tasks.evaluation.report import load_run, write_report
from tasks.lake import ids
from tasks.lake.store import Lake


def build_run(lake: Lake, run_id: str, correct_by_iteration: dict[int, list[int]], n: int = 4) -> None:
    """Eval candidates + verifier scores + evals rows; correct_by_iteration[it][p] = correct count."""
    problems = [f"{p}+1" for p in range(len(next(iter(correct_by_iteration.values()))))]
    prompt_rows = [dict(prompt_id=ids.prompt_id("t", q), iteration=0, source="t", split="eval",
                        problem=q, reference_answer="0", metadata=None) for q in problems]
    if not lake.shards("prompts"):
        lake.write("prompts", prompt_rows, iteration=0)
    for it, counts in correct_by_iteration.items():
        model = f"{run_id}-m{it}"
        cands, scores = [], []
        for prompt, c in zip(prompt_rows, counts):
            for i in range(n):
                cid = ids.candidate_id(prompt["prompt_id"], model, "s", i)
                cands.append(dict(candidate_id=cid, prompt_id=prompt["prompt_id"], model_id=model, iteration=it,
                                  sampling_hash="s", sample_index=i, text="#### 0", steps=["#### 0"], num_tokens=6,
                                  finish_reason="stop", cumulative_logprob=None, token_ids=None,
                                  token_logprobs=None, step_token_ends=None))
                scores.append(dict(candidate_id=cid, prompt_id=prompt["prompt_id"], iteration=it, scorer="verifier",
                                   scorer_version="1", value=1.0 if i < c else 0.0,
                                   label="correct" if i < c else "incorrect", extracted_answer="0",
                                   step_scores=None, detail=None))
        lake.write("candidates", cands, iteration=it)
        lake.write("scores", scores, iteration=it)
        avg = sum(counts) / (n * len(counts))
        values = [MetricValue("pass", 1, None, avg, avg - 0.1, avg + 0.1, len(counts)),
                  MetricValue("pass", n, None, sum(c > 0 for c in counts) / len(counts), None, None, len(counts)),
                  MetricValue("greedy", 1, None, 0.5, None, None, len(counts))]
        lake.write("evals", metric_rows(values, run_id, it, model, "eval", "t", "e"), iteration=it,
                   shard=f"evals-{run_id}-{it}")


def train_round(lake: Lake, model: str, policy_hash: str, steps_right: list[bool | None]) -> list[str]:
    """Round 0's train candidates of `model` (one prompt), all kept under `policy_hash`, with the step
    verifier's verdict per candidate (None: it does not know), a Math-Shepherd row (3 steps, 4
    rollouts per step) on the first two and two judge votes; returns the candidate ids."""
    prompt = dict(prompt_id=ids.prompt_id("t", "train"), iteration=0, source="t", split="train",
                  problem="train", reference_answer="0", metadata=None)
    lake.write("prompts", [prompt], iteration=0, shard="train-prompt")
    cands, scores, kept = [], [], []
    for i, right in enumerate(steps_right):
        cid = ids.candidate_id(prompt["prompt_id"], model, "train", i)
        cands.append(dict(candidate_id=cid, prompt_id=prompt["prompt_id"], model_id=model, iteration=0,
                          sampling_hash="train", sample_index=i, text="#### 0", steps=["a", "b", "#### 0"],
                          num_tokens=6, finish_reason="stop", cumulative_logprob=None, token_ids=None,
                          token_logprobs=None, step_token_ends=None))
        base = dict(candidate_id=cid, prompt_id=prompt["prompt_id"], iteration=0, label=None, extracted_answer=None)
        if right is not None:
            scores.append({**base, "scorer": "step_verifier", "scorer_version": "1", "value": float(right),
                           "step_scores": None, "detail": None})
        if i < 2:
            scores.append({**base, "scorer": "math_shepherd", "scorer_version": model, "value": None,
                           "step_scores": [0.5, 0.25, 1.0], "detail": json.dumps({"rollouts_per_step": 4})})
        kept.append(dict(candidate_id=cid, prompt_id=prompt["prompt_id"], iteration=0, policy_name="p",
                         policy_hash=policy_hash, rank=i, weight=1.0))
    votes = [dict(prompt_id=prompt["prompt_id"], iteration=0, a_id=cands[0]["candidate_id"], b_id=cands[1]["candidate_id"],
                  judge="judge", judge_version=model, vote=v, votes_k=2, seed=0, tournament="knockout", round=0,
                  first_id=cands[0]["candidate_id"], verdict="A", winner_id=cands[0]["candidate_id"], reasoning=None,
                  attempts=1) for v in range(2)]
    lake.write("candidates", cands, iteration=0, shard="train-candidates")
    lake.write("scores", scores, iteration=0, shard="train-scores")
    lake.write("selections", kept, iteration=0, shard="train-kept")
    lake.write("comparisons", votes, iteration=0, shard="train-votes")
    return [c["candidate_id"] for c in cands]


def test_report_rows_figures_and_plots(lake: Lake, tmp_path: Path):
    build_run(lake, "run-a", {0: [0, 1, 4], 1: [2, 2, 4]})
    # 4 kept: 2 with every step right, 1 with a wrong step, 1 the step verifier does not know
    train_round(lake, "run-a-m0", "ph", [True, False, True, None])
    reports = tmp_path / "reports"
    (reports / "run-a").mkdir(parents=True)
    rounds = [{"iteration": 0, "model_in": "run-a-m0", "policy_hash": "ph", "prompts": 3, "candidates": 12,
               "kept": 3, "seconds": {"generate": 12.4, "finetune": 3.0}}]
    # a run without reward models is not charged for the labels and votes another run made
    (reports / "run-a" / "rounds.json").write_text(json.dumps({"rounds": rounds}))
    assert load_run(lake, "run-a", reports / "run-a" / "rounds.json").kept_data[0] == {
        "kept": 4, "purity": 2 / 3, "ms_labelled": 0, "rollouts": 0, "judge_votes": 0, "rm_passes": 0}
    (reports / "run-a" / "rounds.json").write_text(json.dumps({
        "rounds": rounds, "reward_models": {"math_shepherd": "math_shepherd", "judge": "judge"}}))
    run = load_run(lake, "run-a", reports / "run-a" / "rounds.json")
    assert run.n == 4
    # pass@2 for counts [0, 1, 4] of n=4: (0 + 0.5 + 1) / 3
    assert abs(run.pass_curves[0][1] - 1.5 / 3) < 1e-12
    assert run.pass_curves[1][0] == (2 + 2 + 4) / 12
    # purity over the 3 kept candidates the step verifier knows; 2 labelled x 2 rolled-out steps x 4
    assert run.kept_data[0] == {"kept": 4, "purity": 2 / 3, "ms_labelled": 2, "rollouts": 16,
                                "judge_votes": 2, "rm_passes": 0}
    path, markdown = write_report(lake, ["run-a"], reports)
    assert path == reports / "run-a" / "report.md"
    round_rows = [line for line in markdown.splitlines() if line.startswith("| 0 | run-a-m0 | 12 |")]
    assert len(round_rows) == 1
    cells = [c.strip() for c in round_rows[0].split("|")[1:-1]]
    assert cells[2:7] == ["12", "3", "25.0%", "66.7", "2 MS-labelled, 16 rollouts; 2 judge votes"]
    assert "12" in cells[7:] and "3" in cells[7:]       # stage seconds
    model_rows = [line for line in markdown.splitlines() if line.startswith("| 0 | run-a-m0 | 41.7")]
    assert len(model_rows) == 1
    assert "41.7 [31.7–51.7]" in model_rows[0]          # pass@1 = 5/12 with its interval
    assert "| run-a | 1 | pass@1 | 41.7 | 66.7 | +25.0 |" in markdown
    for png in ("accuracy.png", "pass_at_k_run-a.png", "pass_at_k_arms.png"):
        data = (reports / "run-a" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000


def test_report_compares_runs_side_by_side(lake: Lake, tmp_path: Path):
    build_run(lake, "all-steps", {0: [1, 1], 1: [3, 3]})
    build_run(lake, "answer-only", {0: [1, 1], 1: [2, 2]})
    _, markdown = write_report(lake, ["all-steps", "answer-only"], tmp_path / "reports")
    assert "| all-steps | 1 | pass@1 | 25.0 | 75.0 | +50.0 |" in markdown
    assert "| answer-only | 1 | pass@1 | 25.0 | 50.0 | +25.0 |" in markdown


def test_unknown_run_is_named(lake: Lake, tmp_path: Path):
    import pytest
    build_run(lake, "x", {0: [1]})
    with pytest.raises(ValueError, match="run 'nope' has no evals"):
        write_report(lake, ["nope"], tmp_path)


def test_reward_model_quality_per_round_hand_computed(lake: Lake, tmp_path: Path):
    """Within-prompt AUROC, and step and purity AUROC on answer-correct candidates, per reward model and round;
    a PRM the round trained is measured only on the candidates it did not train on."""
    prompts = {p: dict(prompt_id=ids.prompt_id("t", p), iteration=0, source="t", split="train", problem=p,
                       reference_answer="0", metadata=None) for p in ("P1", "P2", "P3")}
    lake.write("prompts", list(prompts.values()), iteration=0)
    # name: (prompt, answer-correct, step truth, ORM value, trained-PRM steps, Math-Shepherd labels)
    table = {
        "c0": ("P1", True, [1, 1], 0.9, [0.1, 0.1], [1.0, 0.5]),
        "c1": ("P1", True, [1, 0], 0.2, [0.8, 0.4], [0.75, 0.0]),
        "c2": ("P1", False, [0, 0], 0.5, [0.9, 0.9], None),
        "c3": ("P1", False, [1, 0], 0.1, [0.3, 0.6], None),
        "d0": ("P2", True, [1, 1, 0], 0.3, [0.9, 0.2, 0.3], [1.0, 0.0, 0.25]),
        "d1": ("P2", False, [0, 0, 0], 0.6, [0.5, 0.6, 0.7], None),
        "e0": ("P3", False, [0], 0.4, [0.5], None),   # a prompt with one outcome only: no within-prompt AUROC
    }
    cands, scores, cid_of = [], [], {}
    for model in ("m0", "other"):   # another model's candidates of the same iteration are not the round's
        for name, (p, correct, truth, orm, prm, shepherd) in table.items():
            cid = ids.candidate_id(prompts[p]["prompt_id"], model, "s", int(name[1]))
            cid_of[(model, name)] = cid
            cands.append(dict(candidate_id=cid, prompt_id=prompts[p]["prompt_id"], model_id=model, iteration=0,
                              sampling_hash="s", sample_index=int(name[1]), text="x", steps=["x"] * len(truth),
                              num_tokens=3, finish_reason="stop", cumulative_logprob=None, token_ids=None,
                              token_logprobs=None, step_token_ends=None))
            base = dict(candidate_id=cid, prompt_id=prompts[p]["prompt_id"], iteration=0, scorer_version="1",
                        extracted_answer=None, detail=None)
            flip = model == "other"   # the other model's scores would turn every AUROC upside down
            scores += [{**base, "scorer": "verifier", "value": float(correct),
                        "label": "correct" if correct else "incorrect", "step_scores": None},
                       {**base, "scorer": "step_verifier", "value": float(all(truth)), "label": None,
                        "step_scores": [float(t) for t in truth]},
                       {**base, "scorer": "orm", "value": -orm if flip else orm, "label": None, "step_scores": None},
                       {**base, "scorer": "prm", "value": None, "label": None,
                        "step_scores": [-x if flip else x for x in prm]}]
            if shepherd:
                scores.append({**base, "scorer": "math_shepherd", "value": None, "label": None,
                               "step_scores": shepherd})
    lake.write("candidates", cands, iteration=0)
    lake.write("scores", scores, iteration=0)
    prm_dir = tmp_path / "iter-0-prm"
    prm_dir.mkdir()
    (prm_dir / "flywheel_card.json").write_text(json.dumps(
        {"example_keys": [cid_of[("m0", "c0")], cid_of[("m0", "c2")]]}))
    build_run(lake, "run-q", {0: [1, 1, 1]})
    reports = tmp_path / "reports"
    (reports / "run-q").mkdir(parents=True)
    (reports / "run-q" / "rounds.json").write_text(json.dumps({
        "rounds": [{"iteration": 0, "model_in": "m0", "policy_hash": "ph", "candidates": 7, "kept": 0,
                    "trained": {"prm": {"model_id": "prm-x", "path": str(prm_dir), "examples": 2}}}],
        "reward_models": {"math_shepherd": "math_shepherd", "orm": "orm", "prm": "prm", "judge": "judge"}}))
    quality = load_run(lake, "run-q", reports / "run-q" / "rounds.json").signals[0]
    assert set(quality) == {"math_shepherd", "orm", "prm"}   # a judge ranks by votes, not by a score
    # ORM, P1: positives c0 .9, c1 .2 vs negatives c2 .5, c3 .1 -> 3 of 4 pairs; P2: .3 vs .6 -> 0
    assert quality["orm"]["within_prompt_auroc"] == (0.75 + 0.0) / 2 and quality["orm"]["prompts"] == 2
    assert quality["orm"]["measured"] == 7 and quality["orm"]["trained_on"] == 0
    # ORM step AUROC: it has no step scores
    assert quality["orm"]["step_auroc_correct"] is None
    # PRM, held out c1, c3, d0, d1, e0: P1 min .4 (c1) vs .3 (c3) -> 1; P2 min .2 vs .5 -> 0
    assert quality["prm"]["within_prompt_auroc"] == 0.5 and quality["prm"]["measured"] == 5
    assert quality["prm"]["trained_on"] == 2
    # its steps on held-out answer-correct c1, d0: right .8 .9 .2, wrong .4 .3 -> 4 of 6 pairs
    assert abs(quality["prm"]["step_auroc_correct"] - 4 / 6) < 1e-12 and quality["prm"]["step_candidates"] == 2
    # Math-Shepherd labels (answer-correct only): right 1 .5 .75 1 0, wrong 0 .25 -> (8 + 1/2 tie) of 10
    assert quality["math_shepherd"]["within_prompt_auroc"] is None
    assert abs(quality["math_shepherd"]["step_auroc_correct"] - 0.85) < 1e-12
    # purity AUROC over answer-correct c0 (every step right), c1, d0 (a wrong step): ORM .9 vs .2, .3
    # -> 2 of 2 pairs; Math-Shepherd min 0.5 vs 0, 0 -> 2 of 2; the PRM's held-out c1, d0 are both
    # unclean -> none
    assert (quality["orm"]["purity_auroc"], quality["orm"]["purity_candidates"]) == (1.0, 3)
    assert (quality["math_shepherd"]["purity_auroc"], quality["math_shepherd"]["purity_candidates"]) == (1.0, 3)
    assert (quality["prm"]["purity_auroc"], quality["prm"]["purity_candidates"]) == (None, 2)
    _, markdown = write_report(lake, ["run-q"], reports)
    assert "| 0 | prm | prm | 5 (held out; trained on 2) | 0.500 (2) | 0.667 (2) | – (2) |" in markdown
    # a card that does not list its training candidates: measured on all, and said so
    (prm_dir / "flywheel_card.json").write_text(json.dumps({"model_id": "prm-x"}))
    _, markdown = write_report(lake, ["run-q"], reports)
    assert "| 0 | prm | prm | 7 (including its training data) |" in markdown


def test_each_arm_says_how_it_selected_and_finetuned(lake: Lake, tmp_path: Path):
    build_run(lake, "merged", {0: [1, 2], 1: [2, 3]})
    build_run(lake, "older", {0: [1, 2], 1: [1, 1]})
    build_run(lake, "prefix", {0: [1, 2], 1: [2, 2]})
    reports = tmp_path / "reports"
    for run_id in ("merged", "older", "prefix"):
        (reports / run_id).mkdir(parents=True)
    finetune = {"start_from": "previous", "epochs": 15.0, "max_steps": None, "learning_rate": 0.0003,
                "batching": "by_length", "token_weights": "none", "merge_with_base": 0.3}
    (reports / "merged" / "rounds.json").write_text(json.dumps(
        {"rounds": [], "recipe": {"selection": "rft_conf", "finetune": finetune}}))
    (reports / "older" / "rounds.json").write_text(json.dumps({"rounds": []}))  # written before recipes
    prefix = {**finetune, "merge_with_base": 0.0, "token_weights": "prefix", "token_weight_scorer": "confidence",
              "token_weight_min": -0.3}
    (reports / "prefix" / "rounds.json").write_text(json.dumps(
        {"rounds": [], "recipe": {"selection": "keep_correct", "finetune": prefix}}))
    _, markdown = write_report(lake, ["merged", "older", "prefix"], reports)
    lines = markdown.splitlines()
    assert lines[lines.index("## prefix") + 2] == (
        "Selection `keep_correct`; finetuning 15 epochs at learning rate 0.0003 from the previous round's model, "
        "batches by_length, each sample learned up to its first step scored below -0.3 by `confidence`.")
    merged_at, older_at = lines.index("## merged"), lines.index("## older")
    assert lines[merged_at + 2] == ("Selection `rft_conf`; finetuning 15 epochs at learning rate 0.0003 from the "
                                    "previous round's model, batches by_length; each round's model merged 30% "
                                    "with the base model.")
    assert lines[older_at + 2] == "Rounds:"
