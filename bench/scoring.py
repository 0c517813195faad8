"""Scoring benchmark: rule verifier, step verifier, ORM and PRM throughput, tournament costs.

Sections (one function each):
  verifier, demo task   100,000 generated completions (correct, wrong answer, wrong step,
                        truncated, garbage, other answer formats), exact mode, `verify_batch`
  verifier, math        10,000 math-style answers through math-verify (fractions, radicals,
                        intervals, polynomials, wrong and unparseable ones)
  verifier, realistic   GSM8K- and MATH-style outputs as n=8 sampling writes them
                        (bench/answer_outputs.py: answers shared within a prompt, LaTeX, units,
                        prose), math mode through a warm pool; then in one process the memoised
                        comparison against the uncached one, verdicts checked identical
  step verifier         the demo task's per-step labels, in-process
  ORM, PRM              candidates/s of a one-label sequence / token classifier on the tiny
                        base model's body (an untrained head: speed does not depend on training),
                        over --rm-candidates demo completions, batch 64; skipped without --rm-base
  tournaments           judge comparisons used by knockout and round-robin ELO for n = 8, 16, 32
                        and voting k = 1, 3, counted with a deterministic verifier-backed judge

Every generated candidate has a known expected label; a mismatch is counted and reported.
Usage: python bench/scoring.py [--demo 100000] [--math 10000] [--workers 2]
                               [--rm-base data/models/base] [--rm-candidates 2000]
Last line: `verifier candidates/s: <x>` (demo task, exact mode, pool start-up included).
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tasks.prompts.demo_task import ChainConfig, apply, generate_problems  # noqa: E402
from tasks.scoring.step_verify import step_labels  # noqa: E402
import tasks.scoring.verify as verify_module  # noqa: E402
from bench.answer_outputs import gsm8k_style, math_style  # noqa: E402
from tasks.scoring.verify import Verifier, VerifyItem, verify_batch  # noqa: E402


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


def bench_realistic_math(prompts: int, workers: int, seed: int) -> list[Row]:
    """Math-mode candidates/s on realistic outputs (pool, memoised), and memoised vs uncached
    comparisons side by side in this process (identical verdicts required)."""
    rows = []
    for style, make in (("GSM8K-style", gsm8k_style), ("MATH-style", math_style)):
        triples = make(prompts, 8, seed)
        items = [VerifyItem(text, reference) for _, reference, text in triples]
        with Verifier("math", workers=workers) as verifier:
            # the loop's pool is warm: warm this one on other prompts (first-call costs off the clock)
            verifier.verify([VerifyItem(text, reference) for _, reference, text in make(50, 8, seed + 1)])
            start = time.perf_counter()
            pooled = verifier.verify(items)
            seconds = time.perf_counter() - start
        rows.append(Row(f"verifier {style} (math), warm pool, memoised", len(items), seconds,
                        f"{prompts} prompts x 8, {workers} workers"))
        verify_module.warm_up_math()
        timings, labels = {}, {}
        paths = {"memoised, fast path": verify_module._math_verdict,
                 "uncached, math-verify only": partial(verify_module.math_verdict_uncached, fast=False)}
        for path, check in paths.items():
            verify_module._math_verdict.cache_clear()
            verify_module._math_gold.cache_clear()
            original = verify_module._math_verdict
            verify_module._math_verdict = check  # compare_math looks the name up at call time
            try:
                for item in items[:100]:  # warm up regexes and imports off the clock
                    verify_module._check_one(item.text, item.reference, verify_module.compare_math,
                                             verify_module.DEFAULT_EXTRACTORS, True, verify_module.math_verify_answer)
                check.cache_clear() if hasattr(check, "cache_clear") else None
                start = time.perf_counter()
                labels[path] = [verify_module._check_one(i.text, i.reference, verify_module.compare_math,
                                                         verify_module.DEFAULT_EXTRACTORS, True,
                                                         verify_module.math_verify_answer)[0] for i in items]
                timings[path] = time.perf_counter() - start
            finally:
                verify_module._math_verdict = original
        fast, slow = paths
        same = labels[fast] == labels[slow] == [v.label for v in pooled]
        rows.append(Row(f"verifier {style} (math), one process, {fast}", len(items), timings[fast],
                        f"{timings[slow] / timings[fast]:.1f}x the uncached path; verdicts identical: {same}"))
        rows.append(Row(f"verifier {style} (math), one process, {slow}", len(items), timings[slow], ""))
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


def make_untrained_reward_models(base: Path, folder: Path) -> dict[str, Path]:
    """ORM and PRM folders from a causal-LM folder, each with a fresh one-unit head."""
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    tokenizer = AutoTokenizer.from_pretrained(base)
    out = {}
    for name, loader in (("orm", AutoModelForSequenceClassification), ("prm", AutoModelForTokenClassification)):
        model = loader.from_pretrained(base, num_labels=1)
        model.config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(folder / name)
        tokenizer.save_pretrained(folder / name)
        out[name] = folder / name
    return out


def bench_reward_models(base: Path, cases: list[Case], count: int) -> list[Row]:
    """ORM and PRM scoring throughput over `count` demo completions (model load excluded)."""
    import tempfile

    from tasks.scoring.reward_model import ORMScorer, PRMScorer

    candidates = [{"candidate_id": f"c{i}", "prompt_id": f"p{i // 8}", "iteration": 0, "problem": case.problem,
                   "text": case.item.text} for i, case in enumerate(cases[:count])]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folders = make_untrained_reward_models(base, Path(tmp))
        for name, scorer in (("orm", ORMScorer(folders["orm"])), ("prm", PRMScorer(folders["prm"]))):
            scorer.score(candidates[:64])  # load and warm up
            start = time.perf_counter()
            scored = scorer.score(candidates)
            seconds = time.perf_counter() - start
            steps = sum(len(r["step_scores"] or []) for r in scored)
            note = f"{base.name} body, batch 64" + (f", {steps} step scores" if name == "prm" else "")
            rows.append(Row(f"{name.upper()} (sequence/token classifier)", len(scored), seconds, note))
    return rows


def bench_tournaments(sizes: tuple[int, ...] = (8, 16, 32), votes: tuple[int, ...] = (1, 3)) -> list[str]:
    """Lines of a table: comparisons and judge calls per method, n and k (verifier-backed judge)."""
    from tasks.scoring.judge import OracleJudge
    from tasks.scoring.tournament import knockout, round_robin_elo

    lines = [f"{'tournament':<10} {'n':>3} {'k':>2} {'comparisons':>12} {'judge calls':>12} {'winner correct':>15}"]
    for n in sizes:
        ids_ = [f"c{i:02d}" for i in range(n)]
        correct = {c: i % 5 == 3 for i, c in enumerate(ids_)}  # a few correct ones, not first
        texts = {c: f"answer {c}" for c in ids_}
        for k in votes:
            for name, method in (("knockout", knockout), ("elo", round_robin_elo)):
                judge = OracleJudge(correct)
                result = method("p", ids_, texts, "q", judge, votes_k=k)
                lines.append(f"{name:<10} {n:>3} {k:>2} {len(result.judgments):>12} {judge.calls:>12} "
                             f"{str(correct[result.winner_id]):>15}")
    return lines


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
    parser.add_argument("--realistic-prompts", type=int, default=500,
                        help="prompts (x 8 samples) per realistic math-mode section")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rm-base", type=Path, default=Path("data/models/base"),
                        help="causal-LM folder whose body the ORM/PRM sections use")
    parser.add_argument("--rm-candidates", type=int, default=2000)
    args = parser.parse_args(argv)

    demo = demo_cases(args.demo, args.seed)
    rows = bench_verifier("demo", demo, "exact", args.workers)
    headline = rows[0].per_second
    rows += bench_verifier("math", math_cases(args.math, args.seed), "math", args.workers,
                           warm_pass=False)
    rows += bench_realistic_math(args.realistic_prompts, args.workers, args.seed)
    rows += bench_step_verifier(demo)
    if (args.rm_base / "config.json").is_file():
        rows += bench_reward_models(args.rm_base, demo, args.rm_candidates)
    else:
        print(f"(ORM/PRM sections skipped: no model folder at {args.rm_base}; run `flywheel bootstrap`)")
    print_table(rows)
    print()
    print("\n".join(bench_tournaments()))
    print()
    print(f"verifier candidates/s: {headline:.0f}")


if __name__ == "__main__":
    main()
