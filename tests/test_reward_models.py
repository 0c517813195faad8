"""Learned reward models (ORM, PRM), Math-Shepherd step labels, AUROC, and the reward-model figures."""
from __future__ import annotations

import itertools
import json
import random
import shutil
from pathlib import Path

import pytest

from schemas.generation import PromptFormat, SamplingConfig
from tasks.evaluation.metrics import auroc
from tasks.generation.generate import Completion, GenerationError, split_steps
from tasks.lake.store import Lake
from tasks.prompts.demo_task import ChainConfig, generate_problems
from tasks.scoring.math_shepherd import MathShepherdScorer, rollout_prefixes, soft_labels
from tasks.scoring.reward_model import (ORM_KIND, PRM_KIND, ORMScorer, PRMScorer, RewardModelError,
                                check_reward_model_folder, encode_candidate)
from tasks.evaluation.rm_eval import answer_correct_with_wrong_step, best_of_n_values, outcome_auroc, step_auroc, summarise
from tasks.scoring.score import score_candidates
from tasks.scoring.step_verify import step_labels
from tasks.training.reward_train import (RMExample, RMTrainConfig, balanced_orm_examples, pairwise_orm_examples,
                                         prm_examples, train_reward_model)


# -- AUROC ----------------------------------------------------------------------------------------
def brute_auroc(scores, labels) -> float:
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auroc_matches_pairwise_counting_with_ties() -> None:
    rng = random.Random(3)
    for _ in range(50):
        size = rng.randint(2, 30)
        scores = [rng.choice([0.0, 0.5, 1.0, rng.random()]) for _ in range(size)]
        labels = [rng.random() < 0.4 for _ in range(size)]
        if all(labels) or not any(labels):
            continue
        assert auroc(scores, labels) == pytest.approx(brute_auroc(scores, labels))
    assert auroc([0.1, 0.9], [False, True]) == 1.0
    assert auroc([0.9, 0.1], [False, True]) == 0.0


def test_auroc_bad_input() -> None:
    with pytest.raises(ValueError, match="both classes"):
        auroc([0.1, 0.2], [True, True])
    with pytest.raises(ValueError, match="NaN"):
        auroc([float("nan"), 0.2], [True, False])
    with pytest.raises(ValueError, match="2 scores for 1 labels"):
        auroc([0.1, 0.2], [True])


# -- folders --------------------------------------------------------------------------------------
def test_a_causal_lm_or_two_label_folder_is_not_a_reward_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(RewardModelError, match="not a \\*ForSequenceClassification model"):
        check_reward_model_folder(tiny_model_dir, ORM_KIND)
    with pytest.raises(RewardModelError, match="not found"):
        ORMScorer(tmp_path / "missing")
    two = tmp_path / "two-labels"
    two.mkdir()
    (two / "config.json").write_text(json.dumps({"architectures": ["LlamaForSequenceClassification"],
                                                 "id2label": {"0": "a", "1": "b"}}))
    with pytest.raises(RewardModelError, match="2 labels"):
        check_reward_model_folder(two, ORM_KIND)
    with pytest.raises(RewardModelError, match="ForTokenClassification"):
        check_reward_model_folder(two, PRM_KIND)


def test_score_command_checks_the_reward_model_folder_first(tiny_model_dir: Path, lake: Lake) -> None:
    from tests.conftest import run_cli

    missing = run_cli("--lake", str(lake.root), "score", "--scorer", "orm")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "flywheel: error: scorer 'orm' needs --model (the reward model folder)"
    wrong = run_cli("--lake", str(lake.root), "score", "--scorer", "prm", "--model", str(tiny_model_dir))
    assert wrong.returncode == 1 and len(wrong.stderr.strip().splitlines()) == 1
    assert "is not a *ForTokenClassification model (architectures: LlamaForCausalLM)" in wrong.stderr


def test_step_ends_point_at_each_steps_last_character(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompt, response = "Q: 1+2\n", "1+2=3\n\n3*2=6\n#### 6"
    token_ids, ends = encode_candidate(tokenizer, prompt, response)
    text = tokenizer.decode(token_ids)
    assert text == prompt + response
    assert [text[e] for e in ends] == ["3", "6", "6"]  # char tokenizer: one token per character
    assert len(ends) == len(split_steps(response))
    assert encode_candidate(tokenizer, prompt, "")[1] == []


# -- training and scoring on a learnable signal ----------------------------------------------------
def _demo_candidates(count: int, seed: int) -> list[dict]:
    """Worked demo solutions, half with their first step garbled (a signal a few steps can learn)."""
    chains = generate_problems(count, seed=seed, config=ChainConfig())
    rows = []
    for index, chain in enumerate(chains):
        steps = chain.solution.split("\n")
        if index % 2:
            steps[0] = steps[0].replace("=", "=?")
        rows.append({"candidate_id": f"c{seed}-{index}", "prompt_id": f"p{seed}-{index}", "iteration": 0,
                     "sample_index": 0, "problem": chain.problem, "reference_answer": str(chain.answer),
                     "text": "\n".join(steps), "steps": steps})
    return rows


def _labels(c: dict) -> list[float]:
    return step_labels(c["problem"], c["steps"], c["reference_answer"])


@pytest.mark.slow
def test_orm_and_prm_train_and_rank_held_out_candidates(tiny_model_dir: Path, tmp_path: Path) -> None:
    train, held_out = _demo_candidates(256, seed=1), _demo_candidates(64, seed=2)
    prompts = {c["prompt_id"]: f"Q: {c['problem']}\n" for c in train}
    correct = {c["candidate_id"]: all(x == 1.0 for x in _labels(c)) for c in train}
    orm_examples = balanced_orm_examples(train, correct, prompts, seed=0)
    assert sum(e.targets[0] for e in orm_examples) * 2 == len(orm_examples)  # balanced
    config = RMTrainConfig(max_steps=40, batch_size=16, learning_rate=3e-3, warmup_steps=5)
    orm = train_reward_model(tiny_model_dir, ORM_KIND, orm_examples, config, tmp_path / "orm", prefix="orm")
    prm = train_reward_model(tiny_model_dir, PRM_KIND,
                             prm_examples(train, {c["candidate_id"]: _labels(c) for c in train}, prompts),
                             config, tmp_path / "prm", prefix="prm")
    assert not orm.reused and orm.steps == 40 and prm.steps == 40

    orm_rows = ORMScorer(orm.path).score(held_out)
    truth = [all(x == 1.0 for x in _labels(c)) for c in held_out]
    assert {r["scorer"] for r in orm_rows} == {"orm"} and all(r["step_scores"] is None for r in orm_rows)
    assert auroc([r["value"] for r in orm_rows], truth) > 0.9

    prm_rows = PRMScorer(prm.path).score(held_out)
    step_scores = [s for r in prm_rows for s in r["step_scores"]]
    step_truth = [x == 1.0 for c in held_out for x in _labels(c)]
    assert all(r["value"] is None for r in prm_rows)
    assert [len(r["step_scores"]) for r in prm_rows] == [len(c["steps"]) for c in held_out]
    assert all(0.0 <= s <= 1.0 for s in step_scores)
    assert auroc(step_scores, step_truth) > 0.9

    again = train_reward_model(tiny_model_dir, ORM_KIND, orm_examples, config, tmp_path / "orm", prefix="orm")
    assert again.reused and again.model_id == orm.model_id


def _paired_candidates(count: int, seed: int) -> list[dict]:
    """Two candidates per prompt: the worked solution and the same with its first step garbled."""
    rows = []
    for c in _demo_candidates(2 * count, seed):
        index = int(c["candidate_id"].rsplit("-", 1)[1])
        rows.append({**c, "prompt_id": f"p{seed}-{index // 2}", "sample_index": index % 2})
    # the garbled copy of each prompt's solution: the same problem as its clean twin
    for twin, garbled in zip(rows[0::2], rows[1::2]):
        steps = twin["steps"][:]
        steps[0] = steps[0].replace("=", "=?")
        garbled.update(problem=twin["problem"], reference_answer=twin["reference_answer"], steps=steps,
                       text="\n".join(steps))
    return rows


def test_pairwise_orm_examples_and_hard_prm_labels() -> None:
    rows = [{"candidate_id": cid, "prompt_id": pid, "text": cid} for cid, pid in
            (("a2", "p"), ("a1", "p"), ("b", "p"), ("c", "q"), ("d", "r"), ("e", "r"), ("f", "r"))]
    correct = {"a1": True, "a2": True, "b": False, "c": True, "d": False, "e": True}  # f: no outcome
    examples = pairwise_orm_examples(rows, correct, {"p": "P", "q": "Q", "r": "R"})
    # every (correct, incorrect) pair of one prompt, as consecutive examples; q has one outcome only
    assert [(e.key, e.prompt, e.targets) for e in examples] == [
        ("a1", "P", (1.0,)), ("b", "P", (0.0,)), ("a2", "P", (1.0,)), ("b", "P", (0.0,)),
        ("e", "R", (1.0,)), ("d", "R", (0.0,))]
    with pytest.raises(ValueError, match="none has"):
        pairwise_orm_examples(rows, {"a1": True, "c": False}, {"p": "P", "q": "Q", "r": "R"})
    labels = {"a1": [0.75, 0.0, 0.25], "b": [1.0]}
    assert [e.targets for e in prm_examples(rows, labels, {"p": "P"}, hard=True)] == [(1.0, 0.0, 1.0), (1.0,)]
    assert [e.targets for e in prm_examples(rows, labels, {"p": "P"})] == [(0.75, 0.0, 0.25), (1.0,)]


def test_training_settings_that_do_not_apply_to_the_kind_are_refused() -> None:
    from schemas.config import ConfigError, parse_config
    from schemas.loop import LoopConfig
    from schemas.reward_models import RewardModelsConfig

    def loop(entry: dict) -> LoopConfig:
        return parse_config({"run_id": "r", "scoring": {"reward_models": [{"kind": "math_shepherd"}, entry]}},
                            LoopConfig)

    orm = loop({"kind": "orm", "train": {"objective": "pairwise"}}).scoring.reward_models[1]
    prm = loop({"kind": "prm", "train": {"labels": "hard"}}).scoring.reward_models[1]
    assert (orm.train.objective, prm.train.labels) == ("pairwise", "hard")
    with pytest.raises(ConfigError, match="objective: pairwise applies to an ORM only"):
        loop({"kind": "prm", "train": {"objective": "pairwise"}})
    with pytest.raises(ConfigError, match="labels: hard applies to a PRM only"):
        loop({"kind": "orm", "train": {"labels": "hard"}})
    with pytest.raises(ConfigError, match="labels: hard applies to a PRM only"):
        parse_config({"orm": {"labels": "hard"}}, RewardModelsConfig)
    with pytest.raises(ConfigError, match="objective"):
        parse_config({"orm": {"objective": "listwise"}}, RewardModelsConfig)


@pytest.mark.slow
def test_a_pairwise_orm_ranks_the_samples_of_a_prompt(tiny_model_dir: Path, tmp_path: Path) -> None:
    train, held_out = _paired_candidates(128, seed=3), _paired_candidates(32, seed=4)
    prompts = {c["prompt_id"]: f"Q: {c['problem']}\n" for c in train + held_out}
    correct = {c["candidate_id"]: c["sample_index"] == 0 for c in train}
    examples = pairwise_orm_examples(train, correct, prompts)
    assert len(examples) == 2 * 128
    config = RMTrainConfig(max_steps=40, batch_size=16, learning_rate=3e-3, warmup_steps=5, objective="pairwise")
    orm = train_reward_model(tiny_model_dir, ORM_KIND, examples, config, tmp_path / "orm", prefix="orm")
    values = {r["candidate_id"]: r["value"] for r in ORMScorer(orm.path).score(held_out)}
    wins = [values[a["candidate_id"]] > values[b["candidate_id"]] for a, b in zip(held_out[0::2], held_out[1::2])]
    assert sum(wins) / len(wins) > 0.9   # the clean solution above its garbled twin
    with pytest.raises(ValueError, match="pairs"):
        train_reward_model(tiny_model_dir, PRM_KIND, examples, config, tmp_path / "bad", prefix="prm")


def test_reward_model_training_bad_input(tiny_model_dir: Path, tmp_path: Path) -> None:
    rows = _demo_candidates(4, seed=5)
    prompts = {c["prompt_id"]: c["problem"] for c in rows}
    with pytest.raises(ValueError, match="0 incorrect"):
        balanced_orm_examples(rows, {c["candidate_id"]: True for c in rows}, prompts)
    with pytest.raises(ValueError, match="none have any"):
        prm_examples(rows, {}, prompts)
    wrong_count = [RMExample("x", "Q\n", "1+1=2\n#### 2", (1.0,))]
    with pytest.raises(ValueError, match="2 steps but 1 step labels"):
        train_reward_model(tiny_model_dir, PRM_KIND, wrong_count, RMTrainConfig(max_steps=1), tmp_path / "p",
                           prefix="prm")
    with pytest.raises(ValueError, match="unknown reward-model kind"):
        train_reward_model(tiny_model_dir, "pairwise", wrong_count, RMTrainConfig(max_steps=1), tmp_path / "q",
                           prefix="x")
    with pytest.raises(ValueError, match="batch_size"):
        RMTrainConfig(batch_size=0)
    assert not (tmp_path / "p").exists() and not (tmp_path / "q").exists()


def test_a_rescore_with_another_model_version_is_refused(lake: Lake) -> None:
    class Fixed:
        name = "orm"

        def __init__(self, version: str) -> None:
            self.version = version

        def score(self, candidates):  # noqa: ANN001
            from tasks.scoring.scorer import score_row

            return [score_row(c, self, value=1.0) for c in candidates]

    rows = _demo_candidates(2, seed=9)
    assert score_candidates(lake, Fixed("a"), rows, 0).scored == 2
    assert score_candidates(lake, Fixed("a"), rows, 0).scored == 0  # resumed: nothing left
    with pytest.raises(ValueError, match="already has a 'orm' score of version 'a', not 'b'"):
        score_candidates(lake, Fixed("b"), rows, 0)


# -- Math-Shepherd ---------------------------------------------------------------------------------
def test_rollout_prefixes_and_soft_labels() -> None:
    assert rollout_prefixes("a=1\nb=2\n#### 2") == ["a=1\n", "a=1\nb=2\n"]
    assert rollout_prefixes("#### 2") == []
    assert soft_labels(True, [[True, False, False, False], [True, True, True, True]]) == [0.25, 1.0, 1.0]
    assert soft_labels(False, []) == [0.0]


class ScriptedBackend:
    """A deterministic engine for the labelling logic: continues a prefix with the right answer
    only when the prefix has no step containing '!'."""

    name = "scripted"

    def __init__(self) -> None:
        self.calls: list[int] = []

    def generate(self, prompts, sampling, seeds):  # noqa: ANN001
        self.calls.append(len(prompts))
        out = []
        for prompt in prompts:
            answer = "#### 6" if "!" not in prompt else "#### 0"
            out.append([Completion(answer, [1], None, None, "stop")] * sampling.n)
        return out

    def close(self) -> None:
        pass


def test_math_shepherd_labels_each_step_from_rollouts() -> None:
    backend = ScriptedBackend()
    scorer = MathShepherdScorer(backend, SamplingConfig(n=3, temperature=1.0), model_id="m", workers=1)
    try:
        base = {"prompt_id": "p", "iteration": 0, "problem": "(1+2)*2", "reference_answer": "6", "sample_index": 0}
        rows = scorer.score([
            {**base, "candidate_id": "good", "text": "1+2=3\n3*2=6\n#### 6"},
            {**base, "candidate_id": "bad", "text": "1+2=3\n3*2=5!\n#### 6"},
            {**base, "candidate_id": "wrong", "text": "1+2=3\n#### 7"},
            {**base, "candidate_id": "none", "text": "no answer at all"},  # unparseable: no row
        ])
    finally:
        scorer.close()
    labels = {r["candidate_id"]: r["step_scores"] for r in rows}
    assert labels == {"good": [1.0, 1.0, 1.0], "bad": [1.0, 0.0, 1.0], "wrong": [1.0, 0.0]}
    assert backend.calls == [5]  # one batched call: 2 + 2 + 1 step prefixes
    assert scorer.rollouts == 15
    assert all(r["scorer"] == "math_shepherd" and r["value"] is None for r in rows)


def test_math_shepherd_refuses_a_rollout_prompt_longer_than_the_context() -> None:
    """Prompt + step prefix + max_tokens is checked against the engine's context before any rollout."""
    class ShortContext(ScriptedBackend):
        def prompt_limits(self):  # noqa: ANN202 - one token per character, a context of 40
            return (lambda texts: {"input_ids": [list(t) for t in texts]}), 40

    backend = ShortContext()
    scorer = MathShepherdScorer(backend, SamplingConfig(n=3, temperature=1.0, max_tokens=16), model_id="m",
                                workers=1, prompt_format=PromptFormat(template="{problem}\n"))
    base = {"prompt_id": "p", "iteration": 0, "problem": "(1+2)*2", "reference_answer": "6", "sample_index": 0}
    try:  # 8 + 6 and 8 + 12 characters fit with 16 more; 8 + 27 for the long second step do not
        with pytest.raises(GenerationError, match=r"^the rollout prompt of candidate long after step 2: 35 prompt "
                                                  r"tokens \+ max_tokens 16 exceed the model's context of 40 tokens"):
            scorer.score([{**base, "candidate_id": "short", "text": "1+2=3\n3*2=6\n#### 6"},
                          {**base, "candidate_id": "long", "text": "1+2=3\n3*2=6 so far so good\n#### 6"}])
    finally:
        scorer.close()
    assert backend.calls == []


@pytest.mark.slow
def test_math_shepherd_through_the_real_vllm_engine(vllm_backend) -> None:  # noqa: ANN001
    chains = generate_problems(3, seed=4, config=ChainConfig())
    candidates = [{"candidate_id": f"c{i}", "prompt_id": f"p{i}", "iteration": 0, "sample_index": 0,
                   "problem": ch.problem, "reference_answer": str(ch.answer), "text": ch.solution}
                  for i, ch in enumerate(chains)]
    scorer = MathShepherdScorer(vllm_backend, SamplingConfig(n=4, temperature=1.0, max_tokens=48, seed=3),
                                model_id="tiny", workers=1)
    try:
        rows = scorer.score(candidates)
    finally:
        scorer.close()
    steps = [len(split_steps(c["text"])) for c in candidates]
    assert [len(r["step_scores"]) for r in rows] == steps
    assert scorer.rollouts == sum(s - 1 for s in steps) * 4
    for row in rows:
        assert row["step_scores"][-1] == 1.0  # worked solutions: the outcome is right
        assert all(x * 4 == int(x * 4) and 0 <= x <= 1 for x in row["step_scores"])


# -- the report's figures ----------------------------------------------------------------------------
def test_reward_model_figures_on_a_hand_built_table() -> None:
    candidates = [{"candidate_id": f"{p}{i}", "prompt_id": p, "sample_index": i} for p in "ab" for i in range(2)]
    verifier = {"a0": {"label": "correct", "extracted_answer": "1"}, "a1": {"label": "incorrect", "extracted_answer": "2"},
                "b0": {"label": "incorrect", "extracted_answer": "3"}, "b1": {"label": "correct", "extracted_answer": "4"}}
    truth = {"a0": {"value": 0.0, "step_scores": [0.0, 1.0]}, "a1": {"value": 0.0, "step_scores": [1.0, 0.0]},
             "b0": {"value": 0.0, "step_scores": [1.0, 0.0]}, "b1": {"value": 1.0, "step_scores": [1.0, 1.0]}}
    orm = {"a0": {"value": 0.9}, "a1": {"value": 0.1}, "b0": {"value": 0.8}, "b1": {"value": 0.2}}
    prm = {"a0": {"step_scores": [0.1, 0.9]}, "a1": {"step_scores": [0.9, 0.2]},
           "b0": {"step_scores": [0.8, 0.3]}, "b1": {"step_scores": [0.7, 0.95]}}
    assert outcome_auroc(candidates, verifier, orm) == {"auroc": 0.75, "candidates": 4, "positives": 2}
    steps = step_auroc(candidates, truth, prm)
    assert steps["auroc"] == 1.0 and steps["steps"] == 8 and steps["wrong_steps"] == 3
    assert step_auroc(candidates, truth, prm, only={"a0", "b1"})["steps"] == 4
    mismatch = step_auroc(candidates, truth, {"a0": {"step_scores": [0.5]}})
    assert mismatch["mismatched"] == 1 and mismatch["auroc"] is None
    figures = summarise(best_of_n_values(candidates, verifier, {"orm": orm}, {"prm": prm}, truth))
    assert figures["rm[orm]"]["value"] == 0.5  # a: a0 (correct); b: b0 (incorrect)
    assert figures["rm[prm:min]"]["value"] == 0.5  # a: a1 (0.2 > 0.1); b: b1 (0.7 > 0.3)
    assert figures["rm[prm:last]"]["value"] == 1.0  # a0 (0.9), b1 (0.95)
    assert figures["rm[prm:mean]"]["value"] == 0.5  # a: a1 (0.55 > 0.5); b: b1
    assert figures["avg"]["value"] == 0.5 and figures["pass"]["value"] == 1.0
    assert figures["all_steps"]["value"] == 0.25
    assert answer_correct_with_wrong_step(candidates, verifier, truth) == {
        "answer_correct": 2, "with_wrong_step": 1, "share": 0.5}
