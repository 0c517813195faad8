"""Every selection preset on one hand-built score table: the exact kept set, its order and weights.

The table has the columns `scored_candidates` gives a round scored by the verifier, the step
verifier, Math-Shepherd labels, a PRM, the pairwise judge, the policy's confidence and PRL. As in
the loop, Math-Shepherd labels and judge scores exist only for answer-correct candidates (and not
for all of them: labelling is lazy). Each expectation below is worked out by hand in its comment.
"""
from __future__ import annotations

import pytest

from schemas.policy import PRESETS
from tasks.selection.select import apply_policy

# name, prompt, text, verifier label, extracted answer, step verifier, Math-Shepherd steps (None:
# not labelled), PRM steps, judge (None: not judged), confidence, PRL value
TABLE = [
    # p1, reference 7: six right answers, one wrong; "A" and " a" are one text once normalised
    ("s0", "p1", "A", "correct", "7", 1.0, [0.5, 0.25], [0.9, 0.8], 0.2, -0.10, 0.5),
    ("s1", "p1", " a", "correct", "7", 1.0, [0.75, 0.5], [0.95, 0.9], 0.9, -0.05, 1.0),
    ("s2", "p1", "B", "correct", "7", 0.0, [0.5, 0.0], [0.7, 0.3], 0.6, -0.30, 1.5),
    ("s3", "p1", "C", "correct", "7", 1.0, None, [0.6, 0.6], 0.4, -0.20, 3.0),
    ("s4", "p1", "D", "incorrect", "5", 0.0, None, [0.99, 0.99], None, -0.01, 0.7),
    ("s5", "p1", "E", "correct", "7", 1.0, [0.25, 0.25], [0.5, 0.4], 0.7, -0.15, -0.5),
    ("s6", "p1", "F", "correct", "7", 0.0, [0.25], [0.8, 0.2], 0.1, -0.25, 1.0),
    # p2, reference 3: solved by every sample; t2 repeats t0's text exactly
    ("t0", "p2", "G", "correct", "3", 1.0, [1.0], [0.9], 0.5, -0.10, 1.0),
    ("t1", "p2", "H", "correct", "3", 0.0, [0.0], [0.2], 0.3, -0.40, 1.0),
    ("t2", "p2", "G", "correct", "3", 1.0, [1.0], [0.9], 0.5, -0.10, 1.0),
    ("t3", "p2", "I", "correct", "3", 1.0, [0.5], [0.85], 0.8, -0.19, 0.5),
    # p3, no reference: no label; answers 4, 5, 4 and one that did not parse
    ("u0", "p3", "J", None, "4", 0.0, None, [0.5], None, -0.10, 1.0),
    ("u1", "p3", "K", None, "5", 0.0, None, [0.5], None, -0.10, 1.0),
    ("u2", "p3", "L", None, "4", 1.0, None, [0.5], None, -0.10, 1.0),
    ("u3", "p3", "M", None, None, 0.0, None, [0.5], None, -0.10, 1.0),
]
REFERENCES = {"p1": "7", "p2": "3", "p3": None}


def frame() -> list[dict]:
    """The table as `scored_candidates` rows; a scorer with no row for a candidate has a null version."""
    rows = []
    for name, prompt, text, label, answer, steps_ok, ms, prm, judge, confidence, prl in TABLE:
        scores = {"verifier": {"label": label, "answer": answer}, "step_verifier": {"value": steps_ok},
                  "math_shepherd": {"steps": ms} if ms is not None else None, "prm": {"steps": prm},
                  "judge": {"value": judge} if judge is not None else None,
                  "confidence": {"value": confidence}, "prl": {"value": prl}}
        row = {"candidate_id": name, "prompt_id": prompt, "iteration": 2, "sample_index": int(name[1]),
               "text": text, "reference_answer": REFERENCES[prompt]}
        for scorer, fields in scores.items():
            row[f"{scorer}__version"] = None if fields is None else "v1"
            for field in ("value", "label", "answer", "steps"):
                row[f"{scorer}__{field}"] = (fields or {}).get(field)
        rows.append(row)
    return rows


EXPECTED = {
    # answer-correct, in sample order
    "keep_correct": {"p1": ["s0", "s1", "s2", "s3", "s5", "s6"], "p2": ["t0", "t1", "t2", "t3"]},
    # the step verifier's value 1.0, whatever the answer
    "all_steps_correct": {"p1": ["s0", "s1", "s3", "s5"], "p2": ["t0", "t2", "t3"], "p3": ["u2"]},
    # answer-correct; p2 solved 4 of 4 is dropped; s1 is s0 normalised; the first 4 of s0 s2 s3 s5 s6
    "rft": {"p1": ["s0", "s2", "s3", "s5"]},
    # referenced prompts pass untouched, then dedup and 4 each (s4 is wrong but passes: p1 has a
    # reference); p3 votes 4 (u0, u2) against 5 (u1), u3 does not vote
    "majority": {"p1": ["s0", "s2", "s3", "s4"], "p2": ["t0", "t1", "t3"], "p3": ["u0", "u2"]},
    # answer-correct with every label above 0: s2 has a 0, s3 was never labelled, t1 has a 0;
    # then s1 and t2 are duplicates
    "rft_mc": {"p1": ["s0", "s5", "s6"], "p2": ["t0", "t3"]},
    # answer-correct, dedup (s1 goes before ranking), the best 4 by the lowest PRM step:
    # s0 0.8, s3 0.6, s5 0.4, s2 0.3, s6 0.2; t0 0.9, t3 0.85, t1 0.2
    "rft_prm": {"p1": ["s0", "s3", "s5", "s2"], "p2": ["t0", "t3", "t1"]},
    # answer-correct, dedup, the best 4 by the judge: s5 0.7, s2 0.6, s3 0.4, s0 0.2, s6 0.1;
    # t3 0.8, t0 0.5, t1 0.3 (s4, never judged, is gone before the judge is read)
    "rft_judge": {"p1": ["s5", "s2", "s3", "s0"], "p2": ["t3", "t0", "t1"]},
    # answer-correct and confidence at least -0.2 (s3 exactly -0.2 stays); no dedup
    "rft_conf": {"p1": ["s0", "s1", "s3", "s5"], "p2": ["t0", "t2", "t3"]},
    # rft's rules without the pass-rate band: p1 s0 s2 s3 s5, p2 t0 t1 t3
    "prl_weighted": {"p1": ["s0", "s2", "s3", "s5"], "p2": ["t0", "t1", "t3"]},
}
# prl_weighted: PRL values clipped to [0, 2] (s3 3.0 -> 2, s5 -0.5 -> 0): 0.5 1.5 2 0 | 1 1 0.5,
# sum 6.5 over 7 samples, each divided by the mean 6.5/7, i.e. times 14/13
PRL_WEIGHTS = {"s0": 7 / 13, "s2": 21 / 13, "s3": 28 / 13, "s5": 0.0, "t0": 14 / 13, "t1": 14 / 13,
               "t3": 7 / 13}


def test_every_preset_has_its_expectation():
    assert set(EXPECTED) == set(PRESETS)


@pytest.mark.parametrize("preset", sorted(EXPECTED))
def test_a_preset_keeps_exactly_its_set_in_its_order(preset):
    rows = apply_policy(frame(), PRESETS[preset])
    got: dict[str, list[str]] = {}
    for row in rows:
        got.setdefault(row["prompt_id"], []).append(row["candidate_id"])
        assert row["rank"] == len(got[row["prompt_id"]]) - 1
        assert (row["policy_name"], row["iteration"]) == (preset, 2)
    assert got == EXPECTED[preset]
    weights = {row["candidate_id"]: row["weight"] for row in rows}
    if preset == "prl_weighted":
        assert weights == pytest.approx(PRL_WEIGHTS)
    else:
        assert set(weights.values()) == {1.0}
