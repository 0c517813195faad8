"""Process-level rule verifier for the demo arithmetic task: one 1.0/0.0 label per step.

A candidate's steps are the non-empty lines of its completion. The k-th arithmetic line (a line
that parses as `a op b = c`) is correct iff it is exactly the k-th step of the problem's worked
solution: same operands, operator and result, so a step built on a wrong earlier result is wrong
even when its own arithmetic holds. A `#### x` line is correct iff x equals the reference answer
(compared as integers, as the exact verifier does). Every other line is 0.0.

Pure Python, bounded work per line (lines over MAX_LINE_CHARS are 0.0 unparsed), no eval: cheap
enough to run in-process for every candidate.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from tasks.prompts.demo_task import ANSWER_PREFIX, parse_problem, parse_step
from tasks.scoring.verify import normalise_exact

MAX_LINE_CHARS = 200
MAX_PROBLEM_CHARS = 1000
_MARKER = ANSWER_PREFIX.strip()  # "####"


@lru_cache(maxsize=65536)
def expected_steps(problem: str) -> tuple[tuple[int, str, int, int], ...]:
    """The worked solution's steps of a demo problem as (a, op, b, c); ValueError if not one."""
    if not isinstance(problem, str):
        raise TypeError(f"problem must be str, got {type(problem).__name__}")
    if len(problem) > MAX_PROBLEM_CHARS:
        raise ValueError(f"not a demo arithmetic problem: longer than {MAX_PROBLEM_CHARS} characters")
    steps = tuple(parse_step(line) for line in parse_problem(problem).steps)
    assert all(step is not None for step in steps)  # Chain.steps always renders parseable lines
    return steps  # type: ignore[return-value]


def _integer_key(value: str) -> str | None:
    key = normalise_exact(value)
    return key if key.lstrip("-").isdigit() else None  # normalise_exact makes ASCII integers canonical


@lru_cache(maxsize=65536)
def _reference_key(reference: str) -> str:
    if not isinstance(reference, str):
        raise TypeError(f"reference must be str, got {type(reference).__name__}")
    key = _integer_key(reference)
    if key is None:
        raise ValueError(f"demo reference answer must be an integer, got {reference!r}")
    return key


def _analyse(problem: str, steps: Sequence[str], reference: str
             ) -> tuple[list[float], int, list[int]]:
    """Labels, the number of arithmetic lines, and the positions of `####` lines."""
    expected = expected_steps(problem)
    target = _reference_key(reference)
    labels: list[float] = []
    arithmetic = 0
    answers: list[int] = []
    for index, raw in enumerate(steps):
        if not isinstance(raw, str):
            raise TypeError(f"step {index} must be str, got {type(raw).__name__}")
        line = raw.strip()
        if len(line) > MAX_LINE_CHARS:
            labels.append(0.0)
        elif line.startswith(_MARKER):
            answers.append(index)
            labels.append(1.0 if _integer_key(line[len(_MARKER):]) == target else 0.0)
        else:
            parsed = parse_step(line)
            if parsed is None:
                labels.append(0.0)
            else:
                good = arithmetic < len(expected) and parsed == expected[arithmetic]
                labels.append(1.0 if good else 0.0)
                arithmetic += 1
    return labels, arithmetic, answers


def step_labels(problem: str, steps: Sequence[str], reference: str) -> list[float]:
    """One label per step (1.0 correct, 0.0 wrong) under the module's rule."""
    return _analyse(problem, steps, reference)[0]


def _all_correct(problem: str, labels: list[float], arithmetic: int, answers: list[int]) -> bool:
    return (bool(labels) and all(label == 1.0 for label in labels)
            and answers == [len(labels) - 1] and arithmetic == len(expected_steps(problem)))


def all_steps_correct(problem: str, steps: Sequence[str], reference: str) -> bool:
    """Every step correct, exactly the expected number of arithmetic steps, and the last step
    (and no other) is a correct `#### answer` line."""
    return _all_correct(problem, *_analyse(problem, steps, reference))


def first_wrong_step(problem: str, steps: Sequence[str], reference: str) -> int | None:
    """Index of the first wrong step; len(steps) if none is wrong but the solution is
    incomplete or malformed (too few steps, answer line missing, repeated or not last);
    None iff `all_steps_correct`."""
    labels, arithmetic, answers = _analyse(problem, steps, reference)
    for index, label in enumerate(labels):
        if label != 1.0:
            return index
    return None if _all_correct(problem, labels, arithmetic, answers) else len(labels)
