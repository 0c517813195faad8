"""The math verifier against math-verify on the case table, user-defined extractors, all boxes."""
from __future__ import annotations

import pytest

from tasks.scoring.verify import CORRECT, INCORRECT, MathSettings, VerifyItem, check_extractors, verify_batch
from tests.math_cases import CASES, MATH_VERIFY_WRONG

# Cases where math-verify (defaults) is wrong and Flywheel is still wrong too, with why.
BOTH_WRONG = {
    11: "a base model's next question after '#### 8': the last '####' line is read",
    23: "a boxed guess inside <think> wins over the plain-text answer after it (boxed comes first)",
    32: "no anchor: the rightmost number of the text, as math-verify reads it",
    33: "no anchor: the rightmost number of the text, as math-verify reads it",
    34: "number words are not read",
    77: "an escaped dollar in prose leaves no answer",
    80: "\\text{\\$} inside a box does not parse",
    93: "'1.000' is a decimal here, never a German thousands separator (ambiguous)",
    126: "mixed numbers '2 1/2' are not read",
    127: "repeating decimals do not parse",
    150: "plain-text sqrt(2) is not read",
    166: "a scientific reference is not equal to its written-out integer under math-verify's precision",
    185: "an inequality answer to an interval reference",
    204: "\\varnothing is not \\emptyset",
    216: "a set answer to a tuple reference is accepted, as math-verify does",
    262: "letters are not extracted (StringExtractionConfig is off by default, as in math-verify)",
    266: "a truncated '9 * 2.' is read as 18, as math-verify does",
}


@pytest.fixture(scope="module")
def verdicts() -> list[str]:
    items = [VerifyItem(case.prediction, case.gold) for case in CASES]
    return [v.label for v in verify_batch(items, mode="math", timeout_s=10, workers=2)]


def test_the_table_is_large_enough():
    assert len(CASES) >= 150


def test_agrees_with_the_right_verdict_wherever_math_verify_is_right(verdicts):
    wrong = [(i, CASES[i].kind, CASES[i].prediction[-60:]) for i, label in enumerate(verdicts)
             if i not in MATH_VERIFY_WRONG and (label == CORRECT) != CASES[i].expected]
    assert wrong == []


def test_the_deliberate_differences_are_exactly_the_documented_ones(verdicts):
    ours_wrong = {i for i, label in enumerate(verdicts) if (label == CORRECT) != CASES[i].expected}
    assert ours_wrong == set(BOTH_WRONG)
    fixed = set(MATH_VERIFY_WRONG) - ours_wrong  # math-verify wrong, Flywheel right (units, locales, ...)
    assert len(fixed) >= 8


def test_prose_units_and_spaced_thousands_that_math_verify_misreads_inside_a_box():
    items = [VerifyItem("The answer is 18 dollars.", "18"), VerifyItem("#### 18 dollars", "18"),
             VerifyItem("\\boxed{1 000}", "1000"), VerifyItem("$$ 9 $$", "9"), VerifyItem("Answer $ 9 $", "9"),
             VerifyItem("the answer is １８", "18"), VerifyItem("#### 17 dollars", "18")]
    labels = [v.label for v in verify_batch(items, mode="math", workers=1)]
    assert labels == [CORRECT] * 6 + [INCORRECT]


def test_every_box_counts_where_the_reference_is_a_set_of_tuples():
    text = "the pairs are \\boxed{(2, 2)} and \\boxed{(6, 2)}"
    (one,) = verify_batch([VerifyItem(text, "(2, 2), (6, 2)")], mode="math", workers=1)
    assert one.label == CORRECT
    (single,) = verify_batch([VerifyItem("first \\boxed{3} then \\boxed{4}", "4")], mode="math", workers=1)
    assert single.label == CORRECT  # a single-valued reference reads the last box


def test_a_regex_extractor_reads_an_a_line_first_or_last():
    text = "A: 41\nwait, recompute\nA: 42"
    last = ("regex", r"(?m)^A:\s*(.+)$", "last")
    first = ("regex", r"(?m)^A:\s*(.+)$", "first")
    for mode in ("exact", "math"):
        (a,) = verify_batch([VerifyItem(text, "42")], mode=mode, extractors=[last], workers=1)
        (b,) = verify_batch([VerifyItem(text, "42")], mode=mode, extractors=[first, "hash"], workers=1)
        assert (a.label, a.extracted_answer, b.label, b.extracted_answer) == (CORRECT, "42", INCORRECT, "41")


@pytest.mark.parametrize("extractor, message", [
    (("regex", "(unclosed", "last"), "does not compile"),
    (("regex", r"A: \d+", "last"), "exactly one capturing group"),
    (("regex", r"(a)(b)", "last"), "exactly one capturing group"),
    (("regex", r"(a)", "middle"), "'first' | 'last'"),
    ("sum", "unknown answer extractor 'sum'"),
])
def test_bad_extractors_are_one_line_errors(extractor, message):
    with pytest.raises(ValueError, match=message) as error:
        check_extractors([extractor])
    assert "\n" not in str(error.value)


def test_math_settings_reach_the_workers():
    items = [VerifyItem("#### 0.3333", "1/3"), VerifyItem("#### 0.333333", "1/3")]
    default = [v.label for v in verify_batch(items, mode="math", workers=1)]
    coarse = [v.label for v in verify_batch(items, mode="math", workers=1,
                                             math_settings=MathSettings(float_rounding=4))]
    assert default == [INCORRECT, CORRECT] and coarse == [CORRECT, CORRECT]


def test_extractors_and_math_settings_in_a_loop_config_are_typed_and_versioned():
    from schemas.config import parse_config
    from schemas.loop import ScoringStage, extractor_specs
    from tasks.scoring.score import VerifierScorer

    stage = parse_config({"verifier_mode": "math", "extractors": ["hash", {"regex": r"(?m)^A:\s*(.+)$"}],
                          "math": {"float_rounding": 4}}, ScoringStage)
    specs = extractor_specs(stage.extractors)
    assert specs == ("hash", ("regex", r"(?m)^A:\s*(.+)$", "last"))
    plain = VerifierScorer("math", specs)
    coarse = VerifierScorer("math", specs, math_settings=MathSettings(**stage.math.model_dump()))
    assert plain.version != coarse.version and "regex[last]" in plain.version
    with pytest.raises(ValueError, match="exactly one capturing group") as error:
        parse_config({"extractors": [{"regex": "A: .+"}]}, ScoringStage)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="extractors"):
        parse_config({"extractors": ["sum"]}, ScoringStage)
