"""Small prompt-source fixtures the project writes itself (no real dataset is copied).

`gsm8k_sample.jsonl`: GSM8K-format rows (`question`, `answer` = worked solution ending `#### N`).
`math_sample.jsonl`: MATH-format rows (`problem`, `solution` with a final `\\boxed{...}`, `level`,
`type`). The problems are simple and built from fixed numbers, so the files are byte-identical on
every run: `python -m tasks.prompts.fixtures [folder]` rewrites them (default data/fixtures).
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

GSM8K_FILE = "gsm8k_sample.jsonl"
MATH_FILE = "math_sample.jsonl"
DEFAULT_FOLDER = Path("data/fixtures")
PER_TEMPLATE = 4
_NAMES = ("Ada", "Ben", "Chloe", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun",
          "Kai", "Lea", "Moe", "Nia", "Oto", "Pia", "Quin", "Rui", "Sol", "Tess")


@dataclass(frozen=True)
class FixtureExample:
    """One fixture row and the reference answer its solution ends with."""

    row: dict[str, str]
    answer: str


def gsm8k_examples() -> list[FixtureExample]:
    """The 20 GSM8K-format examples: five word-problem templates, four number sets each."""
    examples = []
    for k in range(PER_TEMPLATE):
        for t in range(5):
            name = _NAMES[5 * k + t]
            examples.append(_GSM8K_TEMPLATES[t](name, k))
    return examples


def _apples(name: str, k: int) -> FixtureExample:
    a, b, c = 12 + 7 * k, 5 + 3 * k, 3 + k
    total, left = a + b, a + b - c
    question = (f"{name} has {a} apples. {name} buys {b} more apples and then gives {c} apples "
                f"to a friend. How many apples does {name} have now?")
    answer = (f"{name} has {a} + {b} = <<{a}+{b}={total}>>{total} apples after buying more.\n"
              f"After giving {c} away, {name} has {total} - {c} = <<{total}-{c}={left}>>{left} "
              f"apples.\n#### {left}")
    return FixtureExample({"question": question, "answer": answer}, str(left))


def _change(name: str, k: int) -> FixtureExample:
    price, count, bill = 3 + k, 4 + k, 50
    cost = price * count
    change = bill - cost
    question = (f"A notebook costs ${price}. {name} buys {count} notebooks and pays with a ${bill} "
                f"bill. How much change, in dollars, does {name} get?")
    answer = (f"The notebooks cost {count} * {price} = $<<{count}*{price}={cost}>>{cost}.\n"
              f"The change is {bill} - {cost} = $<<{bill}-{cost}={change}>>{change}.\n"
              f"#### {change}")
    return FixtureExample({"question": question, "answer": answer}, str(change))


def _factory(name: str, k: int) -> FixtureExample:
    per_day, days = 1250 + 250 * k, 8 + 2 * k
    total = per_day * days
    question = (f"{name}'s factory makes {per_day:,} bolts every day. How many bolts does it make "
                f"in {days} days?")
    answer = (f"In {days} days it makes {per_day} * {days} = <<{per_day}*{days}={total}>>{total} "
              f"bolts.\n#### {total:,}")  # a thousands separator, as some GSM8K answers have
    return FixtureExample({"question": question, "answer": answer}, str(total))


def _train(name: str, k: int) -> FixtureExample:
    speed, hours = 40 + 5 * k, 2 + k
    first = speed * hours
    total = first + 30
    question = (f"{name} rides a train that travels at {speed} miles per hour for {hours} hours, "
                f"then at 30 miles per hour for 1 hour. How many miles does the train travel?")
    answer = (f"First part: {speed} * {hours} = <<{speed}*{hours}={first}>>{first} miles.\n"
              f"Second part: 30 * 1 = <<30*1=30>>30 miles.\n"
              f"Together: {first} + 30 = <<{first}+30={total}>>{total} miles.\n#### {total}")
    return FixtureExample({"question": question, "answer": answer}, str(total))


def _cookies(name: str, k: int) -> FixtureExample:
    trays, children = 2 + k, (2, 3, 4, 6)[k]
    total = trays * 12
    each = total // children
    question = (f"{name} bakes {trays} trays of 12 cookies and shares all the cookies equally "
                f"among {children} children. How many cookies does each child get?")
    answer = (f"{name} bakes {trays} * 12 = <<{trays}*12={total}>>{total} cookies.\n"
              f"Each child gets {total} / {children} = <<{total}/{children}={each}>>{each} "
              f"cookies.\n#### {each}")
    return FixtureExample({"question": question, "answer": answer}, str(each))


_GSM8K_TEMPLATES = (_apples, _change, _factory, _train, _cookies)


def math_examples() -> list[FixtureExample]:
    """The 20 MATH-format examples: five templates, four number sets each, answers boxed."""
    examples = []
    for k in range(PER_TEMPLATE):
        for template in _MATH_TEMPLATES:
            examples.append(template(k))
    return examples


def latex_number(value: Fraction) -> str:
    """A rational number as MATH writes it: `7`, `-2`, `\\frac{3}{4}`, `-\\frac{1}{2}`."""
    if value.denominator == 1:
        return str(value.numerator)
    sign = "-" if value < 0 else ""
    return f"{sign}\\frac{{{abs(value.numerator)}}}{{{value.denominator}}}"


def _math_row(problem: str, solution: str, k: int, kind: str, answer: str) -> FixtureExample:
    row = {"problem": problem, "solution": solution, "level": f"Level {k + 1}", "type": kind}
    return FixtureExample(row, answer)


def _fraction_sum(k: int) -> FixtureExample:
    a, b, c, d = ((1, 2, 1, 3), (1, 4, 1, 4), (2, 3, 1, 6), (3, 5, 1, 10))[k]
    answer = latex_number(Fraction(a, b) + Fraction(c, d))
    problem = (f"Compute $\\frac{{{a}}}{{{b}}} + \\frac{{{c}}}{{{d}}}$. "
               f"Express your answer as a common fraction.")
    solution = (f"Over the common denominator ${b * d}$, $\\frac{{{a}}}{{{b}}} + "
                f"\\frac{{{c}}}{{{d}}} = \\frac{{{a * d}}}{{{b * d}}} + \\frac{{{c * b}}}{{{b * d}}} "
                f"= \\frac{{{a * d + c * b}}}{{{b * d}}}$, which simplifies to "
                f"$\\boxed{{{answer}}}$.")
    return _math_row(problem, solution, k, "Prealgebra", answer)


def _linear(k: int) -> FixtureExample:
    a, b, c = ((3, 4, 19), (2, -5, 9), (4, 1, 4), (5, -2, -12))[k]
    answer = latex_number(Fraction(c - b, a))
    sign = "+" if b >= 0 else "-"
    problem = f"Solve for $x$: ${a}x {sign} {abs(b)} = {c}$."
    solution = (f"Moving the constant to the right gives ${a}x = {c - b}$, so "
                f"$x = \\boxed{{{answer}}}$.")
    return _math_row(problem, solution, k, "Algebra", answer)


def _radical(k: int) -> FixtureExample:
    root, rest = ((2, 2), (3, 2), (2, 3), (5, 3))[k]
    square = root * root
    value = square * rest
    answer = f"{root}\\sqrt{{{rest}}}"
    problem = f"Simplify $\\sqrt{{{value}}}$."
    solution = (f"Since ${value} = {square} \\cdot {rest}$, we have $\\sqrt{{{value}}} = "
                f"\\sqrt{{{square}}} \\cdot \\sqrt{{{rest}}} = \\boxed{{{answer}}}$.")
    return _math_row(problem, solution, k, "Algebra", answer)


def _roots(k: int) -> FixtureExample:
    s = 2 + k
    answer = f"\\{{-{s}, {s}\\}}"
    problem = f"Find the set of all real solutions of $x^2 = {s * s}$."
    solution = (f"Taking square roots of both sides, $x = \\pm {s}$, so the solution set is "
                f"$\\boxed{{{answer}}}$.")
    return _math_row(problem, solution, k, "Algebra", answer)


def _die(k: int) -> FixtureExample:
    sides, at_most = ((6, 2), (6, 3), (8, 6), (10, 4))[k]
    answer = latex_number(Fraction(at_most, sides))
    problem = (f"A fair {sides}-sided die is rolled once. What is the probability that the result "
               f"is at most {at_most}? Express your answer as a common fraction.")
    solution = (f"There are ${at_most}$ favourable outcomes out of ${sides}$ equally likely ones, "
                f"so the probability is $\\frac{{{at_most}}}{{{sides}}} = \\boxed{{{answer}}}$.")
    return _math_row(problem, solution, k, "Counting & Probability", answer)


_MATH_TEMPLATES = (_fraction_sum, _linear, _radical, _roots, _die)


def jsonl_text(rows: list[dict[str, str]]) -> str:
    """Rows as JSON Lines: one object per line, keys in row order, UTF-8, final newline."""
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def write_fixtures(folder: str | os.PathLike[str] = DEFAULT_FOLDER) -> list[Path]:
    """Write gsm8k_sample.jsonl and math_sample.jsonl into `folder`; return their paths."""
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, examples in ((GSM8K_FILE, gsm8k_examples()), (MATH_FILE, math_examples())):
        path = target / name
        path.write_text(jsonl_text([e.row for e in examples]), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write_fixtures(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_FOLDER):
        print(written_path)
