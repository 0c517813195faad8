"""Evaluation against a lake: each candidate is scored once, whatever the sampling config."""
from __future__ import annotations

from schemas.generation import EngineConfig, PromptFormat, SamplingConfig
from schemas.loop import EvalStage, GenerationStage
from tasks.evaluation.evaluate import EVAL_SPLIT, evaluate_model
from tasks.lake import ids
from tasks.lake.store import Lake
from tasks.scoring.score import VerifierScorer
from tests.conftest import ArithmeticBackend


def EchoAnswerBackend():  # noqa: N802 - reads as the backend it builds
    """Answers every problem "a+b" with its sum on the first sample and sum+1 on the others."""
    return ArithmeticBackend(lambda a, b, i: f"{a}+{b}\n#### {a + b + min(i, 1)}")


def write_eval_prompts(lake: Lake, problems: list[tuple[int, int]]) -> list[dict]:
    rows = [dict(prompt_id=ids.prompt_id("t", f"{a}+{b}"), iteration=0, source="t", split=EVAL_SPLIT,
                 problem=f"{a}+{b}", reference_answer=str(a + b), metadata=None) for a, b in problems]
    lake.write("prompts", rows, 0)
    return rows


def run_eval(lake: Lake, prompts: list[dict], sampling: SamplingConfig, run_id: str = "r"):
    scorer = VerifierScorer("exact")
    try:
        return evaluate_model(lake, EchoAnswerBackend(), [scorer], prompts, run_id=run_id, model_id="m",
                              iteration=0, stage=EvalStage(sampling=sampling, ks=(1,), benchmark="t"),
                              generation=GenerationStage(format=PromptFormat(template="Problem: {problem}\n")))
    finally:
        scorer.close()


def test_a_greedy_only_evaluation_scores_each_candidate_once(lake: Lake):
    prompts = write_eval_prompts(lake, [(1, 2), (3, 4), (5, 6)])
    summary = run_eval(lake, prompts, SamplingConfig(n=1, temperature=0.0, max_tokens=8))
    scores = lake.read("scores").to_pylist()
    candidates = lake.read("candidates").to_pylist()
    assert len(candidates) == 3
    assert len(scores) == 3 and len({(r["candidate_id"], r["scorer"]) for r in scores}) == 3
    assert summary.values["pass@1"] == 1.0 and summary.values["greedy@1"] == 1.0


def test_a_sampled_evaluation_scores_sampled_and_greedy_candidates_once_each(lake: Lake):
    prompts = write_eval_prompts(lake, [(1, 2), (3, 4)])
    summary = run_eval(lake, prompts, SamplingConfig(n=4, temperature=0.8, max_tokens=8))
    scores = lake.read("scores").to_pylist()
    assert len(lake.read("candidates")) == 2 * 4 + 2
    assert len(scores) == 10 and len({r["candidate_id"] for r in scores}) == 10
    assert summary.values["avg@4"] == 0.25 and summary.values["greedy@1"] == 1.0


def test_an_evaluation_under_another_config_is_new_rows_not_a_reuse(lake: Lake):
    prompts = write_eval_prompts(lake, [(1, 2), (3, 4)])
    first = run_eval(lake, prompts, SamplingConfig(n=2, temperature=0.8, max_tokens=8))
    second = run_eval(lake, prompts, SamplingConfig(n=4, temperature=0.8, max_tokens=8))
    evals = lake.read("evals").to_pylist()
    hashes = {r["eval_hash"] for r in evals}
    assert len(hashes) == 2
    assert first.values["avg@2"] == 0.5 and second.values["avg@4"] == 0.25
    again = run_eval(lake, prompts, SamplingConfig(n=4, temperature=0.8, max_tokens=8))
    assert again.values == second.values and len(lake.read("evals")) == len(evals)


def BlankLineStepsBackend():  # noqa: N802 - reads as the backend it builds
    """Answers "a+b" correctly in three blank-line-separated steps, the second spanning two lines."""
    return ArithmeticBackend(lambda a, b, i: f"{a}+{b}\n\nfirst {a}\nthen {b}\n\n#### {a + b}")


def test_evaluation_splits_steps_on_the_given_separator(lake: Lake):
    from tasks.evaluation.evaluate import eval_hash
    from tasks.generation.generate import generation_hash

    prompts = write_eval_prompts(lake, [(1, 2), (3, 4)])
    sampling, fmt = SamplingConfig(n=2, temperature=0.8, max_tokens=8), PromptFormat(template="Problem: {problem}\n")
    scorer = VerifierScorer("exact")
    try:
        summary = evaluate_model(lake, BlankLineStepsBackend(), [scorer], prompts, run_id="r", model_id="m",
                                 iteration=0, stage=EvalStage(sampling=sampling, ks=(1,), benchmark="t"),
                                 generation=GenerationStage(format=fmt, step_separator="\n\n"))
    finally:
        scorer.close()
    candidates = lake.read("candidates").to_pylist()
    assert len(candidates) == 2 * 2 + 2
    for c in candidates:
        a, b = c["text"].split("\n")[0].split("+")
        assert c["steps"] == [f"{a}+{b}", f"first {a}\nthen {b}", f"#### {int(a) + int(b)}"]
    engine = EngineConfig()  # the backend names none: the default engine's
    assert {c["sampling_hash"] for c in candidates} == {
        generation_hash(sampling, fmt, "\n\n", engine),
        generation_hash(sampling.model_copy(update={"n": 1, "temperature": 0.0}), fmt, "\n\n", engine)}
    assert summary.values["pass@1"] == 1.0 and summary.values["greedy@1"] == 1.0
    ids_ = [p["prompt_id"] for p in prompts]
    written = {r["eval_hash"] for r in lake.read("evals").to_pylist()}
    assert written == {eval_hash(sampling, fmt, ids_, [scorer], step_separator="\n\n", engine=engine)}
    assert eval_hash(sampling, fmt, ids_, [scorer], engine=engine) != eval_hash(
        sampling, fmt, ids_, [scorer], step_separator="\n\n", engine=engine)
    assert eval_hash(sampling, fmt, ids_, [scorer], engine=engine) != eval_hash(
        sampling, fmt, ids_, [scorer], engine=EngineConfig(backend="hf"))


def test_an_empty_step_separator_is_refused(lake: Lake):
    import pytest

    prompts = write_eval_prompts(lake, [(1, 2)])
    with pytest.raises(ValueError, match="step_separator is empty"):
        evaluate_model(lake, BlankLineStepsBackend(), [], prompts, run_id="r", model_id="m", iteration=0,
                       stage=EvalStage(sampling=SamplingConfig(n=1, temperature=0.0, max_tokens=8), ks=(1,),
                                       benchmark="t"),
                       generation=GenerationStage(step_separator=""))
    assert lake.read("candidates").num_rows == 0
