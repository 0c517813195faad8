"""Within-prompt AUROC: a scorer that separates easy problems from hard ones but not the samples of
one problem scores high globally and 0.5 within prompts (hand-built, counted by hand)."""
from __future__ import annotations

import pytest

from tasks.evaluation.rm_eval import outcome_auroc, within_prompt_auroc

# (prompt, correct, score): the easy prompt's samples all score high, the hard one's low
TABLE = [("easy", True, 0.9), ("easy", True, 0.85), ("easy", False, 0.95),
         ("hard", True, 0.1), ("hard", False, 0.05), ("hard", False, 0.02), ("hard", False, 0.01),
         ("solved", True, 0.5), ("solved", True, 0.4)]  # one outcome only: left out within prompts


def tables():
    candidates = [{"candidate_id": f"c{i}", "prompt_id": p} for i, (p, _, _) in enumerate(TABLE)]
    verifier = {f"c{i}": {"label": "correct" if ok else "incorrect"} for i, (_, ok, _) in enumerate(TABLE)}
    scores = {f"c{i}": {"value": v, "step_scores": [1.0, v]} for i, (_, _, v) in enumerate(TABLE)}
    return candidates, verifier, scores


def test_within_prompt_auroc_is_the_mean_over_prompts_with_both_outcomes():
    candidates, verifier, scores = tables()
    within = within_prompt_auroc(candidates, verifier, scores)
    # easy: both correct samples rank below the incorrect one (0); hard: the correct one on top (1)
    assert within == {"auroc": pytest.approx(0.5), "prompts": 2, "prompts_scored": 3}
    # across prompts the same scores look good: correct {0.9, 0.85, 0.1, 0.5, 0.4} vs incorrect
    # {0.95, 0.05, 0.02, 0.01}: 5 * 3 of 20 pairs ranked right
    assert outcome_auroc(candidates, verifier, scores)["auroc"] == pytest.approx(15 / 20)
    assert within_prompt_auroc(candidates, verifier, scores, aggregate="min") == within


def test_candidates_without_a_number_are_left_out():
    candidates, verifier, scores = tables()
    scores["c4"] = {"value": None, "step_scores": None}
    del verifier["c5"]
    assert within_prompt_auroc(candidates, verifier, scores)["auroc"] == pytest.approx(0.5)
    assert within_prompt_auroc(candidates[:3], verifier, {})["auroc"] is None
