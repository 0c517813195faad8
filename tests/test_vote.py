"""Majority vote: normalisation, tie rule, unparseable answers, weights, shares, bad input."""
from __future__ import annotations

import itertools
import math

import pytest

from tasks.scoring.vote import majority_answer, normalize_answer, vote_shares


@pytest.mark.parametrize("raw, expected", [
    (" 7 ", "7"), ("007", "7"), ("+7", "7"), ("-7", "-7"), ("-007", "-7"), ("-0", "0"),
    ("+0", "0"), ("000", "0"), ("\t12\n", "12"), ("7.0", "7"), ("x = 7", "x = 7"),
])
def test_normalize_answer(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


def test_plain_majority_and_normalised_form() -> None:
    assert majority_answer(["3", " 4", "4 ", "3", "04"]) == "4"
    assert majority_answer(["-0", "0", "5"]) == "0"


def test_tie_goes_to_earliest_first_occurrence() -> None:
    # "9" and "2" both have two votes; "9" first appears at index 0.
    assert majority_answer(["9", "2", "2", "9"]) == "9"
    assert majority_answer(["2", "9", "9", "2"]) == "2"
    # three-way tie with the earliest answer repeated last
    assert majority_answer(["5", "6", "7"]) == "5"


def test_unparseable_does_not_vote() -> None:
    # None at index 0 does not make any answer earlier; three Nones do not outvote "8".
    assert majority_answer([None, None, None, "8"]) == "8"
    assert majority_answer([None, "2", "1", "1", None, "2"]) == "2"
    assert majority_answer([None, None]) is None
    assert majority_answer([]) is None


def test_weighted_majority_flips_plain_majority() -> None:
    answers = ["1", "1", "2"]
    assert majority_answer(answers) == "1"
    assert majority_answer(answers, [0.1, 0.1, 0.9]) == "2"
    # weighted tie: 0.5 + 0.5 = 1.0 == 1.0, earliest first occurrence ("1") wins
    assert majority_answer(answers, [0.5, 0.5, 1.0]) == "1"


def test_weighted_none_answer_and_none_weight_do_not_vote() -> None:
    # the heavy weight sits on an unparseable answer; "3" has no score, so "4" wins
    assert majority_answer([None, "3", "4"], [100.0, None, 0.2]) == "4"
    assert majority_answer(["3"], [None]) is None


def _reference_majority(answers: list[str | None]) -> str | None:
    counts: dict[str, int] = {}
    for answer in answers:
        if answer is not None:
            counts[answer] = counts.get(answer, 0) + 1
    if not counts:
        return None
    top = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == top)


def test_majority_matches_reference_on_all_short_sequences() -> None:
    alphabet = ["1", "2", "3", None]
    for length in range(6):
        for answers in itertools.product(alphabet, repeat=length):
            assert majority_answer(list(answers)) == _reference_majority(list(answers)), answers


def test_vote_shares() -> None:
    assert vote_shares(["1", None, "2", "1", " 1"]) == {"1": 0.75, "2": 0.25}
    shares = vote_shares(["1", "2", "2"], [3.0, 0.5, 0.5])
    assert list(shares) == ["1", "2"]
    assert shares["1"] == pytest.approx(0.75) and shares["2"] == pytest.approx(0.25)
    assert vote_shares([None]) == {}
    with pytest.raises(ValueError, match="total vote weight is 0"):
        vote_shares(["1", "2"], [0.0, 0.0])


@pytest.mark.parametrize("bad, message", [
    (math.nan, "weight at index 1 is nan, not finite"),
    (math.inf, "weight at index 1 is inf, not finite"),
    (-0.5, "weight at index 1 is -0.5, negative"),
    ("1", "weight at index 1 is '1', not a number"),
])
def test_bad_weights_name_the_index(bad: object, message: str) -> None:
    # checked even where the answer does not vote
    with pytest.raises(ValueError, match=message):
        majority_answer(["1", None, "2"], [1.0, bad, 1.0])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=message):
        vote_shares(["1", None, "2"], [1.0, bad, 1.0])  # type: ignore[list-item]


def test_bad_answers_and_lengths() -> None:
    with pytest.raises(ValueError, match="got 2 weights for 3 answers"):
        majority_answer(["1", "2", "3"], [1.0, 1.0])
    with pytest.raises(ValueError, match="answer at index 1 is empty"):
        majority_answer(["1", "  "])
    with pytest.raises(ValueError, match="answer at index 0 is 7, not a string"):
        majority_answer([7])  # type: ignore[list-item]


# ---------------------------------------------------------------- ORM-weighted majority in selection


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _vote_frame() -> list[dict]:
    """Two reference-free prompts voted on by ORM logits (negative ones included)."""
    specs = {  # prompt -> [(answer, orm logit)] in sample order
        # "7": 3 x sigmoid(-0.5) = 1.1326 beats "9": sigmoid(2.0) = 0.8808 (raw or ReLU'd logits
        # would elect "9"; so would exp)
        "p": [("7", -0.5), ("7", -0.5), ("9", 2.0), ("7", -0.5)],
        # "9": sigmoid(1.0) = 0.7311 beats "7": 2 x sigmoid(-2.0) = 0.2384 (plain majority: "7");
        # a null ORM value does not vote
        "q": [("7", -2.0), ("7", -2.0), ("9", 1.0), ("7", None)],
    }
    rows = []
    for prompt, samples in specs.items():
        for index, (answer, logit) in enumerate(samples):
            rows.append({"candidate_id": f"{prompt}{index}", "prompt_id": prompt, "iteration": 0,
                         "sample_index": index, "text": f"{prompt}{index}", "reference_answer": None,
                         "verifier__version": "1", "verifier__answer": answer,
                         "orm__version": "1", "orm__value": logit})
    return rows


def test_orm_weighted_majority_in_selection_uses_the_sigmoid_of_logits() -> None:
    from schemas.policy import MajorityPseudoLabel, ScoreRef, SelectionPolicy
    from tasks.selection.best_of_n import orm_vote_weight
    from tasks.selection.select import apply_policy

    frame = _vote_frame()
    # the hand computation the comments above rely on
    assert 3 * _sigmoid(-0.5) > _sigmoid(2.0) and _sigmoid(1.0) > 2 * _sigmoid(-2.0)
    for row in frame:  # the same bounded weight best-of-N votes with
        if row["orm__value"] is not None:
            assert orm_vote_weight(row["orm__value"]) == pytest.approx(_sigmoid(row["orm__value"]))
    policy = SelectionPolicy(name="w", steps=[
        MajorityPseudoLabel(weight=ScoreRef(scorer="orm"), referenced="vote")])
    kept = [(r["candidate_id"], r["rank"], r["weight"]) for r in apply_policy(frame, policy)]
    assert kept == [("p0", 0, 1.0), ("p1", 1, 1.0), ("p3", 2, 1.0), ("q2", 0, 1.0)]


@pytest.mark.parametrize("spellings", [
    [" 007", "+7", "7.0", "７", "7", "$7$", "7.000"],
    ["1,000", "1000", "1000.0", "１０００"],
    ["-0", "0", "0.00", "+0"],
    ["2.50", "2.5"],
])
def test_spellings_of_one_number_are_one_answer(spellings):
    assert len({normalize_answer(s) for s in spellings}) == 1


def test_different_answers_stay_apart():
    assert len({normalize_answer(s) for s in ["7", "-7", "7.5", "70", "x=7", "$"]}) == 6


def _maj(labels_answers: list[tuple[str, str]], k: int) -> float:
    from tasks.evaluation.evaluate import verified_sample
    from tasks.evaluation.metrics import evaluate_groups

    verdicts = {f"c{i}": {"label": label, "extracted_answer": answer} for i, (label, answer) in enumerate(labels_answers)}
    group = [verified_sample(f"c{i}", verdicts, None, {}) for i in range(len(labels_answers))]
    values = evaluate_groups({"p": group}, [k], n_boot=10)
    return next(v.value for v in values if v.metric == "maj" and v.k == k)


def test_wrong_answers_spelled_apart_vote_together():
    # reference 5: "1,000" and "1000" are one wrong answer with two votes, which beats the one right vote
    assert _maj([("correct", "5"), ("incorrect", "1,000"), ("incorrect", "1000")], 3) == 0.0


def test_answers_the_verifier_judged_correct_vote_together():
    # math mode judged 18.0, 18 and \frac{36}{2} equal to the reference: three votes against two for 17
    samples = [("incorrect", "17"), ("correct", "18.0"), ("incorrect", "17"), ("correct", "\\frac{36}{2}"),
               ("correct", "18")]
    assert _maj(samples, 5) == 1.0


def test_no_answer_stops_an_evaluation():
    samples = [("correct", "７"), ("incorrect", "$"), ("incorrect", "８"), ("correct", "7"), ("unparseable", None)]
    assert _maj(samples, 5) == 1.0
