"""rm@k reads what each reward scorer writes: a PRM's step scores through a named aggregation
(`prm:min`, ...), an ORM's value; an unknown or unscored scorer is an error before any row."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas.generation import PromptFormat, SamplingConfig
from schemas.loop import EvalStage, GenerationStage
from tasks.evaluation.evaluate import EVAL_SPLIT, evaluate_model
from tasks.generation.generate import generate_candidates
from tasks.lake import ids
from tasks.lake.store import Lake
from tasks.scoring.scorer import score_row
from tests.conftest import ArithmeticBackend

SAMPLING = SamplingConfig(n=4, temperature=0.8, max_tokens=8)
FMT = PromptFormat(template="Problem: {problem}\n")
PROBLEMS = [(1, 2), (3, 4), (5, 6)]

# Per problem, per sample_index: the PRM's step scores and the ORM's logit. Only sample 0 of each
# problem is correct (the backend answers a+b there, a+b+1 elsewhere).
PRM = {
    "1+2": [[0.9, 0.5], [0.6, 0.6], [0.2, 0.99], [0.7, 0.3]],
    "3+4": [[0.8, 0.7], [0.95, 0.1], [0.6, 0.85], None],     # sample 3: no steps (null)
    "5+6": [None, [0.2], None, []],                          # sample 0 null: k=1 picks nothing
}
ORM = {"1+2": [-1.0, 2.0, 0.5, -3.0], "3+4": [3.0, -0.5, 1.0, 0.0], "5+6": [0.1, 0.2, 0.3, 5.0]}

# Hand-computed pick of rm@4 per problem and whether it is correct:
#   1+2 min  .5 .6 .2 .3 -> s1 (x)  last .5 .6 .99 .3 -> s2 (x)  mean .7 .6 .595 .5 -> s0 (ok)
#       product .45 .36 .198 .21 -> s0 (ok)  orm -> s1 (x)
#   3+4 min  .7 .1 .6 -> s0 (ok)  last .7 .1 .85 -> s2 (x)  mean .75 .525 .725 -> s0 (ok)
#       product .56 .095 .51 -> s0 (ok)  orm -> s0 (ok)
#   5+6 the only PRM score is s1's (x) under every aggregate; orm -> s3 (x)
# rm@1 looks at sample 0 alone: correct where its score is not null (1+2, 3+4), else no pick (x).
EXPECTED = {
    ("rm@4[prm:min]"): 1 / 3, ("rm@4[prm:last]"): 0.0, ("rm@4[prm:mean]"): 2 / 3,
    ("rm@4[prm:product]"): 2 / 3, ("rm@4[orm]"): 1 / 3,
    ("rm@1[prm:min]"): 2 / 3, ("rm@1[prm:last]"): 2 / 3, ("rm@1[prm:mean]"): 2 / 3,
    ("rm@1[prm:product]"): 2 / 3, ("rm@1[orm]"): 1.0,
}


def OffByOneBackend():  # noqa: N802 - reads as the backend it builds
    """Answers "a+b" with a+b on sample 0 and a+b+1 on the others."""
    return ArithmeticBackend(lambda a, b, i: f"{a}+{b}\n#### {a + b + min(i, 1)}")


class HashVerifier:
    """A rule verifier without a process pool: the text after '#### ' against the reference."""

    name, version = "verifier", "test-1"

    def score(self, candidates):
        rows = []
        for c in candidates:
            answer = c["text"].split("#### ")[-1].strip()
            ok = answer == c["reference_answer"]
            rows.append(score_row(c, self, value=float(ok), label="correct" if ok else "incorrect",
                                  extracted_answer=answer))
        return rows

    def close(self):
        pass


def setup(lake: Lake, scored: tuple[str, ...] = ("orm", "prm"), drop: set[tuple[str, int]] = frozenset()) -> list[dict]:
    """Eval prompts and their sampled candidates, with ORM and PRM rows written as a reward-model
    flow would (one shard per scorer); `drop` leaves out (problem, sample_index) pairs."""
    prompts = [dict(prompt_id=ids.prompt_id("t", f"{a}+{b}"), iteration=0, source="t", split=EVAL_SPLIT,
                    problem=f"{a}+{b}", reference_answer=str(a + b), metadata=None) for a, b in PROBLEMS]
    lake.write("prompts", prompts, 0)
    generate_candidates(lake, OffByOneBackend(), prompts, model_id="m", iteration=0, sampling=SAMPLING, fmt=FMT)
    problem_of = {p["prompt_id"]: p["problem"] for p in prompts}
    candidates = lake.read("candidates").to_pylist()
    assert len(candidates) == len(PROBLEMS) * SAMPLING.n
    rows: dict[str, list[dict]] = {"orm": [], "prm": []}
    for c in candidates:
        problem, index = problem_of[c["prompt_id"]], c["sample_index"]
        if (problem, index) in drop:
            continue
        base = dict(candidate_id=c["candidate_id"], prompt_id=c["prompt_id"], iteration=0, label=None,
                    extracted_answer=None, detail=None)
        rows["orm"].append({**base, "scorer": "orm", "scorer_version": "orm-1", "value": ORM[problem][index],
                            "step_scores": None})
        rows["prm"].append({**base, "scorer": "prm", "scorer_version": "prm-1", "value": None,
                            "step_scores": PRM[problem][index]})
    for name in scored:
        lake.write("scores", rows[name], 0, shard=f"scores-{name}")
    return prompts


def evaluate(lake: Lake, prompts: list[dict], rm_scorers: tuple[str, ...]):
    return evaluate_model(lake, OffByOneBackend(), [HashVerifier()], prompts, run_id="r", model_id="m",
                          iteration=0, stage=EvalStage(sampling=SAMPLING, ks=(1, 4), benchmark="t",
                                                       rm_scorers=rm_scorers),
                          generation=GenerationStage(format=FMT))


def evals_rows(lake: Lake) -> list[dict]:
    return lake.read("evals").to_pylist() if lake.read("evals").num_rows else []


def test_prm_rm_at_k_aggregates_step_scores_by_the_named_aggregate(lake: Lake):
    prompts = setup(lake)
    names = ("prm:min", "prm:last", "prm:mean", "prm:product", "orm")
    summary = evaluate(lake, prompts, names)
    got = {key: value for key, value in summary.values.items() if key.startswith("rm@")}
    assert got == pytest.approx(EXPECTED)
    rows = [r for r in evals_rows(lake) if r["metric"] == "rm"]
    assert sorted({r["scorer"] for r in rows}) == sorted(names)  # the full name, aggregate included
    assert {(r["k"], r["scorer"]): r["value"] for r in rows} == pytest.approx(
        {(int(key[3]), key[5:-1]): value for key, value in EXPECTED.items()})
    assert summary.values["pass@4"] == 1.0 and summary.values["avg@4"] == 0.25


def test_an_orm_alone_still_works(lake: Lake):
    prompts = setup(lake, scored=("orm",))
    summary = evaluate(lake, prompts, ("orm",))
    assert summary.values["rm@4[orm]"] == pytest.approx(1 / 3)
    assert summary.values["rm@1[orm]"] == 1.0


@pytest.mark.parametrize("name, message", [
    ("rmx", "rm scorer 'rmx': no 'rmx' score rows for the 12 evaluated candidates"),
    ("rmx:min", "rm scorer 'rmx:min': no 'rmx' score rows for the 12 evaluated candidates"),
    # the PRM read by value: its rows leave value null, which used to make rm@k a silent 0
    ("prm", "rm scorer 'prm': none of the 12 evaluated candidates has a 'prm' value; its rows carry "
            "step scores: name an aggregate, e.g. 'prm:min'"),
    ("orm:min", "rm scorer 'orm:min': none of the 12 evaluated candidates has 'orm' step scores"),
])
def test_an_unusable_rm_scorer_is_an_error_before_any_metric_row(lake: Lake, name: str, message: str):
    prompts = setup(lake)
    with pytest.raises(ValueError, match=f"^{message}"):
        evaluate(lake, prompts, ("orm", name))
    assert evals_rows(lake) == []


def test_a_scorer_missing_rows_for_some_candidates_is_an_error(lake: Lake):
    prompts = setup(lake, drop={("3+4", 2)})
    with pytest.raises(ValueError, match=r"^rm scorer 'prm:min': 1 of the 12 evaluated candidates have no 'prm' "
                                         r"score row \(first: candidate \w+\)"):
        evaluate(lake, prompts, ("prm:min",))
    assert evals_rows(lake) == []


@pytest.mark.parametrize("names, message", [
    (("prm:median",), "unknown step aggregate 'median'"),
    ((":min",), "score name ':min' has no scorer"),
    (("orm", "orm"), "rm scorer 'orm' is listed twice"),
    (("prm min",), "score name 'prm min' contains whitespace"),
])
def test_bad_rm_scorer_names_are_refused(lake: Lake, names: tuple[str, ...], message: str):
    with pytest.raises(ValidationError, match=message):
        EvalStage(rm_scorers=names)
    prompts = setup(lake)
    with pytest.raises(ValueError, match=message):
        evaluate(lake, prompts, names)
    assert evals_rows(lake) == []


def test_good_rm_scorer_names_are_accepted():
    assert EvalStage(rm_scorers=("orm", "prm:min", "prm:last")).rm_scorers == ("orm", "prm:min", "prm:last")


def test_a_bad_rm_scorer_name_fails_before_any_generation(lake: Lake):
    prompts = [dict(prompt_id=ids.prompt_id("t", "1+2"), iteration=0, source="t", split=EVAL_SPLIT,
                    problem="1+2", reference_answer="3", metadata=None)]
    lake.write("prompts", prompts, 0)
    with pytest.raises(ValueError, match="unknown step aggregate 'median'"):
        evaluate(lake, prompts, ("prm:median",))
    assert lake.read("candidates").num_rows == 0
