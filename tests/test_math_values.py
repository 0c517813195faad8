"""The exact fast path (`tasks/math_values.decide`) against math-verify, run directly.

Generated answers of every shape the fast path reads (integers, ratios, fractions with roots and
pi, tuples and intervals with infinities, `x = value`, math delimiters, `\\left`/`\\right`) are
paired with equivalent spellings, near values and other shapes; wherever the fast path decides,
its verdict must be math-verify's: `verify(parse(box(gold)), parse(box(prediction)))`.
FLYWHEEL_MATH_FUZZ=N raises the number of generated pairs (default 240 in `make test`).
"""
from __future__ import annotations

import os
import random
from fractions import Fraction

import pytest

from tasks.scoring.math_values import Bracket, Scalar, decide, read_value

PAIRS = int(os.environ.get("FLYWHEEL_MATH_FUZZ", "240"))


def _spell_rational(value: Fraction, rng: random.Random) -> str:
    """One of several spellings of a rational number."""
    sign = "-" if value < 0 else ""
    value = abs(value)
    if value.denominator == 1 and rng.random() < 0.6:
        return sign + str(value.numerator)
    scale = rng.choice([1, 1, 2, 3])
    top, bottom = value.numerator * scale, value.denominator * scale
    form = rng.choice(["\\frac{%d}{%d}", "\\dfrac{%d}{%d}", "\\tfrac{%d}{%d}", "%d/%d"])
    return sign + form % (top, bottom)


def _spell_irrational(coefficient: Fraction, unit: str, rng: random.Random) -> str:
    """coefficient x unit (`\\pi` or `\\sqrt{n}`) in one of several spellings."""
    sign = "-" if coefficient < 0 else ""
    coefficient = abs(coefficient)
    top, bottom = coefficient.numerator, coefficient.denominator
    if unit.startswith("\\sqrt") and rng.random() < 0.3 and bottom == 1:
        radicand = int(unit[6:-1])
        return sign + "\\sqrt{%d}" % (radicand * top * top)  # 2\sqrt{3} as \sqrt{12}
    lead = "" if top == 1 else str(top)
    if bottom == 1:
        return sign + lead + unit
    if rng.random() < 0.5:
        return sign + "\\frac{%s%s}{%d}" % (lead, unit, bottom)
    return sign + "\\frac{%d}{%d}%s" % (top, bottom, unit)


def _random_scalar(rng: random.Random) -> tuple[str, str]:
    """(spelling, other spelling of the same value)."""
    kind = rng.random()
    coefficient = Fraction(rng.randint(-40, 40), rng.choice([1, 1, 2, 3, 4, 7, 12]))
    if kind < 0.45:
        return _spell_rational(coefficient, rng), _spell_rational(coefficient, rng)
    if coefficient == 0:
        coefficient = Fraction(1)
    unit = "\\pi" if kind < 0.7 else "\\sqrt{%d}" % rng.choice([2, 3, 5, 6, 7, 10])
    return _spell_irrational(coefficient, unit, rng), _spell_irrational(coefficient, unit, rng)


def _random_bracket(rng: random.Random) -> tuple[str, str]:
    """A tuple or an interval and another spelling of it."""
    count = rng.choice([2, 2, 2, 3])
    pairs = [_random_scalar(rng) for _ in range(count)]
    if count == 2 and rng.random() < 0.3:
        pairs[rng.randrange(2)] = (("-\\infty", "-\\infty") if rng.random() < 0.5 else ("\\infty", "\\infty"))
    opening, closing = rng.choice("(["), rng.choice(")]")
    left, right = ("\\left" + opening, "\\right" + closing) if rng.random() < 0.3 else (opening, closing)
    comma = rng.choice([", ", ","])
    first = opening + comma.join(p[0] for p in pairs) + closing
    second = left + comma.join(p[1] for p in pairs) + right
    return first, second


def _perturb(text: str, rng: random.Random) -> str:
    """A nearby wrong answer: another number somewhere, swapped items, another bracket."""
    choice = rng.random()
    if choice < 0.3 and text[:1] in "([" and "," in text:
        items = text[1:-1].split(",")
        items.reverse()
        return text[0] + ",".join(items) + text[-1]
    if choice < 0.45 and text[:1] in "([":
        return rng.choice("([") + text[1:-1] + rng.choice(")]")
    digits = [i for i, char in enumerate(text) if char.isdigit()]
    if not digits:
        return text + "+1"
    i = rng.choice(digits)
    return text[:i] + str((int(text[i]) + rng.randint(1, 9)) % 10) + text[i + 1:]


def _dress(text: str, rng: random.Random) -> str:
    """The prediction as a model may write it: delimiters, an equation, spaces."""
    choice = rng.random()
    if choice < 0.15:
        return "$" + text + "$"
    if choice < 0.25 and text[:1] not in "([":
        return rng.choice("xyk") + " = " + text
    if choice < 0.3:
        return "\\(" + text + "\\)"
    return text


def generated_pairs(count: int, seed: int = 0) -> list[tuple[str, str]]:
    """(gold, prediction) pairs: equal spellings, near misses and shape mismatches."""
    rng = random.Random(seed)
    pairs = []
    while len(pairs) < count:
        gold, same = _random_bracket(rng) if rng.random() < 0.4 else _random_scalar(rng)
        roll = rng.random()
        if roll < 0.45:
            prediction = same
        elif roll < 0.85:
            prediction = _perturb(same, rng)
        else:
            prediction = (_random_bracket(rng) if rng.random() < 0.5 else _random_scalar(rng))[0]
        pairs.append((gold, _dress(prediction, rng)))
    return pairs


def _math_verify(gold: str, prediction: str) -> bool:
    from math_verify import parse, verify

    boxed = prediction if prediction.startswith(("$", "\\(")) else "\\boxed{" + prediction + "}"
    return verify(parse("\\boxed{" + gold + "}", parsing_timeout=None), parse(boxed, parsing_timeout=None),
                  timeout_seconds=None)


@pytest.fixture(scope="module")
def decided() -> list[tuple[str, str, bool]]:
    pairs = generated_pairs(PAIRS)
    return [(gold, prediction, verdict) for gold, prediction in pairs
            if (verdict := decide(prediction, gold)) is not None]


def test_the_fast_path_decides_most_generated_pairs(decided):
    assert len(decided) >= 0.6 * PAIRS
    assert sum(verdict for _, _, verdict in decided) >= 0.25 * len(decided)
    assert sum(not verdict for _, _, verdict in decided) >= 0.25 * len(decided)


def test_every_decided_verdict_is_math_verifys(decided):
    disagreements = [(gold, prediction, verdict) for gold, prediction, verdict in decided
                     if _math_verify(gold, prediction) != verdict]
    assert disagreements == []


@pytest.mark.parametrize("gold, prediction, expected", [
    ("\\frac{3}{4}", "\\dfrac{6}{8}", True),
    ("\\frac{3}{4}", "3/4", True),
    ("2\\sqrt{3}", "\\sqrt{12}", True),
    ("\\frac{3\\pi}{2}", "\\frac{3}{2}\\pi", True),
    ("(1, 4]", "\\left(1,4\\right]", True),
    ("(3, -1)", "$(3, -1)$", True),
    ("7", "x = 7", True),
    ("(-\\infty, 8)", "(-\\infty, 8]", False),
    ("(3, -1)", "(-1, 3)", False),
    ("\\frac{3}{4}", "\\frac{4}{3}", False),
    ("\\sqrt{2}", "2", False),
])
def test_hand_written_cases_match_math_verify(gold, prediction, expected):
    assert decide(prediction, gold) is expected
    assert _math_verify(gold, prediction) is expected


@pytest.mark.parametrize("gold, prediction", [
    ("0.75", "\\frac{3}{4}"),          # decimals: math-verify rounds, ask it
    ("50\\%", "\\frac{1}{2}"),         # percentages
    ("\\{1, 2\\}", "\\{2, 1\\}"),      # sets
    ("\\frac{1}{\\sqrt{2}}", "\\frac{\\sqrt{2}}{2}"),  # a root in a denominator
    ("\\frac{1}{3000000}", "\\frac{1}{3000001}"),      # closer than math-verify's rounding
    ("(1, 2)", "1"),                   # shapes that differ
    ("x = 7", "7"),                    # an equation as the reference
])
def test_what_the_fast_path_leaves_to_math_verify(gold, prediction):
    assert decide(prediction, gold) is None


def test_values_are_exact_and_canonical():
    assert read_value("\\sqrt{72}") == Scalar(Fraction(6), "sqrt", 2)
    assert read_value("\\sqrt{16}") == Scalar(Fraction(4))
    assert read_value("-\\frac{6\\pi}{4}") == Scalar(Fraction(-3, 2), "pi")
    assert read_value("[0, \\infty]") == Bracket("[", ")", (Scalar(Fraction(0)), Scalar(Fraction(1), "inf")))
    assert read_value("\\frac{1}{0}") is None
    assert read_value("007") is None
