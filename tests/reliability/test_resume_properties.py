"""Resume properties: whatever the chunking, the sharding, the prompts added between runs and the
kills at random points, generate → score → select ends with exactly the tables of one
uninterrupted run, row for row, with no duplicate key.

Each case draws, from its seed: n, the prompt set and the subset the first run sees, then a
sequence of runs with random chunk sizes, shard groupings and a kill at a random visit of a random
write point (the write's temporary file or its rename), until a run finishes; then the same run
again, which must write nothing. The engine is a deterministic stand-in (sample i of a request
seeded s is a pure function of the prompt and s + i, the rule vLLM follows): what is tested is the
lake's resume logic, which does not depend on the engine. The real engine's side of the same rule
is tested in tests/test_generation_integrity.py, and real kill -9 resumes of whole rounds in
test_crash_resume.py.

`make test` runs FLYWHEEL_PROPERTY_CASES (default 12) cases; `make chaos` runs 60 more.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import pyarrow as pa
import pytest

import tasks.lake.store
from schemas import table_spec
from schemas.generation import EngineConfig, PromptFormat, SamplingConfig
from schemas.policy import PRESETS
from tasks.generation.generate import Completion, generate_candidates, generation_chunks, generation_hash
from tasks.lake import ids
from tasks.lake.store import Lake
from tasks.scoring.score import VerifierScorer, load_candidates, score_candidates
from tasks.selection.select import select

MODEL = "model-fake"
FORMAT = PromptFormat(template="Q: {problem}\n")
POLICY = PRESETS["keep_correct"]
WRITE_POINTS = ("write-temp", "write")
TABLES = ("candidates", "scores", "selections")
QUICK_CASES = int(os.environ.get("FLYWHEEL_PROPERTY_CASES", "12"))
CHAOS_CASES = 60


class Killed(BaseException):
    """The simulated kill: not an Exception, so no stage code can catch it and carry on."""


class FakeEngine:
    """Sample i of a request seeded s answers "a+b" from a generator seeded (problem, s + i)."""

    name = "fake"

    def generate(self, prompts, sampling, seeds):
        return [[self._sample(prompt, seed + i) for i in range(sampling.n)] for prompt, seed in zip(prompts, seeds)]

    @staticmethod
    def _sample(prompt: str, seed: int) -> Completion:
        a, b = (int(x) for x in prompt.removeprefix("Q: ").strip().split("+"))
        rng = random.Random(f"{prompt}|{seed}")
        answer = a + b + rng.choice([0, 0, 1, -1])
        return Completion(text=f"{a}+{b}={answer}\n#### {answer}", token_ids=[rng.randrange(100)] * 3,
                          token_logprobs=None, cumulative_logprob=None, finish_reason="stop")

    def close(self):
        pass


class KillSwitch:
    """Raises Killed at the `visit`-th time any shard write reaches `point` (None: never)."""

    def __init__(self, point: str | None, visit: int) -> None:
        self.point, self.visit, self.seen = point, visit, 0

    def __call__(self, name: str) -> None:
        if self.point is not None and name.split(":")[0] == self.point:
            self.seen += 1
            if self.seen == self.visit:
                raise Killed(f"{name} visit {self.visit}")


def prompt_rows(problems: list[str]) -> list[dict]:
    return [dict(prompt_id=ids.prompt_id("prop", p), iteration=0, source="prop", split="train", problem=p,
                 reference_answer=str(sum(int(x) for x in p.split("+"))), metadata=None) for p in problems]


def run_stages(lake: Lake, prompts: list[dict], sampling: SamplingConfig, rng: random.Random) -> None:
    """One run of generate (random chunk size and shard grouping), score (random chunk size) and
    select, as the loop runs them."""
    chunk_size = rng.randint(1, len(prompts) + 1)
    chunks = generation_chunks(prompts, chunk_size)
    rng.shuffle(chunks)
    groups = max(1, min(len(chunks), rng.randint(1, 3)))
    for g in range(groups):
        shard = [p for chunk in chunks[g::groups] for p in chunk]
        generate_candidates(lake, FakeEngine(), shard, model_id=MODEL, iteration=0, sampling=sampling, fmt=FORMAT,
                            chunk_size=chunk_size)
    s_hash = generation_hash(sampling, FORMAT, "\n", EngineConfig())
    candidates = load_candidates(lake, 0, model_id=MODEL, prompt_split="train", sampling_hash=s_hash)
    scorer = VerifierScorer("exact", workers=1)
    try:
        score_candidates(lake, scorer, candidates, 0, chunk_size=rng.randint(1, len(candidates) + 1))
    finally:
        scorer.close()
    select(lake, 0, POLICY, model_id=MODEL, sampling_hash=s_hash, reuse=True)


def table_rows(lake: Lake, table: str) -> list[tuple]:
    spec = table_spec(table)
    rows = lake.read(table).to_pylist()
    return sorted(tuple(repr(row[c]) for c in spec.columns) for row in rows)


def shard_files(lake: Lake) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for table in TABLES for p in lake.shards(table)}


def check_case(seed: int, tmp_path: Path, monkeypatch) -> None:
    rng = random.Random(seed)
    n = rng.randint(1, 3)
    sampling = SamplingConfig(n=n, temperature=0.8, max_tokens=16, seed=rng.randrange(1000))
    problems = sorted({f"{rng.randint(0, 30)}+{rng.randint(0, 30)}" for _ in range(rng.randint(3, 9))})
    first_seen = rng.sample(problems, rng.randint(1, len(problems)))

    # The reference: one uninterrupted run over every prompt, in a lake of its own.
    reference = Lake(tmp_path / "reference")
    reference.write("prompts", prompt_rows(problems), 0)
    run_stages(reference, prompt_rows(problems), sampling, random.Random(0))

    lake = Lake(tmp_path / "lake")
    lake.write("prompts", prompt_rows(first_seen), 0)
    switch = KillSwitch(None, 0)
    monkeypatch.setattr(tasks.lake.store, "crash_point", lambda name: switch(name))
    runs, added = 0, False
    while True:
        runs += 1
        assert runs < 40, f"case {seed}: no run finished"
        switch.point = None  # the kill is the run's, not the user's
        if not added and (runs > 1 or rng.random() < 0.5):
            added = True  # the prompts the first run did not see arrive between two runs
            unseen = sorted(set(problems) - set(first_seen))
            if unseen:
                lake.write("prompts", prompt_rows(unseen), 0)
        kill = rng.random() < 0.7
        switch.point, switch.visit, switch.seen = (rng.choice(WRITE_POINTS) if kill else None), rng.randint(1, 6), 0
        prompts = prompt_rows(problems if added else first_seen)
        try:
            run_stages(lake, prompts, sampling, rng)
        except Killed:
            continue
        if added:
            break
    before = shard_files(lake)
    switch.point = None
    run_stages(lake, prompt_rows(problems), sampling, rng)  # the same run once more: nothing to do
    assert shard_files(lake) == before, f"case {seed}: a rerun of a finished run wrote shards"

    for table in TABLES:
        got, want = table_rows(lake, table), table_rows(reference, table)
        assert len(got) == len({r for r in got}), f"case {seed}: duplicate rows in {table}"
        assert got == want, f"case {seed}: {table} differs from the uninterrupted run"
    # Independent of the code under test: exactly n candidates per prompt, with the ids the id
    # rule gives, and each verdict the arithmetic truth of the text.
    candidates = lake.read("candidates").to_pylist()
    s_hash = generation_hash(sampling, FORMAT, "\n", EngineConfig())
    assert sorted(c["candidate_id"] for c in candidates) == sorted(
        ids.candidate_id(p["prompt_id"], MODEL, s_hash, i) for p in prompt_rows(problems) for i in range(n))
    texts = {c["candidate_id"]: c["text"] for c in candidates}
    for score in lake.read("scores").to_pylist():
        expression, answer = texts[score["candidate_id"]].split("\n")[0].split("=")
        truth = sum(int(x) for x in expression.split("+")) == int(answer)
        assert score["label"] == ("correct" if truth else "incorrect")
    assert pa.concat_tables([lake.read(t) for t in ("selections",)]).num_rows == sum(
        1 for s in lake.read("scores").to_pylist() if s["label"] == "correct")


@pytest.mark.parametrize("seed", range(QUICK_CASES))
def test_resume_equals_an_uninterrupted_run(seed, tmp_path, monkeypatch):
    check_case(seed, tmp_path, monkeypatch)


@pytest.mark.chaos
@pytest.mark.parametrize("seed", range(1000, 1000 + CHAOS_CASES))
def test_resume_equals_an_uninterrupted_run_many_cases(seed, tmp_path, monkeypatch):
    check_case(seed, tmp_path, monkeypatch)
