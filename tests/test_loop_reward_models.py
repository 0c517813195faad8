"""Reward models as loop stages, on a real round through Prefect: Math-Shepherd labels rolled out by
the round's engine (answer-correct candidates, lazily), PRL, and an ORM and a PRM from folders
(tiny random models of those shapes, built here), each under its configured name; the policy as
pairwise judge of its answer-correct samples; the policy's confidence; finetuning with PRL token weights."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.loop import iteration_flow, self_improve_flow
from schemas.config import parse_config
from schemas.loop import LoopConfig
from schemas.policy import PRESETS
from tasks.evaluation.report import load_run, reports_dir_for
from tasks.lake.sql import connect
from tasks.lake.store import Lake
from tasks.prompts.demo_task import make_splits
from tasks.prompts.sources import demo_prompt_rows, write_prompts
from tasks.selection.select import apply_policy, scored_candidates


def random_reward_model(base: Path, out: Path, kind: str) -> Path:
    """A one-label classifier with the base model's shape and tokenizer, randomly initialised."""
    import torch
    from transformers import (AutoConfig, AutoModelForSequenceClassification, AutoModelForTokenClassification,
                              AutoTokenizer)

    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(base, num_labels=1)
    loader = AutoModelForSequenceClassification if kind == "orm" else AutoModelForTokenClassification
    loader.from_config(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out


def test_a_round_scores_with_math_shepherd_prl_and_reward_model_folders(prefect_harness, tiny_model_dir, tmp_path):
    lake = Lake(tmp_path / "lake")
    lake.root.mkdir()
    write_prompts(lake, demo_prompt_rows(make_splits(20, 16, 4, seed=11)))
    orm = random_reward_model(tiny_model_dir, tmp_path / "orm", "orm")
    prm = random_reward_model(tiny_model_dir, tmp_path / "prm", "prm")
    config = parse_config({
        "run_id": "rm", "lake": str(lake.root), "models_dir": str(tmp_path / "models"),
        "base_model": str(tiny_model_dir), "rounds": 2, "early_stop": {"enabled": False},
        "generation": {"engine": {"backend": "hf"}, "chunk_size": 8,
                       "sampling": {"n": 4, "temperature": 1.0, "max_tokens": 48, "seed": 0}},
        "scoring": {"step_verifier": False, "reward_models": [
            {"kind": "math_shepherd", "rollouts": 2, "max_tokens": 32, "enough": 1},
            {"kind": "prl", "eta": 1.0},
            {"kind": "orm", "name": "orm_small", "path": str(orm)},
            {"kind": "prm", "path": str(prm)},
            {"kind": "orm", "name": "orm_trained", "train": {"epochs": 1, "batch_size": 8, "warmup_steps": 0}},
            {"kind": "prm", "name": "prm_trained", "train": {"epochs": 1, "batch_size": 8, "warmup_steps": 0}},
            {"kind": "judge", "method": "elo", "max_tokens": 8, "attempts": 1},
            {"kind": "confidence"}]},
        "selection": {"name": "best-by-verifier", "steps": [{"kind": "top_k", "k": 1, "score": {"scorer": "verifier"}}]},
        "finetune": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-5, "token_weights": "prl"},  # M1 near M0
        "evaluation": {"sampling": {"n": 2, "temperature": 1.0, "max_tokens": 48, "seed": 5}, "ks": [1, 2]},
    }, LoopConfig)
    rounds = self_improve_flow(config)["rounds"]
    summary = rounds[0]
    assert all({"label", "judge", "reward_train"} <= set(r["seconds"]) for r in rounds)
    card = json.loads((Path(config.models_dir) / "rm" / "iter-1" / "flywheel_card.json").read_text())
    assert card["inputs"]["finetune config"]["token_weights"] == "prl"  # trained with PRL token weights

    con = connect(lake)
    train = {cid: (prompt, index) for cid, prompt, index in con.execute(
        "SELECT c.candidate_id, c.prompt_id, c.sample_index FROM candidates c JOIN prompts p USING (prompt_id) "
        "WHERE p.split = 'train' AND c.iteration = 0").fetchall()}
    assert len(train) == 16 * 4
    scored = dict(con.execute("SELECT scorer, count(DISTINCT candidate_id) FROM scores WHERE iteration = 0 "
                              "AND candidate_id IN (SELECT unnest(?::VARCHAR[])) GROUP BY scorer",
                              [list(train)]).fetchall())
    # PRL values candidates with an outcome (the verifier's value; not unparseable ones)
    with_outcome = con.execute("SELECT count(*) FROM scores WHERE scorer = 'verifier' AND value IS NOT NULL "
                               "AND candidate_id IN (SELECT unnest(?::VARCHAR[]))", [list(train)]).fetchone()[0]
    assert 0 < with_outcome
    assert {k: v for k, v in scored.items() if k not in ("math_shepherd", "judge")} == {
        "verifier": 64, "prl": with_outcome, "orm_small": 64, "prm": 64, "orm_trained": 64, "prm_trained": 64,
        "confidence": 64}
    # the policy's confidence: the mean of the log-probabilities the engine returned with each sample
    confidence = con.execute("SELECT c.token_logprobs, s.value FROM scores s JOIN candidates c USING (candidate_id) "
                             "WHERE s.scorer = 'confidence' AND s.iteration = 0").fetchall()
    assert all(lps and value == pytest.approx(sum(lps) / len(lps)) for lps, value in confidence)
    correct = {cid for (cid,) in con.execute(
        "SELECT candidate_id FROM scores WHERE scorer = 'verifier' AND label = 'correct'").fetchall()} & set(train)
    labels = dict(con.execute("SELECT candidate_id, step_scores FROM scores "
                              "WHERE scorer = 'math_shepherd' AND iteration = 0").fetchall())
    assert correct, "the test model should answer some train prompts right"
    assert set(labels) <= correct  # only answer-correct candidates are rolled out
    # lazily, with enough = 1: a prompt's answer-correct candidates are labelled in sample order up to
    # and including the first whose every step is above 0
    by_prompt: dict[str, list[str]] = {}
    for cid in sorted(correct, key=lambda c: train[c]):
        by_prompt.setdefault(train[cid][0], []).append(cid)
    for group in by_prompt.values():
        done = [cid for cid in group if cid in labels]
        assert done == group[:len(done)] and done
        passing = [all(s > 0 for s in labels[cid]) for cid in done]
        assert passing.count(True) <= 1 and (not any(passing) or passing[-1])
        assert any(passing) or len(done) == len(group)

    # the policy judged its own answer-correct samples, each prompt's by an ELO tournament
    judged = {cid for (cid,) in con.execute(
        "SELECT candidate_id FROM scores WHERE scorer = 'judge' AND iteration = 0").fetchall()}
    assert judged == correct
    pairs = con.execute("SELECT count(*) FROM comparisons WHERE iteration = 0").fetchone()[0]
    assert (pairs > 0) == any(len(group) > 1 for group in by_prompt.values())

    # the trained reward models: a models row each, from the round's policy, and reused when asked again
    rows = {json.loads(metrics)["scorer"]: (parent, json.loads(metrics)["kind"], examples) for parent, metrics, examples
            in con.execute("SELECT parent_id, metrics, num_examples FROM models WHERE iteration = 0").fetchall()}
    base_id = summary["model_in"]
    assert {k: v[:2] for k, v in rows.items()} == {"orm_trained": (base_id, "orm"), "prm_trained": (base_id, "prm")}
    assert rows["prm_trained"][2] == len(labels)  # every Math-Shepherd-labelled candidate
    from tasks.rounds.context import Round
    from tasks.rounds.stages import train_reward_models_in_round
    again = train_reward_models_in_round(Round.start(config, 0))
    assert all(model["reused"] for model in again.values())
    # the round's summary names them; a card lists the candidates it trained on, and the report
    # measures the trained PRM on the round's other candidates only
    assert {k: v["model_id"] for k, v in summary["trained"].items()} == {k: m["model_id"] for k, m in again.items()}
    prm_card = json.loads((Path(summary["trained"]["prm_trained"]["path"]) / "flywheel_card.json").read_text())
    assert sorted(prm_card["example_keys"]) == sorted(labels)
    report_run = load_run(lake, "rm", reports_dir_for(config.lake) / "rm" / "rounds.json")
    assert report_run.signals[0]["prm_trained"]["measured"] == 64 - len(labels)
    assert report_run.signals[0]["orm_small"]["measured"] == 64
    assert report_run.signals[0]["confidence"]["measured"] == 64

    # lineage over two rounds: M1 <- M0, M2 <- M1, and each round's reward models from its policy
    lineage = {(it, json.loads(metrics or "{}").get("scorer")): parent for it, parent, metrics in con.execute(
        "SELECT iteration, parent_id, metrics FROM models WHERE parent_id IS NOT NULL").fetchall()}
    m1, m2 = rounds[0]["model_out"], rounds[1]["model_out"]
    assert rounds[1]["model_in"] == m1
    assert lineage[(1, "orm_trained")] == lineage[(1, "prm_trained")] == m1
    assert {parent for (it, scorer), parent in lineage.items() if scorer is None} >= {base_id, m1}
    assert con.execute("SELECT parent_id FROM models WHERE model_id = ?", [m2]).fetchone()[0] == m1

    # a rerun of the finished round starts no engine, trains nothing and writes nothing
    from tasks.generation.generate import LazyBackend
    shards, starts = {t: sorted(lake.shards(t)) for t in ("candidates", "scores", "models", "comparisons", "evals",
                                                          "selections")}, LazyBackend.starts
    rerun = iteration_flow(config, 1)
    assert rerun["model_out"] == m2 and LazyBackend.starts == starts
    assert {t: sorted(lake.shards(t)) for t in shards} == shards

    # rft_mc over the round's own frame keeps only answer-correct samples whose every step reaches
    frame = scored_candidates(lake, 0, split="train")
    kept = {row["candidate_id"] for row in apply_policy(frame, PRESETS["rft_mc"])}
    assert kept <= {cid for cid in labels if all(s > 0 for s in labels[cid])}
