"""Rule-based verifier: answer extraction, comparisons, and the process pool's hard timeouts.

The misbehaving comparison below is reached by worker processes through its import path
(`tests.test_verify:misbehaving_compare`), registered per test with monkeypatch.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest

from tasks.scoring import verify as v
from tasks.scoring.verify import (ComparisonMode, Verdict, Verifier, VerifyItem, compare_exact,
                          extract_answer, normalise_exact, verify_batch)
from tests.helpers import LINEAR_TIME_BOUND_S

MEGABYTE = 1_000_000
TEST_MODE = "test-misbehaving"


def misbehaving_compare(answer: str, reference: str) -> bool:
    """Test-only comparison: hangs, exits, segfaults or raises on request, else exact."""
    if answer == "hang":
        while True:
            time.sleep(0.05)
    if answer == "spin":
        while True:
            pass
    if answer == "exit":
        os._exit(3)
    if answer == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    if answer == "raise":
        raise RuntimeError("boom")
    if answer == "none":
        return None  # type: ignore[return-value]
    return compare_exact(answer, reference)


@pytest.fixture
def test_mode(monkeypatch: pytest.MonkeyPatch) -> str:
    """Register the misbehaving comparison for one test."""
    monkeypatch.setitem(v.COMPARISON_MODES, TEST_MODE,
                        ComparisonMode("tests.test_verify:misbehaving_compare"))
    return TEST_MODE


def demo(answer: str) -> str:
    return f"7+5=12\n12*3=36\n36-4=32\n#### {answer}"


# ---------------------------------------------------------------- extraction


def test_hash_takes_last_marker_and_strips_commas() -> None:
    assert extract_answer(demo("32")) == "32"
    assert extract_answer("#### 1\nmore\n  ####  1,234,567  \n") == "1234567"
    assert extract_answer("x #### 5\n#### 6") == "6"
    assert extract_answer("inline x #### 5") is None  # not at a line start
    assert extract_answer("####   \n") is None
    assert extract_answer("#### 1,2") == "1,2"  # not thousands grouping: left alone


def test_boxed_balanced_nested_last() -> None:
    assert extract_answer(r"so \boxed{\frac{1}{2}} done") == r"\frac{1}{2}"
    assert extract_answer(r"\boxed{1} then \boxed{ 2 }") == "2"
    assert extract_answer(r"\boxed{\{1,2\}}") == r"\{1,2\}"
    assert extract_answer(r"\boxed{\frac{1}{2}", ["boxed"]) is None  # unbalanced
    assert extract_answer(r"\boxed{1} and \boxed{2", ["boxed"]) is None  # the last one counts
    assert extract_answer(r"\boxed{}", ["boxed"]) is None


def test_answer_is_case_insensitive_trailing_period() -> None:
    assert extract_answer("So The Answer Is 42.") == "42"
    assert extract_answer("the answer is 1, no: the answer is: $7$.\nbye") == "7"
    assert extract_answer("The final answer is \\frac{3}{4}") == "\\frac{3}{4}"
    assert extract_answer("the answer is .") is None


def test_extractor_order_and_validation() -> None:
    text = "the answer is 5\n\\boxed{6}\n#### 7"
    assert extract_answer(text) == "7"
    assert extract_answer(text, ["boxed", "hash"]) == "6"
    assert extract_answer(text, ["answer_is"]) == "5"
    assert extract_answer("nothing here") is None
    with pytest.raises(ValueError, match="unknown answer extractor 'latex'"):
        extract_answer(text, ["hash", "latex"])
    with pytest.raises(ValueError, match="not the string"):
        extract_answer(text, "hash")


@pytest.mark.parametrize("text", [
    "\\boxed{" + "{" * MEGABYTE,
    " " * MEGABYTE + "x",
    "#" * MEGABYTE,
    " ####" * (MEGABYTE // 5),
    "the answer is " * (MEGABYTE // 14),
    "\\boxed{" * (MEGABYTE // 7),
    "\\" * MEGABYTE,
])
def test_extraction_is_linear_on_a_megabyte(text: str) -> None:
    start = time.perf_counter()
    extract_answer(text)
    assert time.perf_counter() - start < LINEAR_TIME_BOUND_S  # about 0.05-0.4 s when idle; quadratic would be hours


# ---------------------------------------------------------------- exact comparison


def test_normalise_exact() -> None:
    assert normalise_exact(" 032 ") == "32"
    assert normalise_exact("-0") == "0"
    assert normalise_exact("+5") == "5"
    assert normalise_exact("-007") == "-7"
    assert normalise_exact("1,234") == "1234"
    assert normalise_exact("3.50") == "3.50"
    assert normalise_exact("\u0663\u0662") == "\u0663\u0662"  # non-ASCII digits are not integers
    assert normalise_exact("0" + "9" * 5000) == "9" * 5000  # no int() digit limit


def test_compare_exact() -> None:
    assert compare_exact("032", "32")
    assert compare_exact("-0", "0")
    assert compare_exact("1,234", "1234")
    assert not compare_exact("32.0", "32")
    assert not compare_exact("33", "32")


# ---------------------------------------------------------------- verify_batch, exact mode


def test_verify_batch_exact_labels_in_order() -> None:
    items = [VerifyItem(demo("32"), "32"), VerifyItem(demo("31"), "32"),
             VerifyItem("7+5=12", "32"), VerifyItem("#### 032", "32"), VerifyItem("", "1"),
             VerifyItem("the answer is -0.", "0")]
    verdicts = verify_batch(items, chunk_size=2)
    assert verdicts == [
        Verdict("correct", 1.0, "32", None),
        Verdict("incorrect", 0.0, "31", None),
        Verdict("unparseable", None, None, "no final answer found (extractors: hash, boxed, answer_is, answer_line)"),
        Verdict("correct", 1.0, "032", None),
        Verdict("unparseable", None, None, "no final answer found (extractors: hash, boxed, answer_is, answer_line)"),
        Verdict("correct", 1.0, "-0", None),
    ]
    from schemas.scores import LABELS  # here, not at the top: workers import this module

    assert {d.label for d in verdicts} <= set(LABELS)
    assert verify_batch([]) == []


def test_bad_input_raises_before_any_work() -> None:
    before = len(multiprocessing.active_children())
    with pytest.raises(ValueError, match="^item 1: reference is None$"):
        verify_batch([VerifyItem("#### 1", "1"), VerifyItem("#### 1", None)])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="^item 0: reference is empty$"):
        verify_batch([VerifyItem("#### 1", "  ")])
    with pytest.raises(ValueError, match="^item 0: reference is not valid UTF-8$"):
        verify_batch([VerifyItem("#### 1", "1\udcff")])
    with pytest.raises(TypeError, match="^item 0: text must be str, got bytes$"):
        verify_batch([VerifyItem(b"#### 1", "1")])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown comparison mode 'fuzzy'"):
        verify_batch([VerifyItem("#### 1", "1")], mode="fuzzy")
    with pytest.raises(ValueError, match="unknown answer extractor 'nope'"):
        verify_batch([VerifyItem("#### 1", "1")], extractors=["nope"])
    assert len(multiprocessing.active_children()) == before


def test_pathological_exact_inputs() -> None:
    surrogate = b"#### 3\xff".decode("utf-8", "surrogateescape")
    replaced = b"#### 3\xff".decode("utf-8", "replace")
    items = [VerifyItem(surrogate, "3"), VerifyItem(replaced, "3"),
             VerifyItem("\\boxed{" + "1" * MEGABYTE + "}", "1"),
             VerifyItem("x" * MEGABYTE, "1"), VerifyItem("", "1"),
             VerifyItem("\\boxed{9^{9^{9^{9}}}}", "1")]
    got = verify_batch(items, timeout_s=2.0)
    assert [(d.label, d.detail) for d in got] == [
        ("unparseable", "answer is not valid UTF-8"),
        ("unparseable", "answer contains U+FFFD (undecodable bytes in the text)"),
        ("unparseable", "answer longer than 1000 characters"),
        ("unparseable", "no final answer found (extractors: hash, boxed, answer_is, answer_line)"),
        ("unparseable", "no final answer found (extractors: hash, boxed, answer_is, answer_line)"),
        ("incorrect", None),
    ]
    assert got[0].extracted_answer == "3\ufffd"
    assert got[2].extracted_answer == "1" * 1000


# ---------------------------------------------------------------- hangs and crashes


def test_hang_ends_as_timeout_and_the_rest_is_verified(test_mode: str) -> None:
    items = [VerifyItem(f"#### {a}", "1") for a in ["1", "2", "hang", "1", "spin", "1", "2", "1"]]
    with Verifier(test_mode, timeout_s=1.0, workers=2, chunk_size=4) as verifier:
        start = time.perf_counter()
        got = verifier.verify(items)
        elapsed = time.perf_counter() - start
        stats = dict(verifier.stats)
    assert [d.label for d in got] == ["correct", "incorrect", "timeout", "correct", "timeout",
                                      "correct", "incorrect", "correct"]
    assert got[2] == Verdict("timeout", None, None, "verification exceeded the 1 s timeout")
    assert stats == {"timeouts": 2, "crashes": 0, "restarts": 2}
    assert 1.0 <= elapsed < 4.0  # both hangs run side by side: about 1 s plus a restart


def test_crash_is_never_incorrect_and_does_not_stop_the_batch(test_mode: str) -> None:
    answers = ["1"] * 5 + ["exit"] + ["1"] * 5 + ["segv", "raise", "none", "2"]
    items = [VerifyItem(f"#### {a}", "1") for a in answers]
    with Verifier(test_mode, timeout_s=2.0, workers=2, chunk_size=8) as verifier:
        got = verifier.verify(items)
        stats = dict(verifier.stats)
        again = verifier.verify(items[:3])  # the pool is still usable
    labels = [d.label for d in got]
    assert labels == ["correct"] * 5 + ["unparseable"] + ["correct"] * 5 + [
        "unparseable", "unparseable", "unparseable", "incorrect"]
    assert got[5].detail == "verifier worker died (exit code 3) while checking this item"
    assert got[11].detail == f"verifier worker died (exit code {-signal.SIGSEGV}) while checking this item"
    assert got[12].detail == "comparison failed: RuntimeError: boom"
    assert got[13].detail == "comparison returned NoneType, not bool"
    assert stats["crashes"] == 4  # each crash seen once in its chunk, then confirmed alone
    assert [d.label for d in again] == ["correct"] * 3


def test_comparison_that_cannot_load_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(v.COMPARISON_MODES, "broken", ComparisonMode("tests.no_such_module:f"))
    with pytest.raises(RuntimeError, match="could not load mode 'broken'.*No module named"):
        verify_batch([VerifyItem("#### 1", "1")], mode="broken")


# ---------------------------------------------------------------- math mode


@pytest.fixture(scope="module")
def math_verifier():
    with Verifier("math", timeout_s=2.0, workers=2) as verifier:
        yield verifier


def test_math_equivalences(math_verifier: Verifier) -> None:
    cases = [
        (r"so \boxed{\frac{1}{2}}", "0.5", "correct"),
        (r"\boxed{\sqrt{2}/2}", r"\frac{\sqrt{2}}{2}", "correct"),
        (r"\boxed{[0,1)}", "[0, 1)", "correct"),
        (r"\boxed{(0,1]}", "[0, 1)", "incorrect"),
        ("#### 1,234", "1234", "correct"),
        ("The answer is $x+1$.", "1+x", "correct"),
        (r"\boxed{3}", "4", "incorrect"),
        ("no answer", "4", "unparseable"),
    ]
    got = math_verifier.verify([VerifyItem(text, ref) for text, ref, _ in cases])
    assert [d.label for d in got] == [label for _, _, label in cases]
    assert got[0].extracted_answer == r"\frac{1}{2}"


def test_math_unparseable_reference_and_answer(math_verifier: Verifier) -> None:
    got = math_verifier.verify([VerifyItem(r"\boxed{1}", r"\frac{1}{"),
                                VerifyItem("the answer is }{", "1")])
    assert [(d.label, d.detail) for d in got] == [
        ("unparseable", "reference has unbalanced braces"),
        ("unparseable", "answer has unbalanced braces"),
    ]


def test_math_pathological_answers_end_within_the_bound(math_verifier: Verifier) -> None:
    items = [
        VerifyItem(r"\boxed{9^{9^{9^{9}}}}", "1"),
        VerifyItem(r"\boxed{" + "(" * 200 + "1" + ")" * 200 + "}", "1"),
        VerifyItem(r"\boxed{" + r"\frac{1}{" * 60 + "2" + "}" * 60 + "}", "1"),
        VerifyItem(r"\boxed{" + "1" * MEGABYTE + "}", "1"),
        VerifyItem(b"\\boxed{\xff}".decode("utf-8", "surrogateescape"), "1"),
        VerifyItem(b"\\boxed{1\xff}".decode("utf-8", "replace"), "1"),
        VerifyItem("", "1"),
        VerifyItem(r"\boxed{1}", "1"),
    ]
    start = time.perf_counter()
    got = math_verifier.verify(items)
    elapsed = time.perf_counter() - start
    assert [(d.label, d.detail) for d in got] == [
        ("timeout", "verification exceeded the 2 s timeout"),
        ("unparseable", "answer nests brackets more than 50 deep"),
        ("unparseable", "answer nests brackets more than 50 deep"),
        ("unparseable", "answer longer than 1000 characters"),
        ("unparseable", "answer is not valid UTF-8"),
        ("unparseable", "answer contains U+FFFD (undecodable bytes in the text)"),
        ("unparseable", "no final answer found (extractors: hash, boxed, answer_is, answer_line)"),
        ("correct", None),
    ]
    assert elapsed < 6.0  # one 2 s timeout, a restart beside it


@pytest.mark.parametrize("text, answer", [
    ("So she pays 48 dollars.\n**Answer:** 48\n\nLet me know if you have questions.", "48"),
    ("Answer: 42.", "42"),
    ("Final answer: $\\frac{3}{4}$", "\\frac{3}{4}"),
    ("answer: 1\nwork...\nAnswer: 2", "2"),
    ("The answers: none here", None),
    ("My answer:", None),
])
def test_the_answer_line_extractor_reads_the_last_answer_line(text, answer):
    assert extract_answer(text, ["answer_line"]) == answer
