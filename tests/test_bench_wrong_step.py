"""bench/wrong_step_rollouts.py's comparison: a label at a candidate's first wrong step against the
same step of its prompt's clean candidates, and the step consensus (docs/results.md quotes what it prints)."""
from __future__ import annotations

import pytest

from tests.helpers import load_bench


def _bench():
    """bench/wrong_step_rollouts.py, loaded by path."""
    return load_bench("wrong_step_rollouts")


def test_first_wrong_step_is_the_first_step_the_step_verifier_marks() -> None:
    first = _bench().first_wrong_step
    assert first([1.0, 1.0, 0.0, 1.0]) == 2
    assert first([0.0, 1.0]) == 0
    assert first([1.0, 1.0, 1.0]) is None


def test_the_gap_pairs_a_first_wrong_step_with_the_same_step_of_clean_candidates() -> None:
    def cand(prompt: str, name: str) -> dict:
        return {"candidate_id": name, "prompt_id": prompt}

    labels = {  # Math-Shepherd labels; the last one is the outcome, never rolled out
        "p-clean1": [0.5, 0.8, 1.0], "p-clean2": [0.3, 0.6, 1.0],
        "p-wrong1": [0.4, 0.1, 1.0], "p-wrong0": [0.2, 0.5, 1.0],
        "q-wrong": [0.1, 1.0],                              # no clean candidate in q: no gap
        "r-clean": [0.9, 1.0], "r-wrong-last": [0.2, 1.0],  # wrong only at the last step: not rolled out
        "s-clean": [0.5, 1.0], "s-wrong-late": [0.4, 0.4, 1.0],  # no clean label at step 1
    }
    truth = {
        "p-clean1": [1.0, 1.0, 1.0], "p-clean2": [1.0, 1.0, 1.0],
        "p-wrong1": [1.0, 0.0, 1.0], "p-wrong0": [0.0, 0.0, 1.0],
        "q-wrong": [0.0, 1.0], "r-clean": [1.0, 1.0], "r-wrong-last": [1.0, 0.0],
        "s-clean": [1.0, 1.0], "s-wrong-late": [1.0, 0.0, 1.0],
    }
    labelled = [cand(name[0], name) for name in labels]
    # p: wrong1 at step 1: 0.1 - (0.8 + 0.6) / 2 = -0.6; wrong0 at step 0: 0.2 - 0.4 = -0.2; mean -0.4
    assert _bench().label_gap(labelled, labels, truth) == [pytest.approx(-0.4)]


def test_step_consensus_is_each_candidates_least_shared_result() -> None:
    texts = {"a": "1+2=3\n3*2=6\n#### 6", "b": "1 + 2=3\n3*2=5\n#### 5", "c": "1+2=4\n4*2=8\n#### 8",
             "d": "#### 6"}
    candidates = [{"candidate_id": k, "text": v} for k, v in texts.items()]
    # 1+2: 3 twice, 4 once; 3*2: 6 once, 5 once; 4*2: 8 once
    assert _bench().step_consensus(candidates) == {
        "a": pytest.approx(1 / 2), "b": pytest.approx(1 / 2), "c": pytest.approx(1 / 3), "d": 1.0}
