"""Exact values of the common shapes of math answers, to give math-verify's verdict without
parsing LaTeX.

math-verify parses LaTeX with an ANTLR grammar, about 50 ms an answer on this kind of machine,
while most answers of a math task take a handful of shapes: integers, fractions, square roots,
multiples of pi, tuples and intervals of those, `x = value`. `decide(answer, reference)` reads
both sides in that small grammar into exact values and returns the verdict math-verify gives
(reference as gold), or None whenever it is not certain of it: anything outside the grammar,
decimals, percentages, sets, shapes that differ, values closer than math-verify's rounding.
The differential test (`tests/test_math_values.py`) checks every decided verdict against
math-verify itself over generated answers of every shape the grammar reads.

The grammar, after spaces and `\\left` / `\\right` are dropped and one pair of enclosing math
delimiters (`$...$`, `$$...$$`, `\\(...\\)`, `\\[...\\]`) is removed:
  value    := scalar | bracket | letter "=" scalar          (the equation on the answer side)
  bracket  := ("(" | "[") item ("," item)+ (")" | "]")     item := scalar | ["-"] "\\infty"
  scalar   := ["-"] (fraction | integer "/" integer | product)
  fraction := ("\\frac" | "\\dfrac" | "\\tfrac") "{" product "}" "{" product "}" [irrational]
  product  := [integer] [irrational]  (not empty)            irrational := "\\sqrt{" integer "}" | "\\pi"
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction

RATIONAL, SQRT, PI, INFINITY = "1", "sqrt", "pi", "inf"
_MAX_DIGITS = 30
_MAX_RADICAND = 10**8


@dataclass(frozen=True)
class Scalar:
    """coefficient x (1 | sqrt(radicand) | pi), or coefficient x infinity (coefficient +-1)."""

    coefficient: Fraction
    kind: str = RATIONAL
    radicand: int = 1

    def approximate(self) -> float:
        """The value as a float (infinities as float infinities)."""
        unit = {RATIONAL: 1.0, SQRT: math.sqrt(self.radicand), PI: math.pi, INFINITY: math.inf}[self.kind]
        return float(self.coefficient) * unit


@dataclass(frozen=True)
class Bracket:
    """A tuple or an interval as written: its bracket characters and its items."""

    opening: str
    closing: str
    items: tuple[Scalar, ...]


_IRRATIONAL = r"\\sqrt\{\d+\}|\\pi"
_PRODUCT = re.compile(rf"(\d*)({_IRRATIONAL})?")
_FRACTION = re.compile(rf"\\[dt]?frac\{{((?:[^{{}}]|\{{\d+\}})*)\}}\{{((?:[^{{}}]|\{{\d+\}})*)\}}((?:{_IRRATIONAL})?)")
_RATIO = re.compile(r"(\d+)/(\d+)")
_EQUATION = re.compile(r"([A-Za-z])=([^=<>]+)")
_DELIMITERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_LAYOUT = re.compile(r"\s+|\\left(?=[(\[])|\\right(?=[)\]])")


def _integer(digits: str) -> int | None:
    """A written integer without leading zeros and of sensible length, else None."""
    if not digits or len(digits) > _MAX_DIGITS or (digits[0] == "0" and len(digits) > 1):
        return None
    return int(digits)


def _square_root(radicand: int) -> Scalar | None:
    """sqrt(n) as coefficient x sqrt(square-free part)."""
    if radicand > _MAX_RADICAND:
        return None
    outside, inside, factor = 1, radicand, 2
    while factor * factor <= inside:
        while inside % (factor * factor) == 0:
            inside //= factor * factor
            outside *= factor
        factor += 1
    if inside in (0, 1):
        return Scalar(Fraction(outside * inside))
    return Scalar(Fraction(outside), SQRT, inside)


def _product(text: str) -> Scalar | None:
    """`[integer][\\sqrt{n} | \\pi]`, not empty."""
    match = _PRODUCT.fullmatch(text)
    if not match or not text:
        return None
    digits, irrational = match.groups()
    coefficient = _integer(digits) if digits else 1
    if coefficient is None:
        return None
    if irrational is None:
        return Scalar(Fraction(coefficient))
    unit = Scalar(Fraction(1), PI) if irrational == "\\pi" else _square_root(int(irrational[6:-1]))
    return _times(Scalar(Fraction(coefficient)), unit) if unit else None


def _times(a: Scalar, b: Scalar) -> Scalar | None:
    """The product of two scalars when at most one is irrational."""
    if a.kind != RATIONAL and b.kind != RATIONAL:
        return None
    kind, radicand = (b.kind, b.radicand) if a.kind == RATIONAL else (a.kind, a.radicand)
    coefficient = a.coefficient * b.coefficient
    return Scalar(coefficient) if coefficient == 0 else Scalar(coefficient, kind, radicand)


def _scalar(text: str) -> Scalar | None:
    """A signed number of the grammar's `scalar` shape."""
    negative = text.startswith("-")
    body = text[1:] if negative else text
    if (fraction := _FRACTION.fullmatch(body)) is not None:
        numerator, denominator = _product(fraction.group(1)), _product(fraction.group(2))
        if numerator is None or denominator is None or denominator.kind != RATIONAL or not denominator.coefficient:
            return None
        value = Scalar(numerator.coefficient / denominator.coefficient, numerator.kind, numerator.radicand)
        if fraction.group(3):
            tail = _product(fraction.group(3))
            value = _times(value, tail) if tail else None
    elif (ratio := _RATIO.fullmatch(body)) is not None:
        top, bottom = _integer(ratio.group(1)), _integer(ratio.group(2))
        if top is None or not bottom:
            return None
        value = Scalar(Fraction(top, bottom))
    else:
        value = _product(body)
    if value is None:
        return None
    return Scalar(-value.coefficient, value.kind, value.radicand) if negative else value


def _item(text: str) -> Scalar | None:
    """A bracket's item: a scalar or a signed infinity."""
    if text in ("\\infty", "-\\infty"):
        return Scalar(Fraction(-1 if text[0] == "-" else 1), INFINITY)
    return _scalar(text)


def _strip(text: str) -> str:
    """The text without layout and without one pair of enclosing math delimiters."""
    text = text.strip()
    for opening, closing in _DELIMITERS:
        if len(text) > len(opening) + len(closing) and text.startswith(opening) and text.endswith(closing):
            inner = text[len(opening):-len(closing)]
            if "$" not in inner and "\\(" not in inner and "\\[" not in inner:
                text = inner
            break
    return _LAYOUT.sub("", text)


def read_value(text: str, equation: bool = False) -> Scalar | Bracket | None:
    """The exact value of an answer or reference in the grammar above, else None; `equation`
    also reads `x = value` as its right-hand side (math-verify's reading of an answer whose
    reference is not an equation)."""
    text = _strip(text)
    if equation and (match := _EQUATION.fullmatch(text)) is not None:
        text = match.group(2)
    if text[:1] in ("(", "[") and text[-1:] in (")", "]"):
        inner = text[1:-1]
        if any(char in inner for char in "()[]"):
            return None
        items = [_item(part) for part in inner.split(",")]
        if len(items) < 2 or any(item is None for item in items):
            return None
        opening, closing = text[0], text[-1]
        if any(item.kind == INFINITY for item in items):  # type: ignore[union-attr]
            if len(items) != 2 or items[0].approximate() >= items[1].approximate():  # type: ignore[union-attr]
                return None  # sympy reads a reversed interval as the empty set
            # an interval is open at an infinite end however it is written, as in sympy
            opening = "(" if items[0].kind == INFINITY else opening  # type: ignore[union-attr]
            closing = ")" if items[1].kind == INFINITY else closing  # type: ignore[union-attr]
        return Bracket(opening, closing, tuple(items))  # type: ignore[arg-type]
    if "infty" in text:
        return None
    return _scalar(text)


def _apart(a: Scalar, b: Scalar, margin: float) -> bool:
    """Whether two unequal finite scalars differ by more than math-verify's rounding can hide."""
    x, y = a.approximate(), b.approximate()
    return abs(x - y) > margin * max(1.0, abs(x), abs(y))


def _ordered_pair_or_interval_known(bracket: Bracket) -> bool:
    """Whether math-verify's reading of a two-item bracket (interval or tuple) is unambiguous
    enough to compare by items: round brackets, or increasing finite/infinite ends."""
    if len(bracket.items) != 2:
        return bracket.opening == "(" and bracket.closing == ")"
    low, high = (item.approximate() for item in bracket.items)
    return (bracket.opening == "(" and bracket.closing == ")") or low < high


def decide(answer: str, reference: str, float_rounding: int = 6) -> bool | None:
    """math-verify's verdict on `answer` against `reference` (gold) when both are in the grammar
    and the verdict is certain; None when math-verify must be asked."""
    gold = read_value(reference)
    if gold is None:
        return None
    pred = read_value(answer, equation=True)
    if pred is None:
        return None
    margin = 10.0 * 10.0 ** -min(float_rounding, 6)
    if isinstance(gold, Scalar) and isinstance(pred, Scalar):
        if gold == pred:
            return True
        return False if _apart(gold, pred, margin) else None
    if isinstance(gold, Bracket) and isinstance(pred, Bracket):
        if not (_ordered_pair_or_interval_known(gold) and _ordered_pair_or_interval_known(pred)):
            return None
        if (gold.opening, gold.closing) != (pred.opening, pred.closing) or len(gold.items) != len(pred.items):
            return False
        if gold.items == pred.items:
            return True
        for g, p in zip(gold.items, pred.items):
            if g != p and (INFINITY in (g.kind, p.kind) or _apart(g, p, margin)):
                return False
        return None
    return None
