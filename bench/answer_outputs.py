"""Realistic model outputs for benchmarking the answer verifier (GSM8K- and MATH-style).

`gsm8k_style(prompts, n, seed)` and `math_style(prompts, n, seed)` return
`(prompt_id, reference, output_text)` triples: `n` sampled outputs for each of `prompts`
generated problems, in prompt order, deterministic for a seed (string-seeded `random.Random`,
no global state). `samples(...)` returns the same outputs with the label each was generated
with ("correct", "wrong" or "truncated") for benchmarks that count mismatches.

The distribution imitates n-way sampling (n = 8 by default) from a model that solves about half
of the problems:

* Each prompt draws its own accuracy p ~ Uniform(0.35, 0.65); each sample is correct with
  probability p, truncated (cut off mid-reasoning, no final answer) with probability 0.04, and
  otherwise wrong.
* A prompt has 1 to 3 distinct wrong final answers, chosen from the mistakes models make
  (stopping one step early, a forgotten step, an arithmetic slip, a factor of ten, an inverted
  fraction, a flipped sign, a swapped pair, the wrong bracket of an interval), with weights
  5:3:2, so the n samples share a handful of distinct final answers, the first mistake repeated
  the most.
* A correct answer appears in several spellings, the canonical one most often: GSM8K
  `18`, `18.0`, `18.00`, `1,080`, `\\frac{36}{2}`, `18 dollars`, `$18`, `\\$18`; MATH
  `\\frac{3}{4}` / `\\dfrac{3}{4}` / `\\frac{6}{8}` / `3/4` / `0.75`, `2\\sqrt{3}` / `\\sqrt{12}`,
  `\\frac{3\\pi}{2}` / `\\frac{3}{2}\\pi`, `(1, 4]` / `\\left(1, 4\\right]`, `(3, -1)` /
  `\\left( 3, -1 \\right)`, `7` / `x = 7`. Wrong answers are spelled canonically.
* Every output has 2 to 5 lines of step-by-step reasoning before the answer (the last line
  computes the final value, so a wrong answer's reasoning leads to it).
* GSM8K endings: mostly `#### x` (GSM8K few-shot format), else "The answer is x.",
  `**Answer:** x`, or `\\boxed{x}`; about one in eight outputs has a short chat tail without
  numbers. MATH endings: `\\boxed{}` in a sentence, a display `\\[\\boxed{...}\\]`, the Minerva
  "The final answer is $...$. I hope it is correct." form.

References: GSM8K references are plain integers ("18"); MATH references are raw LaTeX as in the
MATH dataset's answer field ("\\frac{3}{4}", "(1, 4]"), without `$...$`. math-verify's `parse`
extracts LaTeX only from a math environment, so a verifier must wrap a raw reference (for
example in `$...$` or `\\boxed{}`) before parsing it.

Usage: python bench/answer_outputs.py [--style gsm8k|math] [--prompts 2] [--n 8] [--seed 0]
       [--check]   (--check: math-verify's verdict for every sample against its label)
"""
from __future__ import annotations

import argparse
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

TRUNCATED_RATE = 0.04
ACCURACY_RANGE = (0.35, 0.65)
WRONG_WEIGHTS = (5, 3, 2)


@dataclass(frozen=True)
class Sample:
    """One generated output with the label it was generated with."""

    prompt_id: str
    reference: str
    text: str
    label: str  # "correct", "wrong" or "truncated"


@dataclass(frozen=True)
class _Problem:
    """A generated problem: reference, spellings of the right answer, wrong answers, reasoning."""

    reference: str
    spellings: tuple[tuple[str, int], ...]  # (spelling, weight)
    wrong: tuple[str, ...]  # canonical spellings of distinct wrong answers, most likely first
    reasoning: Callable[[str], list[str]]  # final answer (as written) -> reasoning lines


def _pick(rng: random.Random, weighted: tuple[tuple[str, int], ...]) -> str:
    values, weights = zip(*weighted)
    return rng.choices(values, weights=weights)[0]


def _distinct(values: list, exclude: set) -> list:
    out = []
    for value in values:
        if value not in exclude and value not in out:
            out.append(value)
    return out


# ---------------------------------------------------------------- GSM8K problems

# a template: answer, likely mistakes, reasoning lines for a final value, unit, is it money
_Template = tuple[int, list[int], Callable[[str], list[str]], str, bool]


def _gsm_eggs(rng: random.Random) -> _Template:
    laid, eaten, baked = rng.randint(12, 30), rng.randint(2, 4), rng.randint(3, 6)
    price = rng.randint(2, 5)
    left = laid - eaten - baked
    answer = left * price

    def lines(final: str) -> list[str]:
        return ["We need to find how much money Janet makes each day from selling her eggs.",
                f"The ducks lay {laid} eggs per day.",
                f"She eats {eaten} and uses {baked} for baking, so {laid} - {eaten} - {baked} = "
                f"{left} eggs are left.",
                f"She sells each egg for ${price}, so she makes {left} * {price} = {final} "
                "dollars."]
    mistakes = [left, (laid - eaten) * price, answer + price, answer * 10]
    return answer, mistakes, lines, "dollars", True


def _gsm_pages(rng: random.Random) -> _Template:
    total, per_day, days = rng.randint(200, 480), rng.randint(12, 30), rng.randint(3, 7)
    read = per_day * days
    answer = total - read

    def lines(final: str) -> list[str]:
        return [f"The book has {total} pages and we want the pages she still has to read.",
                f"She reads {per_day} pages a day for {days} days.",
                f"That is {per_day} * {days} = {read} pages.",
                f"The book has {total} pages, so {total} - {read} = {final} pages are left."]
    return answer, [read, answer - per_day, answer + 10, total - per_day], lines, "pages", False


def _gsm_tiles(rng: random.Random) -> _Template:
    rows, per_row, extra = rng.randint(12, 40), rng.randint(20, 45), rng.randint(5, 30)
    grid = rows * per_row
    answer = grid + extra

    def lines(final: str) -> list[str]:
        return ["The question asks for the total number of tiles he has to buy, spares included.",
                f"There are {rows} rows with {per_row} tiles each.",
                f"{rows} * {per_row} = {grid:,} tiles for the floor.",
                f"Adding {extra} spare tiles gives {grid} + {extra} = {final} tiles."]
    return answer, [grid, answer - 1, grid - extra, answer + per_row], lines, "tiles", False


def _gsm_change(rng: random.Random) -> _Template:
    count, price = rng.randint(2, 9), rng.randint(3, 12)
    cost = count * price
    bill = 50 if cost < 50 else 100
    answer = bill - cost

    def lines(final: str) -> list[str]:
        return ["To find his change, we first need the total cost of the notebooks.",
                f"Each notebook costs ${price} and he buys {count}.",
                f"The total is {count} * {price} = {cost} dollars.",
                f"He pays with a ${bill} bill, so his change is {bill} - {cost} = {final} dollars."]
    return answer, [cost, answer + price, answer - 1, bill - price], lines, "dollars", True


def _gsm_distance(rng: random.Random) -> _Template:
    speed1, hours1, speed2, hours2 = (rng.randint(40, 70), rng.randint(2, 4), rng.randint(20, 50),
                                      rng.randint(1, 3))
    first, second = speed1 * hours1, speed2 * hours2
    answer = first + second

    def lines(final: str) -> list[str]:
        return ["Distance equals speed times time, so we compute each part of the trip separately.",
                f"First she drives {speed1} mph for {hours1} hours: {speed1} * {hours1} = {first} "
                "miles.",
                f"Then {speed2} mph for {hours2} hours: {speed2} * {hours2} = {second} miles.",
                f"In total she drives {first} + {second} = {final} miles."]
    return answer, [first, second, answer + 10, speed1 * (hours1 + hours2)], lines, "miles", False


def _gsm_discount(rng: random.Random) -> _Template:
    price, off = rng.choice((40, 60, 80, 120, 160, 200, 240)), rng.choice((10, 20, 25, 50))
    saved = price * off // 100
    answer = price - saved

    def lines(final: str) -> list[str]:
        return ["We need the sale price of the jacket after the discount is applied.",
                f"The jacket costs ${price} and is {off}% off.",
                f"The discount is {price} * {off} / 100 = {saved} dollars.",
                f"So she pays {price} - {saved} = {final} dollars."]
    return answer, [saved, price + saved, answer - 1, price - off], lines, "dollars", True


def _gsm_salary(rng: random.Random) -> _Template:
    monthly, months, spent = rng.randint(9, 40) * 100, rng.randint(6, 12), rng.randint(2, 9) * 100
    saved_per_month = monthly - spent
    answer = saved_per_month * months

    def lines(final: str) -> list[str]:
        return ["We want to know how much money he has saved at the end of the period.",
                f"He earns ${monthly:,} a month and spends ${spent} of it.",
                f"He saves {monthly} - {spent} = {saved_per_month} dollars a month.",
                f"Over {months} months that is {saved_per_month} * {months} = {final} dollars."]
    return answer, [saved_per_month, monthly * months, answer - saved_per_month, answer + 100], \
        lines, "dollars", True


_GSM_TEMPLATES = (_gsm_eggs, _gsm_pages, _gsm_tiles, _gsm_change, _gsm_distance, _gsm_discount,
                  _gsm_salary)


def _gsm_problem(rng: random.Random) -> _Problem:
    template = rng.choice(_GSM_TEMPLATES)
    answer, mistakes, lines, unit, currency = template(rng)
    mistakes = _distinct([m for m in mistakes if m > 0], {answer})
    spellings = [(str(answer), 12), (f"{answer}.0", 1)]
    if answer >= 1000:
        spellings.append((f"{answer:,}", 4))
    if answer % 2 == 0:
        spellings.append((f"\\frac{{{answer * 2}}}{{2}}", 1))
    spellings.append((f"{answer} {unit}", 3))
    if currency:
        spellings += [(f"${answer}", 2), (f"\\${answer}", 1), (f"{answer}.00", 1)]
    return _Problem(str(answer), tuple(spellings), tuple(str(m) for m in mistakes), lines)


_GSM_INTROS = ("", "Let's think step by step.\n", "Let's solve this step by step.\n",
               "We need to work out the answer carefully.\n")
_GSM_TAILS = ("I hope this helps!", "Let me know if you have any questions.",
              "This is the final result.")


def _gsm_ending(rng: random.Random, answer: str) -> str:
    """The final-answer line; `answer` is a spelling (it may hold LaTeX or a unit)."""
    style = rng.choices(("hash", "answer_is", "bold", "boxed"), weights=(10, 3, 2, 2))[0]
    if answer.startswith("\\$"):  # markdown-escaped dollar: prose endings only
        style = "answer_is" if style in ("hash", "boxed") else style
    elif "\\" in answer or style == "boxed":
        number, _, unit = answer.partition(" ")
        boxed = f"{number} \\text{{ {unit}}}" if unit else number
        return f"The answer is $\\boxed{{{boxed}}}$."
    if style == "hash":
        return f"#### {answer}"
    if style == "answer_is":
        return f"The answer is {answer}."
    return f"**Answer:** {answer}"


_GSM_OPENERS = ("First, let's write down what we know from the problem.",
                "We can break the problem into smaller steps and solve them one at a time.",
                "Let's carefully read the problem and identify the quantities involved.")
_GSM_CONNECTORS = ("Next, ", "Then ", "Now, ", "So ")


def _gsm_body(rng: random.Random, problem: _Problem, final: str) -> str:
    lines = problem.reasoning(final)
    lines = [lines[0]] + [rng.choice(_GSM_CONNECTORS) + line[0].lower() + line[1:]
                          if rng.random() < 0.4 else line for line in lines[1:]]
    if rng.random() < 0.6:
        lines.insert(0, rng.choice(_GSM_OPENERS))
    return rng.choice(_GSM_INTROS) + "\n".join(lines)


def _gsm_text(rng: random.Random, problem: _Problem, final: str, shown: str) -> str:
    """`final` is the value the reasoning computes, `shown` its spelling in the ending."""
    text = _gsm_body(rng, problem, final) + "\n" + _gsm_ending(rng, shown)
    if rng.random() < 0.125:
        text += "\n\n" + rng.choice(_GSM_TAILS)
    return text


# ---------------------------------------------------------------- MATH problems


def _frac(rng: random.Random) -> _Problem:
    while True:
        den = rng.randint(3, 12)
        num = rng.randint(1, den - 1)
        if math.gcd(num, den) == 1:
            break
    ref = f"\\frac{{{num}}}{{{den}}}"
    spellings = [(ref, 10), (f"\\dfrac{{{num}}}{{{den}}}", 3),
                 (f"\\frac{{{2 * num}}}{{{2 * den}}}", 1), (f"{num}/{den}", 2)]
    value = Fraction(num, den)
    if 10 ** 6 % den == 0:
        spellings.append((str(float(value)), 2))
    wrong = _distinct([f"\\frac{{{den}}}{{{num}}}" if num > 1 else f"{den}",
                       f"\\frac{{{num}}}{{{den + 1}}}", f"\\frac{{{num + 1}}}{{{den}}}",
                       f"-\\frac{{{num}}}{{{den}}}"], {ref})
    total, good = den * rng.randint(2, 4), num

    def lines(final: str) -> list[str]:
        return [f"There are ${den}$ equally likely outcomes in the sample space.",
                f"Counting the favorable cases, we find ${good}$ of them satisfy the condition "
                f"(checking all ${total}$ ordered draws gives the same ratio).",
                f"So the probability is $\\frac{{{good}}}{{{den}}}$, which simplifies to "
                f"${final}$."]
    return _Problem(ref, tuple(spellings), tuple(wrong), lines)


def _sqrt(rng: random.Random) -> _Problem:
    mult = rng.randint(2, 6)
    inner = rng.choice([k for k in (2, 3, 5, 6, 7) if k != mult])
    ref = f"{mult}\\sqrt{{{inner}}}"
    spellings = [(ref, 10), (f"\\sqrt{{{mult * mult * inner}}}", 3), (f"{mult}\\sqrt{inner}", 2)]
    wrong = [f"{inner}\\sqrt{{{mult}}}", f"{mult + 1}\\sqrt{{{inner}}}",
             f"\\sqrt{{{mult * inner}}}"]
    square = mult * mult * inner

    def lines(final: str) -> list[str]:
        return [f"By the Pythagorean theorem, $d^2 = {square - inner} + {inner} = {square}$.",
                f"Since ${square} = {mult * mult} \\cdot {inner}$, we take the square root of each "
                "factor.",
                f"Therefore $d = \\sqrt{{{square}}} = {final}$."]
    return _Problem(ref, tuple(spellings), tuple(wrong), lines)


def _pi(rng: random.Random) -> _Problem:
    while True:
        num, den = rng.randint(1, 9), rng.randint(2, 4)
        if math.gcd(num, den) == 1:
            break
    top = f"{num}\\pi" if num > 1 else "\\pi"
    ref = f"\\frac{{{top}}}{{{den}}}"
    spellings = [(ref, 10), (f"\\frac{{{num}}}{{{den}}}\\pi", 3), (f"{top}/{den}", 1)]
    wrong = _distinct([f"\\frac{{{2 * num}\\pi}}{{{den}}}", f"\\frac{{{num}\\pi}}{{{2 * den}}}",
                       f"{num}\\pi"], {ref})

    def lines(final: str) -> list[str]:
        return ["From the given chord lengths, the radius satisfies "
                f"$r^2 = \\frac{{{num}}}{{{den}}}$.",
                "The area of a circle is $\\pi r^2$.",
                f"Hence the area is $\\pi \\cdot \\frac{{{num}}}{{{den}}} = {final}$."]
    return _Problem(ref, tuple(spellings), tuple(wrong), lines)


def _interval(rng: random.Random) -> _Problem:
    low = rng.randint(-6, 3)
    high = low + rng.randint(2, 7)
    left, right = rng.choice((("(", "]"), ("[", ")"), ("[", "]")))
    if rng.random() < 0.3:
        ref = f"(-\\infty, {high}]"
        spellings = [(ref, 10), (f"\\left(-\\infty, {high}\\right]", 3), (f"x \\le {high}", 1)]
        wrong = [f"(-\\infty, {high})", f"[{high}, \\infty)", f"(-\\infty, {high + 1}]"]
        bounds = f"$x \\le {high}$"
    else:
        ref = f"{left}{low}, {high}{right}"
        spellings = [(ref, 10), (f"\\left{left}{low}, {high}\\right{right}", 3),
                     (f"{left}{low},{high}{right}", 2)]
        flipped = ("[" if left == "(" else "(") + f"{low}, {high}" + right
        wrong = [flipped, f"{left}{low}, {high + 1}{right}", f"({low}, {high})"
                 if (left, right) != ("(", ")") else f"[{low}, {high}]"]
        lower = "<" if left == "(" else "\\le"
        upper = "<" if right == ")" else "\\le"
        bounds = f"${low} {lower} x {upper} {high}$"
    wrong = _distinct(wrong, {ref})

    def lines(final: str) -> list[str]:
        return ["We need the expression under the square root to be nonnegative and the "
                "denominator to be nonzero.",
                f"Solving the resulting inequalities gives {bounds}.",
                f"In interval notation, the domain is ${final}$."]
    return _Problem(ref, tuple(spellings), tuple(wrong), lines)


def _pair(rng: random.Random) -> _Problem:
    x, y = rng.randint(-5, 8), rng.randint(-5, 8)
    while y == x or y == -x:
        y = rng.randint(-5, 8)
    ref = f"({x}, {y})"
    spellings = [(ref, 10), (f"\\left( {x}, {y} \\right)", 3), (f"({x},{y})", 2)]
    wrong = _distinct([f"({y}, {x})", f"({x}, {-y})", f"({-x}, {y})"], {ref})
    a, b = rng.randint(1, 4), rng.randint(1, 4)

    def lines(final: str) -> list[str]:
        return [f"Adding the two equations eliminates $y$: ${2 * a}x = {2 * a * x}$, so $x = {x}$.",
                f"Substituting back, ${a}({x}) + {b}y = {a * x + b * y}$ gives $y = {y}$.",
                f"So the ordered pair is ${final}$."]
    return _Problem(ref, tuple(spellings), tuple(wrong), lines)


def _integer(rng: random.Random) -> _Problem:
    n = rng.randint(2, 60)
    ref = str(n)
    spellings = [(ref, 10), (f"x = {n}", 2), (f"{n}.0", 1)]
    wrong = [str(n + 1), str(-n), str(n - 1)]
    c = rng.randint(2, 9)

    def lines(final: str) -> list[str]:
        return [f"We have ${c}x - {c * n} = 0$.",
                f"Dividing both sides by ${c}$ gives $x - {n} = 0$.",
                f"Hence $x = {final}$."]
    return _Problem(ref, tuple(spellings), tuple(wrong), lines)


_MATH_FAMILIES = ((_frac, 3), (_sqrt, 2), (_pi, 2), (_interval, 2), (_pair, 2), (_integer, 3))


def _math_problem(rng: random.Random) -> _Problem:
    families, weights = zip(*_MATH_FAMILIES)
    return rng.choices(families, weights=weights)[0](rng)


_MATH_INTROS = ("", "Let's think step by step.\n\n", "To solve this, we proceed in steps.\n\n")


def _math_ending(rng: random.Random, answer: str) -> str:
    style = rng.choices(("sentence", "display", "minerva", "bare"), weights=(8, 3, 2, 2))[0]
    if style == "sentence":
        return f"Therefore, the answer is $\\boxed{{{answer}}}$."
    if style == "display":
        return f"Thus\n\\[\n\\boxed{{{answer}}}\n\\]"
    if style == "minerva":
        return f"Final Answer: The final answer is ${answer}$. I hope it is correct."
    return f"$\\boxed{{{answer}}}$"


_MATH_OPENERS = ("We start by writing down the given information and what we need to find.",
                 "The key observation is that the problem reduces to a direct computation.",
                 "Let us set up the problem carefully before computing anything.")


def _math_body(rng: random.Random, problem: _Problem, final: str) -> str:
    lines = problem.reasoning(final)
    if rng.random() < 0.6:
        lines.insert(0, rng.choice(_MATH_OPENERS))
    return rng.choice(_MATH_INTROS) + "\n\n".join(lines)


def _math_text(rng: random.Random, problem: _Problem, final: str, shown: str) -> str:
    """`final` is the value the reasoning computes, `shown` its spelling in the ending."""
    return _math_body(rng, problem, final) + "\n\n" + _math_ending(rng, shown)


# ---------------------------------------------------------------- sampling


def _truncate(rng: random.Random, body: str, final: str) -> str:
    """Cut reasoning off (a token limit) somewhere before it first writes the final value."""
    end = body.find(final)
    if end < 10:  # absent, or a coincidence at the very start
        end = len(body)
    return body[:rng.randint(min(len(body) // 4, end - 1), end - 1)].rstrip()


def samples(style: str, prompts: int, n: int = 8, seed: int = 0) -> list[Sample]:
    """`n` labelled outputs for each of `prompts` generated problems ("gsm8k" or "math" style)."""
    if style not in ("gsm8k", "math"):
        raise ValueError(f"style must be 'gsm8k' or 'math', got {style!r}")
    if prompts < 0 or n < 1:
        raise ValueError("prompts must be >= 0 and n >= 1")
    make_problem, make_body, make_text = (
        (_gsm_problem, _gsm_body, _gsm_text) if style == "gsm8k"
        else (_math_problem, _math_body, _math_text))
    out: list[Sample] = []
    for index in range(prompts):
        rng = random.Random(f"{style}:{seed}:{index}")
        prompt_id = f"{style}-s{seed}-{index:05d}"
        problem = make_problem(rng)
        accuracy = rng.uniform(*ACCURACY_RANGE)
        wrong = problem.wrong[:rng.randint(1, min(3, len(problem.wrong)))]
        weights = WRONG_WEIGHTS[:len(wrong)]
        for _ in range(n):
            draw = rng.random()
            if draw < TRUNCATED_RATE:
                text = _truncate(rng, make_body(rng, problem, problem.reference), problem.reference)
                label = "truncated"
            elif draw < TRUNCATED_RATE + accuracy:
                text = make_text(rng, problem, problem.reference, _pick(rng, problem.spellings))
                label = "correct"
            else:
                answer = rng.choices(wrong, weights=weights)[0]
                text = make_text(rng, problem, answer, answer)
                label = "wrong"
            out.append(Sample(prompt_id, problem.reference, text, label))
    return out


def gsm8k_style(prompts: int, n: int = 8, seed: int = 0) -> list[tuple[str, str, str]]:
    """`(prompt_id, reference, output_text)` for `n` GSM8K-style samples of each prompt."""
    return [(s.prompt_id, s.reference, s.text) for s in samples("gsm8k", prompts, n, seed)]


def math_style(prompts: int, n: int = 8, seed: int = 0) -> list[tuple[str, str, str]]:
    """`(prompt_id, reference, output_text)` for `n` MATH-style samples of each prompt."""
    return [(s.prompt_id, s.reference, s.text) for s in samples("math", prompts, n, seed)]


# ---------------------------------------------------------------- command line


def _check(rows: list[Sample]) -> None:
    """math-verify (reference wrapped in $...$) against every sample's label."""
    import logging
    from collections import Counter

    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    logging.getLogger("latex2sympy2_extended").setLevel(logging.ERROR)
    counts: Counter = Counter()
    disagreements = []
    for row in rows:
        got = verify(parse(f"${row.reference}$"), parse(row.text))
        counts[(row.label, got)] += 1
        if got != (row.label == "correct"):
            disagreements.append(row)
    for (label, got), count in sorted(counts.items()):
        print(f"  {label:<9} math-verify={got!s:<5} {count}")
    print(f"  disagreements: {len(disagreements)} of {len(rows)}")
    for row in disagreements[:5]:
        print(f"  - [{row.label}] reference {row.reference!r}: ...{row.text[-90:]!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--style", choices=("gsm8k", "math", "both"), default="both")
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check", action="store_true",
                        help="run math-verify on every sample and compare with its label")
    args = parser.parse_args()
    for style in (("gsm8k", "math") if args.style == "both" else (args.style,)):
        rows = samples(style, args.prompts, args.n, args.seed)
        if args.check:
            print(f"== {style}: {len(rows)} samples")
            _check(rows)
            continue
        for row in rows:
            print(f"== {row.prompt_id}  reference={row.reference!r}  [{row.label}]")
            print(row.text)
            print()


if __name__ == "__main__":
    main()
