"""The embedded default task: step-by-step arithmetic chains with exact answers.

A problem is a left-nested chain such as `((7+5)*3)-4`; its worked solution is one step per line
(`7+5=12`, `12*3=36`, `36-4=32`) followed by `#### 32`. Problems are deterministic from a seed.
Nothing here evaluates text: problems are built from numbers and parsed with a regular expression.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

OPS = ("+", "-", "*")
SOURCE = "demo-arith"
ANSWER_PREFIX = "#### "
PROMPT_TEMPLATE = "Q: {problem}\n"
_TERM = re.compile(r"([+\-*])(\d+)\)?", re.ASCII)
_STEP = re.compile(r"^(-?\d+)([+\-*])(-?\d+)=(-?\d+)$", re.ASCII)


@dataclass(frozen=True)
class ChainConfig:
    """Difficulty knobs: steps per problem and the operand range (inclusive)."""

    min_steps: int = 2
    max_steps: int = 3
    min_operand: int = 1
    max_operand: int = 9
    ops: tuple[str, ...] = OPS

    def __post_init__(self) -> None:
        if not 1 <= self.min_steps <= self.max_steps:
            raise ValueError(f"need 1 <= min_steps <= max_steps, got {self.min_steps}, {self.max_steps}")
        if not 0 <= self.min_operand <= self.max_operand:
            raise ValueError(
                f"need 0 <= min_operand <= max_operand, got {self.min_operand}, {self.max_operand}")
        if not self.ops or set(self.ops) - set(OPS):
            raise ValueError(f"ops must be a non-empty subset of {OPS}, got {self.ops}")


@dataclass(frozen=True)
class Chain:
    """One problem: a first operand and a list of (op, operand) applied left to right."""

    first: int
    terms: tuple[tuple[str, int], ...]

    @property
    def problem(self) -> str:
        """The problem text, e.g. `((7+5)*3)-4`."""
        text = str(self.first)
        for index, (op, operand) in enumerate(self.terms):
            text = f"{text}{op}{operand}"
            if index < len(self.terms) - 1:
                text = f"({text})"
        return text

    @property
    def steps(self) -> list[str]:
        """The worked solution's arithmetic lines, in order."""
        lines, value = [], self.first
        for op, operand in self.terms:
            result = apply(value, op, operand)
            lines.append(f"{value}{op}{operand}={result}")
            value = result
        return lines

    @property
    def answer(self) -> int:
        """The exact final value."""
        value = self.first
        for op, operand in self.terms:
            value = apply(value, op, operand)
        return value

    @property
    def solution(self) -> str:
        """The worked solution: steps then the `#### answer` line."""
        return "\n".join([*self.steps, f"{ANSWER_PREFIX}{self.answer}"])


def apply(left: int, op: str, right: int) -> int:
    """Apply one of + - * to two integers."""
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    raise ValueError(f"unknown operator {op!r}")


def random_chain(rng: random.Random, config: ChainConfig) -> Chain:
    """Draw one chain from `rng`."""
    n_steps = rng.randint(config.min_steps, config.max_steps)
    first = rng.randint(config.min_operand, config.max_operand)
    terms = tuple(
        (rng.choice(config.ops), rng.randint(config.min_operand, config.max_operand))
        for _ in range(n_steps)
    )
    return Chain(first, terms)


def parse_problem(problem: str) -> Chain:
    """Parse a problem text produced by `Chain.problem` back into a Chain (no eval)."""
    text = problem.strip().replace("(", "")
    match = re.match(r"^(\d+)", text, re.ASCII)
    if not match:
        raise ValueError(f"not a demo arithmetic problem: {problem!r}")
    rest = text[match.end():]
    terms = tuple((op, int(num)) for op, num in _TERM.findall(rest))
    if not terms or "".join(f"{op}{n})" for op, n in terms).replace(")", "") != rest.replace(")", ""):
        raise ValueError(f"not a demo arithmetic problem: {problem!r}")
    return Chain(int(match.group(1)), terms)


def parse_step(line: str) -> tuple[int, str, int, int] | None:
    """Parse `a op b = c` (spaces ignored) into (a, op, b, c), or None."""
    match = _STEP.match(line.replace(" ", ""))
    if not match:
        return None
    a, op, b, c = match.groups()
    return int(a), op, int(b), int(c)


def generate_problems(
    count: int, seed: int, config: ChainConfig | None = None, exclude: set[str] | None = None
) -> list[Chain]:
    """`count` distinct problems from `seed`, none of whose texts is in `exclude`."""
    config = config or ChainConfig()
    rng = random.Random(seed)
    seen = set(exclude or ())
    chains: list[Chain] = []
    attempts = 0
    while len(chains) < count:
        attempts += 1
        if attempts > 50 * count + 1000:
            raise ValueError(
                f"cannot draw {count} distinct problems with {config}: the space is too small")
        chain = random_chain(rng, config)
        if chain.problem not in seen:
            seen.add(chain.problem)
            chains.append(chain)
    return chains


@dataclass(frozen=True)
class DemoSplits:
    """The three disjoint problem sets of the demo."""

    pretrain: list[Chain]  # worked solutions, used only by bootstrap pretraining
    train: list[Chain]  # self-improvement prompts: problem + reference answer, never solutions
    eval: list[Chain]  # held out from both


def make_splits(
    n_pretrain: int, n_train: int, n_eval: int, seed: int, config: ChainConfig | None = None
) -> DemoSplits:
    """Disjoint pretrain / train / eval problem sets, deterministic from `seed`.

    Eval is drawn first so that its problems do not depend on the other sizes.
    """
    evals = generate_problems(n_eval, seed * 1000 + 3, config)
    taken = {c.problem for c in evals}
    train = generate_problems(n_train, seed * 1000 + 2, config, exclude=taken)
    taken |= {c.problem for c in train}
    pretrain = generate_problems(n_pretrain, seed * 1000 + 1, config, exclude=taken)
    return DemoSplits(pretrain=pretrain, train=train, eval=evals)
