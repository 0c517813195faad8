"""Reward-guided inference: every pick method on a hand-written candidate table (exact picks), the
missing-score error, cost accounting, the flow end to end on the tiny model, and the CLI's errors."""
from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from schemas.best_of_n import METHOD_NAMES, BestOfNConfig
from schemas.config import ConfigError, parse_config
from schemas.generation import SamplingConfig
from tasks.selection.best_of_n import (
    METHODS, CountingBackend, MissingScoreError, PromptCostJudge, SamplingCost, Signals, orm_vote_weight,
    pick_all, render_table, summarise_picks,
)
from tasks.generation.generate import Completion
from tests.conftest import run_cli


# -- a fixed candidate table ----------------------------------------------------------------------
def table(prompt_id: str, ids: Sequence[str]) -> list[dict]:
    """Candidates of one prompt; ids[i] has sample_index i."""
    return [{"candidate_id": cid, "prompt_id": prompt_id, "sample_index": i} for i, cid in enumerate(ids)]


# Ids sort against sample order, so "ties to the lower sample_index" differs from "to the lower id".
A = ["a-z", "a-y", "a-x", "a-w"]
B = ["b-5", "b-4", "b-3", "b-2", "b-1"]
C = ["c-2", "c-1"]
CANDIDATES = table("p-a", A) + table("p-b", B) + table("p-c", C)

ANSWERS = {
    # p-a: "5" twice, "7" once, one unparseable sample
    "a-z": "7", "a-y": "5", "a-x": "5", "a-w": None,
    # p-b: "9" (written "+9" once) and "4" tie at two votes each; "9" comes first (sample 1)
    "b-5": None, "b-4": "9", "b-3": "4", "b-2": "4", "b-1": "+9",
    # p-c: nothing parses, nothing votes
    "c-2": None, "c-1": None,
}
ORM = {
    "a-z": 2.0, "a-y": -3.0, "a-x": -3.0, "a-w": 2.0,  # a tie at the top: samples 0 and 3
    **{cid: 0.5 for cid in B}, **{cid: -1.0 for cid in C},
}
PRM = {
    # each aggregation picks another sample of p-a
    "a-z": [0.9, 0.2, 0.9],     # min .2   last .9  product .162  mean .667
    "a-y": [0.5, 0.5, 0.5],     # min .5   last .5  product .125  mean .5
    "a-x": [0.3, 0.95, 0.6],    # min .3   last .6  product .171  mean .617
    "a-w": [0.99, 0.99, 0.1],   # min .1   last .1  product .098  mean .693
    # p-b: sample 0 has no steps (no score: loses); samples 3 and 4 tie at the top
    "b-5": [], "b-4": [0.1], "b-3": [0.1], "b-2": [0.3], "b-1": [0.3],
    "c-2": [0.4], "c-1": [0.4],
}
JUDGE = {
    "knockout": {"a-z": 1.0, "a-y": 3.0, "a-x": 2.0, "a-w": 1.0,
                 "b-5": 1.0, "b-4": 2.0, "b-3": 1.0, "b-2": 2.0, "b-1": 4.0, "c-2": 1.0, "c-1": 2.0},
    "elo": {"a-z": 1016.0, "a-y": 984.0, "a-x": 1016.0, "a-w": 984.0,  # tie: samples 0 and 2
            **{cid: 1000.0 for cid in B}, "c-2": 984.0, "c-1": 1016.0},
}
SIGNALS = Signals(answers=ANSWERS, orm=ORM, prm=PRM, judge=JUDGE)

EXPECTED = {  # method -> picked sample_index per prompt (p-a, p-b, p-c)
    "orm": (0, 0, 0),
    "prm_min": (1, 3, 0),
    "prm_last": (0, 3, 0),
    "prm_product": (2, 3, 0),
    "prm_mean": (3, 3, 0),
    "majority": (1, 1, 0),
    "weighted_majority": (0, 1, 0),
    "knockout": (1, 4, 1),
    "elo": (0, 0, 1),
}


def shuffled(rows: list[dict], seed: int) -> list[dict]:
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows


def picks_of(method: str, candidates: list[dict] = CANDIDATES, signals: Signals = SIGNALS) -> dict:
    return {p.prompt_id: p for p in pick_all(method, candidates, signals)}


def test_the_registry_has_every_method_of_the_config() -> None:
    assert tuple(METHODS) == METHOD_NAMES == tuple(EXPECTED)


@pytest.mark.parametrize("method", list(EXPECTED))
def test_exact_picks_on_the_fixed_table_whatever_the_row_order(method: str) -> None:
    for seed in range(3):  # joined by id, never by position
        picks = picks_of(method, shuffled(CANDIDATES, seed))
        assert tuple(picks[p].sample_index for p in ("p-a", "p-b", "p-c")) == EXPECTED[method]
        for pick in picks.values():
            group = {c["candidate_id"]: c for c in CANDIDATES if c["prompt_id"] == pick.prompt_id}
            assert group[pick.candidate_id]["sample_index"] == pick.sample_index
            assert pick.answer == ANSWERS[pick.candidate_id] and pick.method == method


def test_majority_and_weighted_majority_disagree_and_unparseable_answers_do_not_vote() -> None:
    plain, weighted = picks_of("majority"), picks_of("weighted_majority")
    assert (plain["p-a"].answer, plain["p-a"].score) == ("5", 2.0)  # two votes beat one
    # weights sigmoid(2) = 0.881 for "7" against 2 * sigmoid(-3) = 0.095 for "5"; the unparseable
    # sample's high ORM score adds nothing
    assert weighted["p-a"].answer == "7"
    assert weighted["p-a"].score == pytest.approx(1 / (1 + math.exp(-2.0)))
    # a 2-2 tie goes to the answer seen first; "+9" counts as "9"
    assert (plain["p-b"].answer, plain["p-b"].score) == ("9", 2.0)
    # nobody votes: the first sample, no answer, no score
    assert (plain["p-c"].sample_index, plain["p-c"].answer, plain["p-c"].score) == (0, None, None)


def test_prm_aggregations_disagree_and_a_candidate_without_steps_never_wins() -> None:
    picked = {m: picks_of(m)["p-a"] for m in ("prm_min", "prm_last", "prm_product", "prm_mean")}
    assert len({p.candidate_id for p in picked.values()}) == 4
    assert picked["prm_product"].score == pytest.approx(0.3 * 0.95 * 0.6)
    assert picks_of("prm_min")["p-b"].candidate_id == "b-2"  # sample 0 ("b-5") has no steps


def test_orm_vote_weight_is_the_sigmoid_in_bounds_for_any_logit() -> None:
    assert orm_vote_weight(0.0) == 0.5
    assert orm_vote_weight(3.0) == pytest.approx(1 / (1 + math.exp(-3.0)))
    assert orm_vote_weight(-3.0) == pytest.approx(1 - orm_vote_weight(3.0))
    assert orm_vote_weight(-1000.0) == 0.0 and orm_vote_weight(1000.0) == 1.0


@pytest.mark.parametrize("method, signals, message", [
    ("orm", Signals(answers=ANSWERS, orm={k: v for k, v in ORM.items() if k != "a-x"}),
     "prompt p-a: method 'orm': no ORM score for candidate a-x (sample 2)"),
    ("weighted_majority", Signals(answers=ANSWERS, orm={**ORM, "b-3": None}),
     "prompt p-b: method 'weighted_majority': no ORM score for candidate b-3"),
    ("prm_mean", Signals(prm={k: v for k, v in PRM.items() if k != "c-1"}),
     "prompt p-c: method 'prm_mean': no PRM step scores for candidate c-1 (sample 1)"),
    ("majority", Signals(answers={k: v for k, v in ANSWERS.items() if k != "a-z"}),
     "prompt p-a: method 'majority': no extracted answer for candidate a-z (sample 0)"),
    ("elo", Signals(judge={"knockout": JUDGE["knockout"]}),
     "prompt p-a: method 'elo': no elo judge score for candidate a-z (sample 0)"),
])
def test_a_missing_score_names_the_prompt_the_method_and_the_candidate(method, signals, message) -> None:
    with pytest.raises(MissingScoreError, match=re.escape(message)):
        pick_all(method, CANDIDATES, signals)


def test_bad_candidate_tables_and_unknown_methods_are_refused() -> None:
    with pytest.raises(ValueError, match="prompt p-a: two candidates have sample_index 0"):
        pick_all("orm", table("p-a", ["a-z"]) + table("p-a", ["a-y"]), SIGNALS)
    with pytest.raises(ValueError, match="unknown best-of-n method 'beam'"):
        pick_all("beam", CANDIDATES, SIGNALS)


# -- cost -----------------------------------------------------------------------------------------
class VerdictBackend:
    """A fake judge engine: every completion is a valid verdict 1 of `tokens` tokens."""

    name = "fake"

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens

    def generate(self, prompts, sampling, seeds):  # noqa: ANN001, ANN201
        return [[Completion("\\boxed{1}", list(range(self.tokens)), None, None, "stop")] for _ in prompts]

    def close(self) -> None:
        pass


def test_judge_cost_is_charged_to_each_prompt(lake) -> None:  # noqa: ANN001
    from tasks.scoring.judge import GenerativeJudge
    from tasks.scoring.judge_stage import judge_candidates

    candidates = [{**c, "text": f"text of {c['candidate_id']}", "problem": "q"}
                  for c in table("p-a", A) + table("p-b", B)]
    counter = CountingBackend(VerdictBackend(tokens=3))
    judge = PromptCostJudge(GenerativeJudge(counter, SamplingConfig(n=1, max_tokens=8)), counter,
                            {c["candidate_id"]: c["prompt_id"] for c in candidates})
    judge_candidates(lake, judge, candidates, 0, method="knockout", scorer="judge_knockout")
    # knockout: n=4 takes 2 rounds and 3 judgments, n=5 takes 3 rounds and 4 judgments; one call per round
    assert {p: (c.engine_calls, c.generated_tokens) for p, c in judge.costs.items()} == {
        "p-a": (2, 3 * 3), "p-b": (3, 4 * 3)}
    assert (counter.calls, counter.prompts, counter.tokens) == (5, 7, 21)


def test_summary_and_table_from_picks_rows() -> None:
    def row(method: str, correct: bool | None, calls: int | None) -> dict:
        return {"method": method, "correct": correct, "rm_passes": 4 if method == "orm" else 0,
                "judge_comparisons": 3 if method == "knockout" else 0, "extra_engine_calls": calls,
                "extra_generated_tokens": None if calls is None else 10 * calls}

    rows = [row("orm", True, 0), row("orm", False, 0), row("orm", None, 0),
            row("knockout", True, 2), row("knockout", True, None)]
    orm, knockout = summarise_picks(rows)
    assert (orm.method, orm.prompts, orm.with_reference, orm.accuracy, orm.rm_passes) == ("orm", 3, 2, 0.5, 12)
    assert (orm.engine_calls, orm.generated_tokens) == (0, 0)
    assert (knockout.accuracy, knockout.judge_comparisons, knockout.engine_calls) == (1.0, 6, None)
    text = render_table(SamplingCost(prompts=3, n=4, engine_calls=1, generated_tokens=1234), [orm, knockout])
    lines = text.splitlines()
    assert lines[2] == "| sampling 4 per prompt (shared) | | | 1 | 1,234 | | |"
    assert lines[3].startswith("| orm | 0.500 | ") and lines[3].endswith(" | 0 | 0 | 12 | 0 |")
    assert lines[4].startswith("| knockout | 1.000 | 1.000–1.000 | n/a | n/a | 0 | 6 |")


# -- config and plan ------------------------------------------------------------------------------
def test_config_rejects_unknown_keys_unknown_and_repeated_methods() -> None:
    with pytest.raises(ConfigError, match="unknown key 'judge.vots'"):
        parse_config({"judge": {"vots": 3}}, BestOfNConfig)
    with pytest.raises(ConfigError, match="methods"):
        parse_config({"methods": ["orm", "beam"]}, BestOfNConfig)
    with pytest.raises(ConfigError, match="method 'orm' is listed twice"):
        parse_config({"methods": ["orm", "elo", "orm"]}, BestOfNConfig)


def test_methods_without_their_model_are_skipped_or_refused_when_asked_for(tmp_path: Path) -> None:
    from tasks.selection.best_of_n_run import plan_methods

    config = parse_config({"prm_model": str(tmp_path / "no-prm")}, BestOfNConfig)
    run, skipped = plan_methods(config)
    assert run == ["majority", "knockout", "elo"]
    assert skipped["orm"] == skipped["weighted_majority"] == "no orm_model given"
    assert skipped["prm_min"].startswith(f"prm_model folder {tmp_path / 'no-prm'} not found")
    asked = config.model_copy(update={"methods": ("majority", "prm_last")})
    with pytest.raises(ValueError, match="method 'prm_last' cannot run: prm_model folder"):
        plan_methods(asked)


def test_shipped_config_is_valid() -> None:
    from schemas.config import load_config
    from tests.conftest import PROJECT_ROOT

    config = load_config(PROJECT_ROOT / "configs" / "best-of-n.yaml", BestOfNConfig)
    assert config.split == "eval" and config.methods is None
    assert config.orm_model == "data/models/reward-models/orm"


def test_cli_bad_config_key_is_one_line_and_exit_1(tmp_path: Path) -> None:
    config = tmp_path / "bon.yaml"
    config.write_text("run_id: x\njudge:\n  vots: 3\n")
    proc = run_cli("best-of-n", "--config", str(config))
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"flywheel: error: {config}: unknown key 'judge.vots'"


# -- the flow end to end on the tiny model --------------------------------------------------------
def tiny_reward_models(base: Path, out: Path) -> tuple[Path, Path]:
    """An ORM and a PRM from the tiny model after two optimiser steps: real folders, meaningless scores."""
    from tasks.scoring.reward_model import ORM_KIND, PRM_KIND
    from tasks.training.reward_train import RMExample, RMTrainConfig, train_reward_model

    examples = [RMExample(f"e{i}", f"Q: {i}+1\n", f"{i}+1={i + 1}\n#### {i + 1}", (float(i % 2),)) for i in range(4)]
    steps = [RMExample(e.key, e.prompt, e.response, (1.0, float(i % 2))) for i, e in enumerate(examples)]
    config = RMTrainConfig(max_steps=2, batch_size=4, warmup_steps=1)
    orm = train_reward_model(base, ORM_KIND, examples, config, out / "orm", prefix="orm")
    prm = train_reward_model(base, PRM_KIND, steps, config, out / "prm", prefix="prm")
    return Path(orm.path), Path(prm.path)


@pytest.mark.slow
def test_flow_picks_once_per_prompt_and_method_and_reports_what_the_picks_say(
        prefect_harness, tiny_model_dir, tmp_path) -> None:  # noqa: ANN001
    from flows.best_of_n import best_of_n_flow
    from tasks.generation.generate import LazyBackend
    from tasks.lake.sql import connect
    from tasks.lake.store import Lake
    from tasks.prompts.demo_task import make_splits
    from tasks.prompts.sources import demo_prompt_rows, write_prompts
    from tasks.scoring.score import VerifierScorer

    lake = Lake(tmp_path / "lake")
    lake.root.mkdir()
    write_prompts(lake, demo_prompt_rows(make_splits(20, 4, 6, seed=11)))
    orm, prm = tiny_reward_models(tiny_model_dir, tmp_path / "models")
    config = parse_config({
        "run_id": "bon-test", "lake": str(lake.root), "policy_model": str(tiny_model_dir), "prompts": 3,
        "sampling": {"n": 4, "temperature": 1.0, "max_tokens": 24, "seed": 5},
        "orm_model": str(orm), "prm_model": str(prm),
        "judge": {"votes": 1, "attempts": 2, "max_tokens": 16},
    }, BestOfNConfig)
    result = best_of_n_flow(config)
    con = connect(lake)

    per_method = dict(con.execute("SELECT method, count(DISTINCT prompt_id) FROM picks GROUP BY method").fetchall())
    assert per_method == {m: 3 for m in METHOD_NAMES} and result["picks"] == 27 and not result["skipped"]
    assert con.execute("SELECT count(*) FROM picks").fetchone()[0] == 27
    # every pick is a candidate of its own prompt, from this run's policy and sampling
    assert con.execute("""SELECT count(*) FROM picks k JOIN candidates c
                          ON c.candidate_id = k.candidate_id AND c.prompt_id = k.prompt_id
                             AND c.sample_index = k.sample_index AND c.model_id = k.model_id""").fetchone()[0] == 27
    # the ORM pick is the top ORM score of its prompt
    assert con.execute("""SELECT count(*) FROM picks k WHERE method = 'orm' AND k.score =
                          (SELECT max(value) FROM scores s JOIN candidates c USING (candidate_id)
                           WHERE s.scorer = 'orm' AND c.prompt_id = k.prompt_id)""").fetchone()[0] == 3
    # costs: reward-model passes and judge work per prompt
    costs = {m: (r, j, e) for m, r, j, e in con.execute(
        "SELECT method, sum(rm_passes), sum(judge_comparisons), min(extra_engine_calls) FROM picks GROUP BY 1"
    ).fetchall()}
    assert costs["orm"] == (12, 0, 0) and costs["majority"] == (0, 0, 0)
    assert costs["knockout"][:2] == (0, 3 * 3) and costs["elo"][:2] == (0, 3 * 6)
    assert costs["knockout"][2] >= 2 and costs["elo"][2] >= 1  # at least one engine call per round
    assert printed_accuracies(result["table"]) == verifier_accuracies(con)
    report = Path(result["report"]).read_text()
    assert result["table"] in report and "pass@4" in report

    # rerun: no engine starts, the same picks and costs
    before = con.execute("SELECT * FROM picks ORDER BY method, prompt_id").fetchall()
    starts = LazyBackend.starts
    again = best_of_n_flow(config)
    assert LazyBackend.starts == starts and again["table"] == result["table"]
    assert connect(lake).execute("SELECT * FROM picks ORDER BY method, prompt_id").fetchall() == before

    # The tiny policy rarely solves a problem, so relabel the verifier's rows (even sample_index:
    # correct) and rerun: every pick's `correct` and the printed accuracies follow the verifier.
    relabel_verifier(lake, VerifierScorer(config.verifier_mode, config.extractors).version)
    relabelled = best_of_n_flow(config)
    con = connect(lake)
    assert con.execute("SELECT count(*) FROM picks WHERE correct = (sample_index % 2 = 0)").fetchone()[0] == 27
    assert printed_accuracies(relabelled["table"]) == verifier_accuracies(con)

    # A judge whose context cannot hold the judge prompts: its methods are skipped and the report
    # says why (no engine starts); asked for by name, the run is refused.
    small = config.model_copy(update={"engine": config.engine.model_copy(update={"max_model_len": 200})})
    starts = LazyBackend.starts
    limited = best_of_n_flow(small)
    assert LazyBackend.starts == starts and set(limited["skipped"]) == {"knockout", "elo"}
    assert re.fullmatch(r"the judge prompt for candidates \w+ vs \w+ has \d+ tokens \+ max_tokens 16, more "
                        r"than the judge model's context of 200 tokens", limited["skipped"]["elo"])
    assert limited["skipped"]["elo"] in Path(limited["report"]).read_text()
    with pytest.raises(ValueError, match="method 'knockout' cannot run: the judge prompt for candidates"):
        best_of_n_flow(small.model_copy(update={"methods": ("majority", "knockout")}))


def printed_accuracies(table_text: str) -> dict[str, str]:
    """method -> accuracy cell of the printed table (rows after the header and the sampling row)."""
    return {line.split("|")[1].strip(): line.split("|")[2].strip() for line in table_text.splitlines()[3:]}


def verifier_accuracies(con) -> dict[str, str]:  # noqa: ANN001
    """method -> share of its picks the verifier's rows call correct, recomputed in SQL."""
    rows = con.execute("""SELECT k.method, avg(CASE WHEN v.label = 'correct' THEN 1.0 ELSE 0.0 END)
                          FROM picks k JOIN scores v ON v.candidate_id = k.candidate_id
                          WHERE v.scorer = 'verifier' GROUP BY 1""").fetchall()
    return {method: f"{float(value):.3f}" for method, value in rows}


def relabel_verifier(lake, version: str) -> None:  # noqa: ANN001
    """Replace every verifier row: correct for even sample_index, incorrect for odd."""
    from tasks.lake.sql import connect

    for shard in lake.shards("scores"):
        if lake.file_metadata(shard).get("scorer") == "verifier":
            shard.unlink()
    candidates = connect(lake).execute("SELECT candidate_id, prompt_id, sample_index FROM candidates").fetchall()
    rows = [{"candidate_id": cid, "prompt_id": pid, "iteration": 0, "scorer": "verifier", "scorer_version": version,
             "value": float(index % 2 == 0), "label": "correct" if index % 2 == 0 else "incorrect",
             "extracted_answer": None, "step_scores": None, "detail": "relabelled by the test"}
            for cid, pid, index in candidates]
    lake.write("scores", rows, iteration=0)
