"""The reward-model flow end to end through Prefect on a very small budget, then a rerun that redoes nothing."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.reward_models import reward_models_flow
from schemas.config import parse_config
from schemas.reward_models import RewardModelsConfig
from tasks.generation.generate import LazyBackend
from tasks.lake.sql import connect
from tasks.lake.store import Lake
from tasks.prompts.demo_task import make_splits
from tasks.prompts.sources import demo_prompt_rows, write_prompts

pytestmark = pytest.mark.slow


def small_config(tmp: Path, base: Path) -> RewardModelsConfig:
    lake = Lake(tmp / "lake")
    lake.root.mkdir(parents=True)
    write_prompts(lake, demo_prompt_rows(make_splits(50, 32, 8, seed=5)))
    return parse_config({
        "run_id": "rm-test", "lake": str(lake.root), "models_dir": str(tmp / "models"), "base_model": str(base),
        "train_prompts": 32,
        "train_sampling": {"n": 8, "temperature": 1.0, "max_tokens": 40, "seed": 0},
        "eval_sampling": {"n": 4, "temperature": 1.0, "max_tokens": 40, "seed": 1},
        "math_shepherd": {"rollouts": 2, "max_tokens": 40, "max_candidates": 16},
        "orm": {"epochs": 1, "batch_size": 16}, "prm": {"epochs": 1, "batch_size": 16},
    }, RewardModelsConfig)


def test_reward_model_flow_trains_scores_reports_and_reruns_for_free(prefect_harness, tiny_model_dir,
                                                                     tmp_path) -> None:  # noqa: ANN001
    config = small_config(tmp_path, tiny_model_dir)
    result = reward_models_flow(config)
    con = connect(Lake(config.lake))
    counts = dict(con.execute("SELECT scorer, count(*) FROM scores GROUP BY scorer").fetchall())
    assert counts["verifier"] == counts["step_verifier"] == 32 * 8 + 8 * 4
    assert counts["orm"] == counts["prm"] == 8 * 4  # the held-out candidates
    labelled = con.execute("""SELECT count(*) FROM scores s JOIN scores v USING (candidate_id)
                              WHERE s.scorer = 'math_shepherd' AND v.scorer = 'verifier'
                                AND v.label IN ('correct', 'incorrect')""").fetchone()[0]
    assert 0 < counts["math_shepherd"] == labelled <= 16  # two whole prompt groups; parseable outcomes only
    # PRM step scores line up with the candidates' steps; ORM values are finite logits
    misaligned = con.execute("""SELECT count(*) FROM scores s JOIN candidates c USING (candidate_id)
                                WHERE s.scorer = 'prm' AND len(s.step_scores) <> len(c.steps)""").fetchone()[0]
    assert misaligned == 0
    for name in ("orm", "prm"):
        card = json.loads((Path(result["models"][name]["path"]) / "flywheel_card.json").read_text())
        assert card["kind"] == name and card["examples"] == result["models"][name]["examples"]
    rm_rows = con.execute("SELECT scorer FROM evals WHERE run_id = 'rm-test' AND metric = 'rm'").fetchall()
    assert {r[0] for r in rm_rows} == {"orm", "prm:min", "prm:last", "prm:product", "prm:mean"}
    report = (Path(config.lake).parent / "reports" / "rm-test" / "reward_models.md").read_text()
    assert "Best-of-4 accuracy" in report and "Step-level AUROC" in report and "Within prompts" in report
    within = result["figures"]["within_prompt_auroc"]
    assert set(within) == {"orm", "prm_min"}
    assert all(w["auroc"] is None or 0.0 <= w["auroc"] <= 1.0 for w in within.values())
    assert within["orm"]["prompts_scored"] == 8  # every eval prompt's held-out candidates are scored

    before = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("candidates", "scores")}
    starts = LazyBackend.starts
    again = reward_models_flow(config)
    assert LazyBackend.starts == starts  # no engine started: nothing left to generate or label
    assert all(m["reused"] for m in again["models"].values())
    after = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("candidates", "scores")}
    assert after == before
