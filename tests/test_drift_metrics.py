"""Drift rows of an evaluation (mean tokens, distinct answers, log-ratio to the base model) against
hand computations, and the copy of one run's evaluation into another run that starts from the same model."""
from __future__ import annotations

import os

import pytest
import torch

from schemas.generation import PromptFormat
from tasks.evaluation.evaluate import drift_metrics, log_ratios
from tasks.evaluation.metrics import MetricValue, metric_rows
from tasks.lake.sql import connect
from tasks.lake.store import Lake
from tasks.prompts.tiny_model import TinyModelConfig, build_model, build_tokenizer
from tasks.rounds.stages import copy_evaluation

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def candidate(cid: str, prompt: str, tokens: int) -> dict:
    return {"candidate_id": cid, "prompt_id": prompt, "num_tokens": tokens}


def verdict(label: str, answer: str | None) -> dict:
    return {"label": label, "extracted_answer": answer, "value": 1.0 if label == "correct" else 0.0}


def test_tokens_and_distinct_answers_by_hand():
    candidates = [candidate("a1", "p", 10), candidate("a2", "p", 20), candidate("a3", "p", 30),
                  candidate("b1", "q", 5), candidate("b2", "q", 7), candidate("b3", "q", 9)]
    verdicts = {
        # p: two correct answers (one answer however written), a wrong one -> 2 distinct answers
        "a1": verdict("correct", "4"), "a2": verdict("correct", "4.0"), "a3": verdict("incorrect", "5"),
        # q: an unparseable sample does not count as an answer -> 2 distinct answers ("7", "8")
        "b1": verdict("incorrect", "7"), "b2": verdict("unparseable", None), "b3": verdict("incorrect", "8"),
    }
    ratios = {"a1": [0.1, 0.3], "a2": [0.2], "a3": [], "b1": [1.0], "b2": [-1.0, 0.0], "b3": [3.0]}
    values = {v.metric: v for v in drift_metrics(candidates, verdicts, 3, ratios)}
    assert set(values) == {"tokens", "answers", "log_ratio"}
    assert values["tokens"].value == pytest.approx((20 + 7) / 2)      # per-prompt means 20 and 7
    assert values["answers"].value == pytest.approx(2.0)
    # per prompt, the mean over its samples' tokens: p (0.1+0.3+0.2)/3, q (1-1+0+3)/4
    assert values["log_ratio"].value == pytest.approx((0.2 + 0.75) / 2)
    assert all(v.k == 3 and v.n_problems == 2 and v.ci_low <= v.value <= v.ci_high for v in values.values())
    assert {v.metric for v in drift_metrics(candidates, verdicts, 3)} == {"tokens", "answers"}


def test_log_ratio_against_a_hand_forward_pass(tmp_path):
    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    folder = tmp_path / "ref"
    build_model(tokenizer, TinyModelConfig(), seed=0).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    model = build_model(tokenizer, TinyModelConfig(), seed=0).eval()
    fmt = PromptFormat(kind="plain", template="Q: {problem}\n")
    completion = tokenizer("1+2=3\n#### 3", add_special_tokens=False)["input_ids"]
    prompt_ids = tokenizer("Q: 1+2\n")["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + completion])).logits[0].float()
    by_hand = torch.log_softmax(logits[len(prompt_ids) - 1:-1], dim=-1).gather(
        -1, torch.tensor(completion).unsqueeze(-1)).squeeze(-1).tolist()
    stored = [lp + 0.25 * i for i, lp in enumerate(by_hand)]   # a policy that differs by 0.25 * position
    ratios = log_ratios([{"candidate_id": "c", "prompt_id": "p", "problem": "1+2", "token_ids": completion,
                          "token_logprobs": stored}], str(folder), fmt)
    assert ratios["c"] == pytest.approx([0.25 * i for i in range(len(completion))], abs=1e-4)
    with pytest.raises(ValueError, match="candidate c has no token log-probabilities"):
        log_ratios([{"candidate_id": "c", "prompt_id": "p", "problem": "1+2", "token_ids": None,
                     "token_logprobs": None}], str(folder), fmt)


def test_an_evaluation_is_copied_to_a_run_from_the_same_model(lake: Lake):
    values = [MetricValue("pass", 1, None, 0.25, 0.2, 0.3, 4), MetricValue("greedy", 1, None, 0.5, 0.4, 0.6, 4)]
    lake.write("evals", metric_rows(values, "arm-a", 0, "base", "eval", "t", "h1"), iteration=0,
               shard="evals-arm-a-base-h1")
    assert copy_evaluation(lake, "arm-b", "base", 0, "other-hash") is None      # another eval config
    assert copy_evaluation(lake, "arm-b", "other-model", 0, "h1") is None       # another model
    assert copy_evaluation(lake, "arm-b", "base", 0, "h1") == "arm-a"
    rows = connect(lake).execute(
        "SELECT run_id, metric, k, value, ci_low, ci_high, n_problems, eval_hash FROM evals ORDER BY run_id, metric"
    ).fetchall()
    assert rows == [("arm-a", "greedy", 1, 0.5, 0.4, 0.6, 4, "h1"), ("arm-a", "pass", 1, 0.25, 0.2, 0.3, 4, "h1"),
                    ("arm-b", "greedy", 1, 0.5, 0.4, 0.6, 4, "h1"), ("arm-b", "pass", 1, 0.25, 0.2, 0.3, 4, "h1")]
