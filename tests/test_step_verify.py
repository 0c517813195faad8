"""Process-level rule verifier of the demo task: hand-built step sequences with exact labels."""
from __future__ import annotations

import random
import time

import pytest

from tasks.prompts.demo_task import ChainConfig, generate_problems
from tasks.scoring.step_verify import all_steps_correct, expected_steps, first_wrong_step, step_labels
from tests.helpers import LINEAR_TIME_BOUND_S

PROBLEM = "((7+5)*3)-4"
REFERENCE = "32"


def lines(text: str) -> list[str]:
    return [line for line in text.split("\n") if line.strip()]


def check(text: str, problem: str = PROBLEM, reference: str = REFERENCE
          ) -> tuple[list[float], bool, int | None]:
    steps = lines(text)
    return (step_labels(problem, steps, reference), all_steps_correct(problem, steps, reference),
            first_wrong_step(problem, steps, reference))


def test_expected_steps() -> None:
    assert expected_steps(PROBLEM) == ((7, "+", 5, 12), (12, "*", 3, 36), (36, "-", 4, 32))


def test_fully_correct_solution() -> None:
    assert check("7+5=12\n12*3=36\n36-4=32\n#### 32") == ([1.0, 1.0, 1.0, 1.0], True, None)
    assert check(" 7 + 5 = 12 \n\n12*3=36\n36-4=32\n#### 032\n") == ([1.0] * 4, True, None)


def test_right_answer_through_a_wrong_step() -> None:
    # 13*3=36 is wrong arithmetic and builds on the wrong 13; 36-4=32 is the expected third step
    assert check("7+5=13\n13*3=36\n36-4=32\n#### 32") == ([0.0, 0.0, 1.0, 1.0], False, 0)
    # consistent arithmetic from a wrong start is still wrong: 13*3=39 is not the expected 12*3=36
    assert check("7+5=13\n13*3=39\n39-4=35\n#### 35") == ([0.0, 0.0, 0.0, 0.0], False, 0)


def test_wrong_final_answer() -> None:
    assert check("7+5=12\n12*3=36\n36-4=32\n#### 31") == ([1.0, 1.0, 1.0, 0.0], False, 3)
    assert check("7+5=12\n12*3=36\n36-4=32\n#### 32.0") == ([1.0, 1.0, 1.0, 0.0], False, 3)
    assert check("7+5=12\n12*3=36\n36-4=32\n####") == ([1.0, 1.0, 1.0, 0.0], False, 3)


def test_missing_or_misplaced_final_line() -> None:
    assert check("7+5=12\n12*3=36\n36-4=32") == ([1.0, 1.0, 1.0], False, 3)
    assert check("7+5=12\n12*3=36\n#### 32") == ([1.0, 1.0, 1.0], False, 3)  # a step missing
    assert check("7+5=12\n#### 32\n12*3=36\n36-4=32") == ([1.0] * 4, False, 4)
    assert check("") == ([], False, 0)


def test_extra_lines() -> None:
    assert check("7+5=12\n12*3=36\n36-4=32\n32+0=32\n#### 32") == ([1.0, 1.0, 1.0, 0.0, 1.0], False, 3)
    assert check("7+5=12\n12*3=36\n36-4=32\n#### 32\n#### 32") == ([1.0] * 5, False, 5)
    assert check("7+5=12\n12*3=36\n36-4=32\n#### 32\nthanks") == ([1.0] * 4 + [0.0], False, 4)


def test_garbage_lines() -> None:
    assert check("Let me think.\n7+5=12\n12*3=36\n36-4=32\n#### 32") == ([0.0] + [1.0] * 4, False, 0)
    assert check("7+5=12\n12x3=36\n12*3=36\n36-4=32\n#### 32") == ([1.0, 0.0, 1.0, 1.0, 1.0], False, 1)
    assert check("7+5==12\n7+5=\n=12\n#### thirty-two") == ([0.0] * 4, False, 0)
    # an over-long line is 0.0 unparsed, so it is not an arithmetic step: the next lines shift
    long_line = "7+5=" + " " * 300 + "12"
    assert check(long_line + "\n12*3=36\n36-4=32\n#### 32") == ([0.0, 0.0, 0.0, 1.0], False, 0)
    # surrounding whitespace is stripped before the length cap
    assert check("7+5=12" + " " * 300 + "\n12*3=36\n36-4=32\n#### 32") == ([1.0] * 4, True, None)


def test_negative_numbers() -> None:
    problem = "(2-8)*3"
    assert expected_steps(problem) == ((2, "-", 8, -6), (-6, "*", 3, -18))
    assert check("2-8=-6\n-6*3=-18\n#### -18", problem, "-18") == ([1.0, 1.0, 1.0], True, None)
    assert check("2-8=6\n6*3=18\n#### 18", problem, "-18") == ([0.0, 0.0, 0.0], False, 0)
    assert check("2-8=-6\n-6*3=-18\n#### -0018", problem, "-18") == ([1.0, 1.0, 1.0], True, None)


def test_bad_problem_or_reference_raises() -> None:
    with pytest.raises(ValueError, match="^not a demo arithmetic problem: 'what is 2\\+2\\?'$"):
        step_labels("what is 2+2?", ["2+2=4"], "4")
    with pytest.raises(ValueError, match="^not a demo arithmetic problem: longer than 1000"):
        step_labels("1+1" * 1000, ["2"], "2")
    with pytest.raises(ValueError, match="^demo reference answer must be an integer, got '3.5'$"):
        step_labels(PROBLEM, ["#### 32"], "3.5")
    with pytest.raises(TypeError, match="^step 1 must be str, got NoneType$"):
        step_labels(PROBLEM, ["7+5=12", None], "32")  # type: ignore[list-item]


def test_worked_solutions_of_generated_problems_are_all_correct() -> None:
    chains = generate_problems(200, seed=7, config=ChainConfig(min_steps=1, max_steps=4))
    for chain in chains:
        steps = chain.solution.split("\n")
        assert all_steps_correct(chain.problem, steps, str(chain.answer)), chain.problem
        wrong = [*steps[:-1], f"#### {chain.answer + 1}"]
        assert first_wrong_step(chain.problem, wrong, str(chain.answer)) == len(steps) - 1


def test_fast_enough_in_process() -> None:
    chains = generate_problems(500, seed=3)
    rng = random.Random(0)
    cases = [(c.problem, c.solution.split("\n"), str(c.answer + rng.choice([0, 0, 1]))) for c in chains]
    cases = cases * 20  # 10,000 candidates
    start = time.perf_counter()
    for problem, steps, reference in cases:
        step_labels(problem, steps, reference)
    assert time.perf_counter() - start < LINEAR_TIME_BOUND_S  # about 10 us each when idle (bench/scoring.py)
