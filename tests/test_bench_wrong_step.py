"""bench/wrong_step_rollouts.py's comparison: a label at a candidate's first wrong step against the
same step of its prompt's clean candidates (the README quotes what it prints)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest


def _bench():
    """bench/ is not a package: load bench/wrong_step_rollouts.py by path (once)."""
    name = "bench_wrong_step_rollouts"
    if name not in sys.modules:
        path = Path(__file__).resolve().parent.parent / "bench" / "wrong_step_rollouts.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


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
