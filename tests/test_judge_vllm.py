"""The pairwise judge's full path with the real vLLM engine: prompts, parsing, retries, tournaments,
and the comparisons and scores rows, with exact counts (the tiny model judges badly, so most verdicts
are unparseable; the counts and the bookkeeping are what is checked)."""
from __future__ import annotations

import pytest

from schemas.generation import PromptFormat, SamplingConfig
from tasks.generation.generate import generate_candidates, model_id_for
from tasks.lake.sql import connect
from tasks.lake.store import Lake
from tasks.prompts.demo_task import make_splits
from tasks.prompts.sources import demo_prompt_rows, write_prompts
from tasks.scoring.judge import GenerativeJudge
from tasks.scoring.judge_stage import judge_candidates
from tasks.scoring.score import load_candidates

pytestmark = pytest.mark.slow


class CountingBackend:
    """Passes calls through to the real engine and records each call's prompt count."""

    name = "vllm"

    def __init__(self, backend) -> None:  # noqa: ANN001
        self.backend, self.calls = backend, []

    @property
    def tokenizer(self):  # noqa: ANN201
        return self.backend.tokenizer

    def generate(self, prompts, sampling, seeds):  # noqa: ANN001, ANN201
        self.calls.append(len(prompts))
        return self.backend.generate(prompts, sampling, seeds)


@pytest.fixture
def judged_lake(vllm_backend, tiny_model_dir, tmp_path):  # noqa: ANN001, ANN201
    lake = Lake(tmp_path / "lake")
    lake.root.mkdir()
    write_prompts(lake, demo_prompt_rows(make_splits(10, 2, 2, seed=3)))
    prompts = connect(lake).execute("SELECT prompt_id, problem, reference_answer, split FROM prompts "
                                    "WHERE split = 'train'").to_arrow_table().to_pylist()
    generate_candidates(lake, vllm_backend, prompts, model_id=model_id_for(tiny_model_dir), iteration=0,
                        sampling=SamplingConfig(n=4, temperature=1.0, max_tokens=24, seed=1),
                        fmt=PromptFormat())
    return lake, load_candidates(lake, 0)


@pytest.mark.parametrize("method,votes,per_prompt,calls", [
    ("knockout", 1, 3, 2),  # n=4: 3 matches x 1 vote over 2 rounds
    ("elo", 3, 18, 1),  # n=4: 6 pairs x 3 votes in one round
])
def test_tournaments_with_the_real_vllm_judge(judged_lake, vllm_backend, method, votes, per_prompt,
                                              calls) -> None:  # noqa: ANN001
    lake, candidates = judged_lake
    engine = CountingBackend(vllm_backend)
    judge = GenerativeJudge(engine, SamplingConfig(n=1, temperature=1.0, max_tokens=24, seed=0), max_attempts=2)
    report = judge_candidates(lake, judge, candidates, 0, method=method, votes_k=votes)
    assert report.prompts == 2 and report.comparisons == 2 * per_prompt
    con = connect(lake)
    rows = con.execute("SELECT prompt_id, verdict, attempts, first_id, a_id, b_id, tournament FROM comparisons"
                       ).fetchall()
    assert len(rows) == 2 * per_prompt
    assert {r[6] for r in rows} == {method}
    assert {r[1] for r in rows} <= {"a", "b", "unparseable"}
    assert all(r[4] < r[5] and r[3] in (r[4], r[5]) for r in rows)
    # an unparseable verdict was retried to the bound, a parsed one took at most that many attempts
    assert all((r[2] == 2) if r[1] == "unparseable" else (1 <= r[2] <= 2) for r in rows)
    assert report.unparseable == sum(r[1] == "unparseable" for r in rows)
    # engine calls: per prompt, one per round, plus one retry call per round with an unparseable vote
    assert 2 * calls <= len(engine.calls) <= 2 * calls * 2
    assert engine.calls[0] == (2 if method == "knockout" else 6) * votes  # a whole round in one call
    scores = con.execute("SELECT count(*), count(DISTINCT candidate_id) FROM scores WHERE scorer = 'judge'"
                         ).fetchone()
    assert scores == (8, 8)
    # rerun: every prompt already ranked, nothing judged again
    again = judge_candidates(lake, judge, candidates, 0, method=method, votes_k=votes)
    assert again.prompts_skipped == 2 and again.comparisons == 0
