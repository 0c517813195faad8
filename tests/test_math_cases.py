"""math-verify, used the way its authors use it, against the case table in tests/math_cases.py.

Every case runs `math_verify.verify(math_verify.parse(gold), math_verify.parse(prediction))` with
math-verify's defaults (LatexExtractionConfig + ExprExtractionConfig, boxed priority 50,
float_rounding 6, strict) and must return the case's `expected` verdict. The cases in
`MATH_VERIFY_WRONG` are strict xfails: math-verify must still get them wrong, so the list of known
disagreements stays honest (a math-verify upgrade that fixes one makes its xfail pass, and the
strict xfail then fails until the entry is removed).

math-verify's own timeouts are SIGALRM based; pytest runs tests in the main thread, so they work.
"""
from __future__ import annotations

import collections
import logging

import pytest

from tests.helpers import load_bench
from tests.math_cases import CASES, MATH_VERIFY_WRONG, MathCase

math_verify = pytest.importorskip("math_verify")

MIN_CASES = 150
MIN_PER_KIND = 3


def _math_verify(case: MathCase) -> bool:
    gold = math_verify.parse(case.gold)
    prediction = math_verify.parse(case.prediction)
    return bool(math_verify.verify(gold, prediction))


def _params() -> list:
    params = []
    for index, case in enumerate(CASES):
        marks = ()
        if index in MATH_VERIFY_WRONG:
            marks = pytest.mark.xfail(reason=MATH_VERIFY_WRONG[index], strict=True,
                                      raises=AssertionError)
        params.append(pytest.param(case, marks=marks, id=f"{index:03d}-{case.kind}"))
    return params


@pytest.fixture(autouse=True, scope="module")
def _quiet_math_verify():
    """math-verify logs a warning for every comparison that times out or fails to parse."""
    loggers = [logging.getLogger(name) for name in ("math_verify", "latex2sympy2_extended")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    yield
    for logger, level in zip(loggers, levels):
        logger.setLevel(level)


@pytest.mark.parametrize("case", _params())
def test_math_verify_matches_the_right_verdict(case: MathCase) -> None:
    got = _math_verify(case)
    assert got == case.expected, (
        f"math-verify says {got}, a careful grader says {case.expected} ({case.note or case.kind})"
        f"\n gold: {case.gold!r}\n prediction: {case.prediction!r}")


def test_table_is_large_and_covers_every_kind() -> None:
    assert len(CASES) >= MIN_CASES
    kinds = collections.Counter(case.kind for case in CASES)
    thin = {kind: count for kind, count in kinds.items() if count < MIN_PER_KIND}
    assert not thin, f"kinds with fewer than {MIN_PER_KIND} cases: {thin}"
    for kind in ("gsm8k", "boxed", "prose", "units", "thousands", "percent", "latex-frac",
                 "interval", "set", "tuple", "multi-box", "matrix", "wrong", "garbage"):
        assert kind in kinds, f"no {kind!r} cases"


def test_table_has_both_verdicts_and_no_duplicates() -> None:
    verdicts = collections.Counter(case.expected for case in CASES)
    assert verdicts[True] >= 50 and verdicts[False] >= 50, verdicts
    pairs = collections.Counter((case.gold, case.prediction) for case in CASES)
    assert not [pair for pair, count in pairs.items() if count > 1]
    for case in CASES:
        assert isinstance(case.gold, str) and isinstance(case.prediction, str)
        assert isinstance(case.expected, bool) and case.kind


def test_known_disagreements_are_few_and_explained() -> None:
    assert all(0 <= index < len(CASES) for index in MATH_VERIFY_WRONG)
    assert all(len(reason) > 20 for reason in MATH_VERIFY_WRONG.values())
    assert len(MATH_VERIFY_WRONG) <= len(CASES) // 5, "the known-wrong list should stay short"


def _answer_outputs():
    """bench/answer_outputs.py, loaded by path."""
    return load_bench("answer_outputs")


def test_bench_answer_outputs_are_deterministic_samples_of_a_few_answers() -> None:
    outputs = _answer_outputs()
    for make in (outputs.gsm8k_style, outputs.math_style):
        rows = make(20, n=8, seed=3)
        assert rows == make(20, n=8, seed=3) and rows != make(20, n=8, seed=4)
        assert len(rows) == 160 and len({prompt for prompt, _, _ in rows}) == 20
        assert all(isinstance(part, str) and part for row in rows for part in row)
    for style in ("gsm8k", "math"):
        rows = outputs.samples(style, 100, n=8, seed=0)
        finished = [row for row in rows if row.label != "truncated"]
        assert all(row.text.count("\n") >= 3 for row in finished), "reasoning comes first"
        labels = collections.Counter(row.label for row in rows)
        assert 0.3 < labels["correct"] / len(rows) < 0.7 and labels["wrong"] > 200, labels
        per_prompt = collections.defaultdict(set)
        for row in finished:
            per_prompt[row.prompt_id].add(row.label)
        assert sum(len(kinds) == 2 for kinds in per_prompt.values()) > 50, "mixed verdicts"
