"""The loop through Prefect on a very small budget: lineage, evals, no-op reruns, crash resume."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from flows.loop import iteration_flow
from flows.loop import self_improve_flow
from schemas.config import parse_config
from schemas.loop import LoopConfig
from tasks.generation.generate import LazyBackend, model_id_for
from tasks.lake.sql import connect
from tasks.lake.store import Lake
from tasks.prompts.demo_task import make_splits
from tasks.prompts.sources import demo_prompt_rows, write_prompts
from tasks.rounds.context import run_summary_path


def small_config(tmp: Path, base: Path, run_id: str = "t", rounds: int = 2, backend: str = "vllm",
                 reward_models: list[dict] | None = None) -> LoopConfig:
    lake = Lake(tmp / "lake")
    lake.root.mkdir(parents=True, exist_ok=True)
    write_prompts(lake, demo_prompt_rows(make_splits(50, 24, 12, seed=11)))
    return parse_config({
        "run_id": run_id, "lake": str(lake.root), "models_dir": str(tmp / "models"),
        "base_model": str(base), "rounds": rounds, "early_stop": {"enabled": False},
        "generation": {"engine": {"backend": backend},
                       "sampling": {"n": 4, "temperature": 1.0, "max_tokens": 48, "seed": 0},
                       "chunk_size": 8},
        "scoring": {"reward_models": reward_models or []},
        # the briefly trained test model is rarely right: keep each prompt's best sample by the
        # verifier (ties to the lower sample index) so every round has data to finetune on
        "selection": {"name": "best-by-verifier",
                      "steps": [{"kind": "top_k", "k": 1, "score": {"scorer": "verifier"}}]},
        "finetune": {"epochs": 1, "batch_size": 8},
        "evaluation": {"sampling": {"n": 4, "temperature": 1.0, "max_tokens": 48, "seed": 5}, "ks": [1, 4]},
    }, LoopConfig)


def table_counts(lake: Lake) -> dict[str, int]:
    con = connect(lake)
    return {t: con.sql(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("candidates", "scores", "selections", "models", "evals")}


def test_two_rounds_through_prefect_then_a_rerun_does_nothing(prefect_harness, tiny_model_dir, tmp_path):
    # the policy also judges its samples (all of them: the test model is rarely right), on vLLM
    config = small_config(tmp_path, tiny_model_dir, reward_models=[
        {"kind": "judge", "candidates": "all", "max_tokens": 8, "attempts": 1}])
    # each round's finetuned weights are averaged with the base model's (WiSE-FT), not the previous round's
    config = config.model_copy(update={"finetune": config.finetune.model_copy(update={"merge_with_base": 0.5})})
    starts = LazyBackend.starts
    summary = self_improve_flow(config)
    assert [r["iteration"] for r in summary["rounds"]] == [0, 1]
    # three engines: M0 (round 0), M1 (its evaluation and round 1), M2; the judge starts none of its own
    assert LazyBackend.starts - starts == 3
    lake = Lake(config.lake)
    con = connect(lake)
    # each round's policy judged each train prompt's 4 samples in a knockout (3 matches, 1 vote each)
    # and ranked every one of them
    train = dict(con.sql("SELECT c.iteration, count(DISTINCT c.prompt_id) FROM candidates c JOIN prompts p "
                         "USING (prompt_id) WHERE p.split = 'train' GROUP BY 1").fetchall())
    judged = con.sql("SELECT iteration, split_part(judge_version, '+', 1), count(*), count(DISTINCT prompt_id) "
                     "FROM comparisons GROUP BY ALL ORDER BY 1").fetchall()
    assert judged == [(it, summary["rounds"][it]["model_in"], 3 * train[it], train[it]) for it in (0, 1)]
    ranked = con.sql("SELECT iteration, count(DISTINCT candidate_id) FROM scores WHERE scorer = 'judge' "
                     "GROUP BY 1 ORDER BY 1").fetchall()
    assert ranked == [(it, 4 * train[it]) for it in (0, 1)]
    models = con.sql("SELECT iteration, model_id, parent_id FROM models ORDER BY iteration").fetchall()
    # bootstrap was not run here, so lineage rows are the two finetuned checkpoints plus their parents
    assert [m[0] for m in models] == [1, 2]
    assert models[1][2] == models[0][1]  # M2's parent is M1
    cards = [json.loads((tmp_path / "models" / "t" / f"iter-{i}" / "flywheel_card.json").read_text()) for i in (1, 2)]
    assert [c["model_id"] for c in cards] == [m[1] for m in models]
    assert [c["inputs"]["merged with"] for c in cards] == [model_id_for(tiny_model_dir)] * 2
    assert cards[1]["start_model_id"] == models[0][1]
    recipe = json.loads(run_summary_path(config).read_text())["recipe"]  # the report's line per arm
    assert recipe["selection"] == "best-by-verifier" and recipe["finetune"]["merge_with_base"] == 0.5
    evaluated = con.sql("SELECT iteration, count(DISTINCT model_id), count(*) FROM evals "
                        "WHERE run_id = 't' GROUP BY iteration ORDER BY iteration").fetchall()
    assert [e[0] for e in evaluated] == [0, 1, 2] and all(e[1] == 1 for e in evaluated)
    pass1 = con.sql("SELECT count(*) FROM evals WHERE metric = 'pass' AND k = 1").fetchone()[0]
    assert pass1 == 3
    # exactly n candidates per (prompt, model, sampling) in every iteration
    bad = con.sql("SELECT count(*) FROM (SELECT prompt_id, model_id, sampling_hash, iteration, count(*) AS n "
                  "FROM candidates GROUP BY ALL HAVING n <> (CASE WHEN n = 1 THEN 1 ELSE 4 END))").fetchone()[0]
    assert bad == 0

    before = table_counts(lake)
    shards = {p: p.stat().st_mtime_ns for p in lake.root.rglob("*.parquet")}
    starts = LazyBackend.starts
    rerun = iteration_flow(config, 1)
    assert LazyBackend.starts == starts, "a finished iteration must not start an engine"
    assert table_counts(lake) == before
    assert {p: p.stat().st_mtime_ns for p in lake.root.rglob("*.parquet")} == shards
    assert rerun["model_out"] == summary["rounds"][1]["model_out"]


def test_crashed_stage_rerun_completes_without_duplicates(prefect_harness, tiny_model_dir, tmp_path):
    config = small_config(tmp_path, tiny_model_dir, run_id="crash", rounds=1, backend="hf")
    first = iteration_flow(config, 0)
    lake = Lake(config.lake)
    complete = table_counts(lake)
    ids_before = set(connect(lake).sql("SELECT candidate_id FROM candidates").fetchall())
    # a crash mid-generation lost one chunk of candidates; scoring, selection and training never ran
    lost = [p for p in lake.shards("candidates", 0)][0]
    lost.unlink()
    for table in ("scores", "selections", "models", "evals"):
        shutil.rmtree(lake.root / table, ignore_errors=True)
    shutil.rmtree(Path(config.models_dir) / "crash", ignore_errors=True)
    again = iteration_flow(config, 0)
    assert table_counts(lake) == complete
    assert set(connect(lake).sql("SELECT candidate_id FROM candidates").fetchall()) == ids_before
    dupes = connect(lake).sql("SELECT count(*) - count(DISTINCT (candidate_id, scorer)) FROM scores").fetchone()[0]
    assert dupes == 0
    assert again["model_out"] == first["model_out"]  # same kept samples → same model id
