"""Scoring benchmark: rule-verifier and step-verifier throughput on this machine.

Sections (one function each, so later ones such as ORM/PRM throughput or tournament comparison
counts slot in beside them):
  verifier, demo task   100,000 generated completions (correct, wrong answer, wrong step,
                        truncated, garbage, other answer formats), exact mode, `verify_batch`
  verifier, math        10,000 math-style answers through math-verify (fractions, radicals,
                        intervals, polynomials, wrong and unparseable ones)
  step verifier         the demo task's per-step labels, in-process

Every generated candidate has a known expected label; a mismatch is counted and reported.
Usage: python bench/scoring.py [--demo 100000] [--math 10000] [--workers 2]
Last line: `verifier candidates/s: <x>` (demo task, exact mode, pool start-up included).
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tasks.demo_task import ChainConfig, apply, generate_problems  # noqa: E402
from tasks.step_verify import step_labels  # noqa: E402
from tasks.verify import Verifier, VerifyItem, verify_batch  # noqa: E402


@dataclass(frozen=True)
class Case:
    """One benchmark candidate: the problem (demo only), the item, and the expected label."""

    problem: str
    item: VerifyItem
    expected: str


@dataclass
class Row:
    """One line of the results table."""

    section: str
    items: int
    seconds: float
    note: str = ""

    @property
    def per_second(self) -> float:
        """Items per second."""
        return self.items / self.seconds if self.seconds else float("inf")


# ---------------------------------------------------------------- data


def demo_cases(count: int, seed: int) -> list[Case]:
    """`count` demo completions, 8 per problem, of known kinds and expected labels."""
    rng = random.Random(seed)
    chains = generate_problems(count // 8 + 1, seed, ChainConfig(min_steps=2, max_steps=4))
    cases: list[Case] = []
    for index in range(count):
        chain = chains[index // 8]
        steps, answer = chain.steps, chain.answer
        kind = rng.random()
        if kind < 0.40:  # the worked solution
            text, expected = chain.solution, "correct"
        elif kind < 0.60:  # right steps, wrong final answer
            text, expected = "\n".join([*steps, f"#### {answer + rng.choice([-2, -1, 1, 3])}"]), "incorrect"
        elif kind < 0.75:  # a wrong first step carried through
            value = apply(chain.first, chain.terms[0][0], chain.terms[0][1]) + 1
            lines = [f"{chain.first}{chain.terms[0][0]}{chain.terms[0][1]}={value}"]
            for op, operand in chain.terms[1:]:
                result = apply(value, op, operand)
                lines.append(f"{value}{op}{operand}={result}")
                value = result
            text = "\n".join([*lines, f"#### {value}"])
            expected = "correct" if value == answer else "incorrect"
        elif kind < 0.85:  # truncated before the answer line
            text, expected = "\n".join(steps[: rng.randint(0, len(steps))]), "unparseable"
        elif kind < 0.90:  # garbage
            text, expected = "".join(rng.choice("abc =+*\n") for _ in range(30)), "unparseable"
        else:  # the answer in another accepted format
            text = rng.choice([f"{chain.solution}\n", f"The answer is {answer}.",
                               "\n".join([*steps, f"#### {answer:,}"])])
            expected = "correct"
        cases.append(Case(chain.problem, VerifyItem(text, str(answer)), expected))
    return cases


def math_cases(count: int, seed: int) -> list[Case]:
    """`count` math-style answers with references, varied so that caches do not hide the cost."""
    rng = random.Random(seed)
    cases = []
    for _ in range(count):
        a, b = rng.randint(1, 99), rng.choice([2, 4, 5, 8, 10, 20, 25])
        kind = rng.randrange(8)
        if kind == 0:
            text, ref, expected = rf"so \boxed{{\frac{{{a}}}{{{b}}}}}", f"{a / b:g}", "correct"
        elif kind == 1:
            text, expected = rf"\boxed{{\sqrt{{{a + 1}}}/{b}}}", "correct"
            ref = rf"\frac{{\sqrt{{{a + 1}}}}}{{{b}}}"
        elif kind == 2:
            text, ref, expected = rf"\boxed{{[{a}, {a + b})}}", f"[{a},{a + b})", "correct"
        elif kind == 3:
            text, ref, expected = rf"\boxed{{({a}, {a + b}]}}", f"[{a},{a + b})", "incorrect"
        elif kind == 4:
            text, ref, expected = f"The answer is $x^2+{a}x$.", f"x({a}+x)", "correct"
        elif kind == 5:
            text, ref, expected = rf"\boxed{{{a + 1}}}", str(a), "incorrect"
        elif kind == 6:
            text, ref, expected = f"#### {a * 1000:,}", str(a * 1000), "correct"
        else:
            text, ref, expected = "I could not finish.", str(a), "unparseable"
        cases.append(Case("", VerifyItem(text, ref), expected))
    return cases


# ---------------------------------------------------------------- sections


def bench_verifier(name: str, cases: list[Case], mode: str, workers: int,
                   warm_pass: bool = True) -> list[Row]:
    """verify_batch over `cases` (start-up included), then (`warm_pass`) on a running pool."""
    items = [case.item for case in cases]
    start = time.perf_counter()
    verdicts = verify_batch(items, mode=mode, workers=workers)
    total = time.perf_counter() - start
    wrong = sum(v.label != c.expected for v, c in zip(verdicts, cases))
    labels = Counter(v.label for v in verdicts)
    note = f"mismatches {wrong}; " + ", ".join(f"{k} {labels[k]}" for k in sorted(labels))
    rows = [Row(f"verifier {name} ({mode}), verify_batch", len(items), total, note)]
    if not warm_pass:
        return rows
    with Verifier(mode, workers=workers) as verifier:
        startup = verifier.startup_s
        start = time.perf_counter()
        verifier.verify(items)
        warm = time.perf_counter() - start
    rows.append(Row(f"verifier {name} ({mode}), warm pool", len(items), warm,
                    f"pool start-up {startup:.2f} s, {workers} workers"))
    return rows


def bench_step_verifier(cases: list[Case]) -> list[Row]:
    """step_labels over the demo completions, in-process."""
    start = time.perf_counter()
    steps_total = 0
    for case in cases:
        steps = [line for line in case.item.text.split("\n") if line.strip()]
        steps_total += len(step_labels(case.problem, steps, case.item.reference))
    seconds = time.perf_counter() - start
    return [Row("step verifier (in-process)", len(cases), seconds, f"{steps_total} steps labelled")]


def print_table(rows: list[Row]) -> None:
    """The results as a fixed-width table."""
    print(f"{'section':<42} {'items':>8} {'seconds':>8} {'items/s':>10}  note")
    for row in rows:
        print(f"{row.section:<42} {row.items:>8} {row.seconds:>8.2f} {row.per_second:>10.0f}  {row.note}")


def main(argv: list[str] | None = None) -> None:
    """Run every section, print the table, then the headline figure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=int, default=100_000)
    parser.add_argument("--math", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    demo = demo_cases(args.demo, args.seed)
    rows = bench_verifier("demo", demo, "exact", args.workers)
    headline = rows[0].per_second
    rows += bench_verifier("math", math_cases(args.math, args.seed), "math", args.workers,
                           warm_pass=False)
    rows += bench_step_verifier(demo)
    print_table(rows)
    print(f"verifier candidates/s: {headline:.0f}")


if __name__ == "__main__":
    main()
