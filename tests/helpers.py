"""Helpers shared by several test modules: a hand-built scored lake for selection and export
tests, scripted judge backends, simple score rows. Test modules import from here, never from
each other."""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from schemas.generation import SamplingConfig
from tasks.generation.generate import Completion
from tasks.lake import ids
from tasks.lake.store import Lake


# ---------------------------------------------------------------- time bounds

# The wall-clock bound of tests that guard against super-linear time (regex backtracking, quadratic
# loops) on inputs of a megabyte or 10,000 candidates: a super-linear path takes hours on them, a
# linear one 0.05-0.5 s on an idle machine. Tests share the machine with other work: one such
# check took 2.03 s for 0.15 s of work beside a demo run, so the bound leaves room for a loaded
# machine and still fails a super-linear path. Throughput is measured in bench/, not here.
LINEAR_TIME_BOUND_S = 30.0


# ---------------------------------------------------------------- bench scripts

def load_bench(script: str):  # noqa: ANN201  (a module)
    """A bench/ script as a module (bench/ is not a package), loaded by path once."""
    import importlib.util
    import sys
    from pathlib import Path

    name = f"bench_{script}"
    if name not in sys.modules:
        path = Path(__file__).resolve().parent.parent / "bench" / f"{script}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while it executes
        spec.loader.exec_module(module)
    return sys.modules[name]


# ---------------------------------------------------------------- comparing tables

def row_differences(left: Sequence[dict], right: Sequence[dict], key: Sequence[str],
                    names: tuple[str, str] = ("left", "right")) -> list[str]:
    """Where two tables' rows part, by key: each key only one side has, each column that differs
    in a row both have (values cut to 200 characters), and duplicate keys; empty when equal."""
    keyed = lambda rows: {tuple(r[k] for k in key): r for r in rows}  # noqa: E731
    a, b = keyed(left), keyed(right)
    out = [f"{k}: only on {names[0]}" for k in sorted(a.keys() - b.keys())]
    out += [f"{k}: only on {names[1]}" for k in sorted(b.keys() - a.keys())]
    for k in sorted(a.keys() & b.keys()):
        out += [f"{k} {col}: {str(a[k][col])[:200]} != {str(b[k][col])[:200]}"
                for col in a[k] if a[k][col] != b[k][col]]
    if len(left) != len(a) or len(right) != len(b):
        out.append(f"duplicate keys: {len(left)} rows / {len(a)} keys vs {len(right)} rows / {len(b)} keys")
    return out


# ---------------------------------------------------------------- simple rows

def simple_score_rows(n: int, iteration: int = 0, scorer: str = "verifier") -> list[dict]:
    """n score rows of three prompts, alternately correct and incorrect."""
    return [
        dict(candidate_id=f"c{i}", prompt_id=f"p{i % 3}", iteration=iteration, scorer=scorer,
             scorer_version="1", value=float(i % 2), label="correct" if i % 2 else "incorrect",
             extracted_answer=str(i), step_scores=[1.0, float(i % 2)], detail=None)
        for i in range(n)
    ]



def simple_prompt_and_candidate_rows(n: int, iteration: int = 0) -> tuple[list[dict], list[dict]]:
    """The train prompts p0..p2 and candidates c0..c{n-1} (model m) that `simple_score_rows`
    scores."""
    prompts = [dict(prompt_id=f"p{i}", iteration=iteration, source="t", split="train", problem=f"p{i}",
                    reference_answer=str(i), metadata=None) for i in range(min(n, 3))]
    candidates = [dict(candidate_id=f"c{i}", prompt_id=f"p{i % 3}", model_id="m", iteration=iteration,
                       sampling_hash="s", sample_index=i // 3, text=str(i), steps=[str(i)], num_tokens=1,
                       finish_reason="stop", cumulative_logprob=None, token_ids=None, token_logprobs=None,
                       step_token_ends=None) for i in range(n)]
    return prompts, candidates

# ---------------------------------------------------------------- a hand-built scored lake

MODEL, SAMPLING, SOURCE = "model-0", "sampling-0", "test"
SCORERS = ("verifier", "step_verifier", "orm", "prm", "prl")


def c(text, label, answer, orm, prm, prl, prl_steps, sv):
    """One candidate spec: its text and every scorer's verdict."""
    return dict(text=text, label=label, answer=answer, orm=orm, prm=prm, prl=prl,
                prl_steps=prl_steps, sv=sv)


# problem -> (reference answer, candidates in sample_index order)
WORLD = {
    "a": ("1", [
        c("x=1\n#### 1", "correct", "1", 0.2, [0.9, 0.8], 0.5, [0.1, 0.4], 1.0),
        c("X=1  \n####  1", "correct", "1", 0.9, [0.95, 0.3], 1.5, [0.2, 0.2], 0.0),
        c("x=2\n#### 2", "incorrect", "2", 0.9, [0.5, 0.6], -1.0, [-0.5, -1.0], 0.0),
        c("x=1\n#### 1", "correct", "1", 0.5, [0.7, 0.9], 0.5, [0.3, 0.5], 1.0),
    ]),
    "b": ("2", [
        c("b0", "correct", "2", 0.1, [0.6], 0.0, [0.0], 1.0),
        c("b1", "correct", "2", 0.3, [], 0.0, [0.0], 0.0),
    ]),
    "c": ("3", [
        c("c0", "incorrect", "4", 0.4, [0.2], 0.0, [0.0], 0.0),
        c("c1", "unparseable", None, 0.4, [0.1], 0.0, [0.0], 0.0),
    ]),
    "d": (None, [
        c("d0", None, None, 0.5, [0.5], 0.0, [0.0], 0.0),
        c("d1", None, "3", 0.1, [0.5], 0.0, [0.0], 0.0),
        c("d2", None, "4", 0.4, [0.5], 0.0, [0.0], 0.0),
        c("d3", None, " 04", 0.4, [0.5], 0.0, [0.0], 0.0),
        c("d4", None, "3", 0.1, [0.5], 0.0, [0.0], 0.0),
    ]),
}


# a fifth prompt for the end-to-end pipeline: e3 is e0 after normalising
EXTRA = {
    "e": ("5", [
        c("e0", "correct", "5", 0.3, [0.4], 0.0, [0.0], 1.0),
        c("e1", "incorrect", "6", 0.8, [0.9], 0.0, [0.0], 0.0),
        c("e2", "correct", "5", 0.3, [0.4], 0.0, [0.0], 1.0),
        c("E0 ", "correct", "5", 0.7, [0.6], 0.0, [0.0], 0.0),
    ]),
}


def pid(problem: str) -> str:
    return ids.prompt_id(SOURCE, problem)


def cid(problem: str, index: int) -> str:
    return ids.candidate_id(pid(problem), MODEL, SAMPLING, index)


def name_of() -> dict[str, str]:
    """candidate_id -> 'a1' style names, for readable assertions."""
    return {cid(p, i): f"{p}{i}" for p, (_, cands) in {**WORLD, **EXTRA}.items()
            for i in range(len(cands))}


def score_rows(problem, index, spec, iteration, skip=()):
    base = dict(candidate_id=cid(problem, index), prompt_id=pid(problem), iteration=iteration,
                scorer_version="1", detail=None)
    label = spec["label"]
    verdict = {"correct": 1.0, "incorrect": 0.0}.get(label)  # unparseable/None: no value
    verdicts = {
        "verifier": dict(value=verdict,
                         label=label, extracted_answer=spec["answer"], step_scores=None),
        "step_verifier": dict(value=spec["sv"], label=None, extracted_answer=None,
                              step_scores=None),
        "orm": dict(value=spec["orm"], label=None, extracted_answer=None, step_scores=None),
        "prm": dict(value=None, label=None, extracted_answer=None, step_scores=spec["prm"]),
        "prl": dict(value=spec["prl"], label=None, extracted_answer=None,
                    step_scores=spec["prl_steps"]),
    }
    return {s: {**base, "scorer": s, **v} for s, v in verdicts.items() if s not in skip}


def build(lake: Lake, world: dict, iteration: int = 0, skip: dict | None = None, tag: str = "") -> None:
    """Write prompts, candidates and scores; each scorer in its own shard, rows reversed, so
    only joining by id can line them up."""
    skip = skip or {}
    prompts, cands, scores = [], [], {s: [] for s in SCORERS}
    for problem, (reference, specs) in world.items():
        prompts.append(dict(prompt_id=pid(problem), iteration=iteration, source=SOURCE,
                            split="train", problem=problem, reference_answer=reference,
                            metadata=None))
        for index, spec in enumerate(specs):
            cands.append(dict(
                candidate_id=cid(problem, index), prompt_id=pid(problem), model_id=MODEL,
                iteration=iteration, sampling_hash=SAMPLING, sample_index=index,
                text=spec["text"], steps=spec["text"].split("\n"), num_tokens=len(spec["text"]),
                finish_reason="stop", cumulative_logprob=None, token_ids=None,
                token_logprobs=None, step_token_ends=None))
            for scorer, row in score_rows(problem, index, spec, iteration,
                                          skip.get((problem, index), ())).items():
                scores[scorer].append(row)
    lake.write("prompts", prompts, iteration)
    lake.write("candidates", cands[::-1], iteration)
    for scorer, rows in scores.items():
        if rows:
            lake.write("scores", rows[::-1], iteration, shard=f"scores-{scorer}{tag}")


# ---------------------------------------------------------------- scripted judge backends

B1, B2 = "\\boxed{1}", "\\boxed{2}"


class ScriptedBackend:
    """A GenerationBackend whose outputs come from `script(prompt, seed, call_number)`, recording calls."""

    name = "scripted"

    def __init__(self, script: Callable[[str, int, int], str]) -> None:
        self.script = script
        self.calls: list[tuple[list[str], SamplingConfig, list[int]]] = []

    def generate(self, prompts: Sequence[str], sampling: SamplingConfig,
                 seeds: Sequence[int]) -> list[list[Completion]]:
        call = len(self.calls)
        self.calls.append((list(prompts), sampling, list(seeds)))
        return [[Completion(self.script(p, s, call), [], None, None, "stop")] * sampling.n
                for p, s in zip(prompts, seeds)]

    def close(self) -> None:
        pass


def canned(*per_call: list[str]) -> ScriptedBackend:
    """A backend answering call c with per_call[c], in prompt order."""
    position: dict[int, int] = {}

    def script(prompt: str, seed: int, call: int) -> str:
        index = position.get(call, 0)
        position[call] = index + 1
        return per_call[call][index]

    return ScriptedBackend(script)


def blocks(prompt: str) -> tuple[str, str, str]:
    """(query, response 1, response 2) read back from a judge prompt by its delimiters."""
    found = []
    for name in ("QUERY", "RESPONSE 1", "RESPONSE 2"):
        match = re.search(f"<<<{name}>>>\n(.*?)\n<<<END {name}>>>", prompt, re.DOTALL)
        assert match is not None, name
        found.append(match.group(1))
    return found[0], found[1], found[2]


def prefers(marker: str) -> ScriptedBackend:
    """A judge model that quotes both responses, then picks the one containing `marker` (else 1)."""

    def script(prompt: str, seed: int, call: int) -> str:
        _, first, second = blocks(prompt)
        verdict = 2 if marker in second and marker not in first else 1
        return f"Response 1 says:\n{first}\nResponse 2 says:\n{second}\nVerdict:\n\\boxed{{{verdict}}}"

    return ScriptedBackend(script)
