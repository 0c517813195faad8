"""The confidence scorer (the policy's mean log-probability of its own tokens, per step and overall)
on hand-built candidates, its config entry, and the `rft_conf` preset on a hand-built score table."""
from __future__ import annotations

import math

import pytest

from schemas.config import ConfigError, parse_config
from schemas.loop import LoopConfig
from schemas.policy import PRESETS
from tasks.scoring.confidence import ConfidenceScorer, step_confidences
from tasks.scoring.score import make_scorer


def candidate(cid: str, logprobs, ends, num_tokens=None) -> dict:
    return {"candidate_id": cid, "prompt_id": "p", "iteration": 0, "sample_index": 0, "text": "x",
            "num_tokens": len(logprobs or []) if num_tokens is None else num_tokens,
            "token_logprobs": logprobs, "step_token_ends": ends}


def test_each_step_averages_its_own_tokens():
    # steps end at tokens 1 and 3: step 0 = tokens 0-1, step 1 = tokens 2-3; token 4 (EOS) is in no step
    assert step_confidences([-1.0, -2.0, -3.0, -4.0, -5.0], [1, 3]) == [-1.5, -3.5]
    # a step that shares its only token with the step before reads that token
    assert step_confidences([-1.0, -2.0, -3.0], [1, 1, 2]) == [-1.5, -2.0, -3.0]


def test_a_step_end_outside_the_tokens_is_an_error():
    with pytest.raises(ValueError, match="a step ends at token 3, outside the 3 tokens"):
        step_confidences([-1.0, -2.0, -3.0], [0, 3])


def test_the_scorer_writes_the_mean_over_every_token_and_per_step():
    rows = ConfidenceScorer().score([candidate("a", [-0.5, -0.1, -0.3, -0.1], [1, 2]),
                                     candidate("b", [0.0, -2.0], [1])])
    a, b = rows
    assert (a["scorer"], a["scorer_version"]) == ("confidence", "1:mean_token_logprob")
    assert a["value"] == pytest.approx((-0.5 - 0.1 - 0.3 - 0.1) / 4)
    assert a["step_scores"] == pytest.approx([-0.3, -0.3])
    assert b["value"] == pytest.approx(-1.0) and b["step_scores"] == pytest.approx([-1.0])


def test_an_empty_completion_gets_no_value():
    (row,) = ConfidenceScorer(name="conf").score([candidate("e", None, None, num_tokens=0)])
    assert row["scorer"] == "conf" and row["value"] is None and row["detail"] == "empty completion"


@pytest.mark.parametrize("logprobs, ends, message", [
    (None, [0], "log-probabilities: candidate c has no token_logprobs"),
    ([-1.0], None, "each step's last token: candidate c has no step_token_ends"),
    ([-1.0, -math.inf], [1], "candidate c: token 1's log-probability is -inf"),
    ([-1.0, math.nan], [1], "candidate c: token 1's log-probability is nan"),
])
def test_missing_or_broken_log_probabilities_name_the_candidate(logprobs, ends, message):
    with pytest.raises(ValueError, match=message):
        ConfidenceScorer().score([candidate("c", logprobs, ends, num_tokens=2)])


def test_the_registry_and_the_loop_config_know_it():
    assert isinstance(make_scorer("confidence"), ConfidenceScorer)
    base = {"run_id": "r", "base_model": "m", "selection": "rft_conf"}
    config = parse_config({**base, "scoring": {"reward_models": [{"kind": "confidence"}]}}, LoopConfig)
    (entry,) = config.scoring.reward_models
    assert (entry.kind, entry.name) == ("confidence", "confidence")
    with pytest.raises(ConfigError, match="unknown key .scoring.reward_models.0.confidence.path."):
        parse_config({**base, "scoring": {"reward_models": [{"kind": "confidence", "path": "m"}]}}, LoopConfig)


def test_rft_conf_keeps_answer_correct_samples_drawn_without_a_slip():
    from tasks.selection.select import apply_policy

    rows = [dict(candidate_id=f"k{i}", prompt_id="p" if i < 4 else "q", iteration=0, sample_index=i % 4,
                 verifier__label=label, confidence__value=conf)
            for i, (label, conf) in enumerate([
                ("correct", -0.05), ("correct", -0.2), ("correct", -0.201), ("incorrect", -0.01),
                ("correct", None), ("unparseable", -0.02), ("correct", -0.30), ("correct", -0.10)])]
    kept = [r["candidate_id"] for r in apply_policy(rows, PRESETS["rft_conf"])]
    assert kept == ["k0", "k1", "k7"]
