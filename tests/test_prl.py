"""PRL process values: group advantages, the KL suffix sums, score rows, and input validation.

Expected numbers are written out as arithmetic from the formula in tasks/scoring/prl.py's docstring, not
computed by tasks.scoring.prl.
"""
from __future__ import annotations

import json
import math

import pytest

from schemas import table_spec
from tasks.scoring.prl import group_advantages, process_values, prl_score_rows, token_values

SCORES = table_spec("scores")
CANDIDATES = table_spec("candidates")

# A 6-token response in three steps (last tokens 1, 3, 5) under pi and pi_ref.
POLICY = [-0.5, -1.0, -0.25, -2.5, -0.75, -0.1]
REF = [-0.7, -0.8, -0.5, -1.5, -1.25, -0.3]
ENDS = [1, 3, 5]
ETA = 2.0  # beta = 0.5
STD_100 = math.sqrt(((2 / 3) ** 2 + 2 * (1 / 3) ** 2) / 2)  # sample std of [1, 0, 0]
A_TOP = (1 - 1 / 3) / (STD_100 + 1e-6)
A_LOW = (0 - 1 / 3) / (STD_100 + 1e-6)
# Suffix sums of log pi - log pi_ref from each step's last token to the end.
KL_FROM_1 = (-1.0 + 0.8) + (-0.25 + 0.5) + (-2.5 + 1.5) + (-0.75 + 1.25) + (-0.1 + 0.3)  # -0.25
KL_FROM_3 = (-2.5 + 1.5) + (-0.75 + 1.25) + (-0.1 + 0.3)  # -0.3
KL_FROM_5 = (-0.1 + 0.3)  # 0.2


# -- group advantages ---------------------------------------------------------------------------
def test_group_advantages_hand_computed():
    assert group_advantages([1, 0, 0]) == pytest.approx([A_TOP, A_LOW, A_LOW], abs=1e-12)
    assert group_advantages([2.0, 4.0]) == pytest.approx(
        [-1 / (math.sqrt(2) + 1e-6), 1 / (math.sqrt(2) + 1e-6)], abs=1e-12)


def test_group_advantages_degenerate_groups():
    assert group_advantages([0.1, 0.1, 0.1]) == [0.0, 0.0, 0.0]  # exactly, despite rounding in the mean
    assert group_advantages([1.0]) == [0.0]
    assert group_advantages([]) == []


def test_group_advantages_rejects_non_finite():
    with pytest.raises(ValueError, match=r"rewards\[1\] is not finite"):
        group_advantages([1.0, float("nan"), 0.0])


# -- process values -----------------------------------------------------------------------------
def test_process_values_three_steps_hand_computed():
    values = process_values(A_TOP, POLICY, REF, ENDS, ETA)
    expected = [A_TOP - 0.5 * KL_FROM_1, A_TOP - 0.5 * KL_FROM_3, A_TOP - 0.5 * KL_FROM_5]
    assert values == pytest.approx(expected, abs=1e-12)
    assert values == pytest.approx([A_TOP + 0.125, A_TOP + 0.15, A_TOP - 0.1], abs=1e-12)


def test_process_values_all_equal_group_is_pure_kl():
    (advantage,) = set(group_advantages([1.0, 1.0, 1.0]))
    assert process_values(advantage, POLICY, REF, ENDS, ETA) == pytest.approx([0.125, 0.15, -0.1], abs=1e-12)


def test_process_values_eta_scales_the_kl_term():
    assert process_values(1.0, POLICY, REF, ENDS, 0.5) == pytest.approx(
        [1.0 - 2 * KL_FROM_1, 1.0 - 2 * KL_FROM_3, 1.0 - 2 * KL_FROM_5], abs=1e-12)


def test_process_values_equal_policies_give_advantage_everywhere():
    assert process_values(-0.7, POLICY, POLICY, ENDS, ETA) == [-0.7, -0.7, -0.7]
    assert process_values(0.3, [], [], [], ETA) == []


def test_token_values_spread_step_values():
    v1, v2, v3 = A_TOP - 0.5 * KL_FROM_1, A_TOP - 0.5 * KL_FROM_3, A_TOP - 0.5 * KL_FROM_5
    assert token_values(A_TOP, POLICY, REF, ENDS, ETA) == pytest.approx([v1, v1, v2, v2, v3, v3], abs=1e-12)
    # Tokens after the last step's end (trailing separator, EOS) carry the last step's value.
    w1 = 0.0 - 0.5 * ((-0.5 + 0.7) + (-1.0 + 0.8) + (-0.25 + 0.5) + (-2.5 + 1.5) + (-0.75 + 1.25) + (-0.1 + 0.3))
    w2 = 0.0 - 0.5 * ((-0.25 + 0.5) + (-2.5 + 1.5) + (-0.75 + 1.25) + (-0.1 + 0.3))
    assert token_values(0.0, POLICY, REF, [0, 2], ETA) == pytest.approx([w1, w2, w2, w2, w2, w2], abs=1e-12)
    with pytest.raises(ValueError, match="at least one step"):
        token_values(0.0, POLICY, REF, [], ETA)


@pytest.mark.parametrize(
    ("policy", "ref", "ends", "eta", "message"),
    [
        (POLICY, REF[:5], ENDS, ETA, "policy_logprobs has 6 tokens but ref_logprobs has 5"),
        (POLICY, REF, [1, 1, 5], ETA, "not strictly increasing at index 1"),
        (POLICY, REF, [3, 1, 5], ETA, "not strictly increasing at index 1"),
        (POLICY, REF, [1, 3, 6], ETA, r"step_token_ends\[2\] = 6 is outside the 6 tokens"),
        (POLICY, REF, [-1, 3], ETA, r"step_token_ends\[0\] = -1 is outside"),
        (POLICY, REF, [1.0, 3], ETA, r"step_token_ends\[0\] is not an integer"),
        (POLICY, REF, ENDS, 0.0, "eta must be a finite number > 0"),
        (POLICY, REF, ENDS, -1.0, "eta must be a finite number > 0"),
        (POLICY, REF, ENDS, float("inf"), "eta must be a finite number > 0"),
        ([-0.5, float("nan"), -0.25, -2.5, -0.75, -0.1], REF, ENDS, ETA, r"policy_logprobs\[1\] is not finite"),
        (POLICY, [-0.7, -0.8, -0.5, -1.5, -1.25, float("-inf")], ENDS, ETA, r"ref_logprobs\[5\] is not finite"),
    ],
)
def test_process_values_validation(policy, ref, ends, eta, message):
    with pytest.raises(ValueError, match=message):
        process_values(0.0, policy, ref, ends, eta)


def test_process_values_rejects_non_finite_advantage():
    with pytest.raises(ValueError, match="advantage must be a finite number"):
        process_values(float("nan"), POLICY, REF, ENDS, ETA)


# -- score rows ---------------------------------------------------------------------------------
def candidate(cid: str, prompt_id: str, index: int, logprobs=POLICY, ends=ENDS) -> dict:
    """A full candidates row with the given PRL inputs."""
    return {
        "candidate_id": cid, "prompt_id": prompt_id, "model_id": "m", "iteration": 0,
        "sampling_hash": "s", "sample_index": index, "text": "ab\ncd\nef", "steps": ["ab", "cd", "ef"],
        "num_tokens": 6 if logprobs is not None else 0, "finish_reason": "stop", "cumulative_logprob": None,
        "token_ids": [3, 4, 5, 6, 7, 8] if logprobs is not None else None,
        "token_logprobs": logprobs, "step_token_ends": ends,
    }


def group_rows() -> tuple[list[dict], dict, dict]:
    """Prompt p1: rewards 1, 0, None (timeout), 0; prompt p2: one rewarded sample and one None."""
    zero_kl = [-1.0, -1.0, -2.0, -0.5, -0.5, -1.5]
    candidates = [
        candidate("c-low-a", "p1", 1, logprobs=zero_kl),
        candidate("c-solo", "p2", 0),
        candidate("c-top", "p1", 0),
        candidate("c-timeout", "p1", 2, logprobs=None, ends=None),
        candidate("c-low-b", "p1", 3, logprobs=zero_kl),
        candidate("c-solo-none", "p2", 1),
    ]
    outcome = {"c-solo-none": None, "c-top": 1.0, "c-timeout": None, "c-low-b": 0.0, "c-low-a": 0.0,
               "c-solo": 1.0}
    refs = {"c-solo": REF, "c-low-b": zero_kl, "c-top": REF, "c-low-a": zero_kl}
    return candidates, outcome, refs


def test_prl_score_rows_groups_by_prompt_and_skips_missing_rewards():
    candidates, outcome, refs = group_rows()
    rows = prl_score_rows(candidates, outcome, refs, eta=ETA, iteration=3, scorer_version="prl-v1")
    SCORES.from_rows(rows)  # exactly the scores columns, with valid types
    by_id = {row["candidate_id"]: row for row in rows}
    assert sorted(by_id) == ["c-low-a", "c-low-b", "c-solo", "c-top"]
    top = by_id["c-top"]
    assert top["value"] == pytest.approx(A_TOP, abs=1e-12)  # group [1, 0, 0]: the None is left out
    assert top["step_scores"] == pytest.approx([A_TOP + 0.125, A_TOP + 0.15, A_TOP - 0.1], abs=1e-12)
    assert by_id["c-low-a"]["value"] == pytest.approx(A_LOW, abs=1e-12)
    assert by_id["c-low-b"]["step_scores"] == pytest.approx([A_LOW] * 3, abs=1e-12)
    solo = by_id["c-solo"]  # the only rewarded sample of p2: A = 0, values are pure KL
    assert solo["value"] == 0.0
    assert solo["step_scores"] == pytest.approx([0.125, 0.15, -0.1], abs=1e-12)
    assert {(r["prompt_id"], r["iteration"], r["scorer"], r["scorer_version"], r["label"],
             r["extracted_answer"]) for r in rows} == {("p1", 3, "prl", "prl-v1", None, None),
                                                      ("p2", 3, "prl", "prl-v1", None, None)}
    assert json.loads(top["detail"]) == {"eta": 2.0}


def test_prl_score_rows_accepts_an_arrow_table_and_writes_to_the_lake(lake):
    candidates, outcome, refs = group_rows()
    table = CANDIDATES.from_rows(candidates)
    rows = prl_score_rows(table, outcome, refs, eta=ETA, iteration=0, scorer_version="v")
    lake.write("scores", rows, iteration=0)
    back = {r["candidate_id"]: r for r in lake.read("scores", 0).to_pylist()}
    # token_logprobs are float32 in the candidates table, so the comparison is to float32 precision.
    assert back["c-top"]["step_scores"] == pytest.approx([A_TOP + 0.125, A_TOP + 0.15, A_TOP - 0.1], abs=1e-6)
    assert back["c-top"]["value"] == pytest.approx(A_TOP, abs=1e-12)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c, o, r: c[2].update(token_logprobs=None), "candidate 'c-top' has no token_logprobs"),
        (lambda c, o, r: c[2].update(step_token_ends=None), "candidate 'c-top' has no step_token_ends"),
        (lambda c, o, r: o.pop("c-solo"), "candidate 'c-solo' has no entry in the outcome rewards"),
        (lambda c, o, r: r.pop("c-low-b"), "candidate 'c-low-b' has no reference log-probabilities"),
        (lambda c, o, r: r.update({"c-top": REF[:4]}),
         "candidate 'c-top': policy_logprobs has 6 tokens but ref_logprobs has 4"),
        (lambda c, o, r: c[2].update(step_token_ends=[1, 9]), r"candidate 'c-top': step_token_ends\[1\] = 9"),
        (lambda c, o, r: c[2].update(token_ids=[1, 2]), "candidate 'c-top': 2 token_ids but 6 token_logprobs"),
        (lambda c, o, r: o.update({"c-top": float("nan")}), "candidate 'c-top': outcome reward must be"),
        (lambda c, o, r: c.append(dict(c[0])), "candidate 'c-low-a' appears twice"),
        (lambda c, o, r: c[0].pop("step_token_ends"), "candidate 'c-low-a' lacks column 'step_token_ends'"),
    ],
)
def test_prl_score_rows_validation(change, message):
    candidates, outcome, refs = group_rows()
    change(candidates, outcome, refs)
    with pytest.raises(ValueError, match=message):
        prl_score_rows(candidates, outcome, refs, eta=ETA, iteration=0, scorer_version="v")


def test_prl_score_rows_rejects_bad_eta():
    candidates, outcome, refs = group_rows()
    with pytest.raises(ValueError, match="eta must be a finite number > 0"):
        prl_score_rows(candidates, outcome, refs, eta=0, iteration=0, scorer_version="v")
