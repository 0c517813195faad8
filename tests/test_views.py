"""The convenience views answer per split and per model, and the README's example queries run
through the plain DuckDB CLI from another folder with the views file a flow leaves behind."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tasks.lake.sql import connect, refresh_views_file
from tasks.lake.store import Lake
from tests.conftest import PROJECT_ROOT

DUCKDB = Path(os.path.dirname(sys.executable)) / "duckdb"


def _prompt(prompt_id: str, split: str) -> dict:
    return dict(prompt_id=prompt_id, iteration=0, source="t", split=split, problem=prompt_id,
                reference_answer="1", metadata=None)


def _candidate(candidate_id: str, prompt_id: str, model_id: str, index: int) -> dict:
    return dict(candidate_id=candidate_id, prompt_id=prompt_id, model_id=model_id, iteration=0,
                sampling_hash="s", sample_index=index, text="#### 1", steps=["#### 1"], num_tokens=3,
                finish_reason="stop", cumulative_logprob=None, token_ids=None, token_logprobs=None,
                step_token_ends=None)


def _score(candidate_id: str, prompt_id: str, label: str) -> dict:
    return dict(candidate_id=candidate_id, prompt_id=prompt_id, iteration=0, scorer="verifier",
                scorer_version="1", value=1.0 if label == "correct" else 0.0, label=label,
                extracted_answer="1", step_scores=None, detail=None)


def two_models_two_splits(lake: Lake) -> None:
    """Iteration 0: models m1 and m2 on train prompt pt, m1 on eval prompt pe; policy A keeps one
    of m1's train candidates, policy B one of m1's and one of m2's."""
    lake.write("prompts", [_prompt("pt", "train"), _prompt("pe", "eval")], 0)
    candidates = [("a1", "pt", "m1"), ("a2", "pt", "m1"), ("b1", "pt", "m2"), ("b2", "pt", "m2"),
                  ("e1", "pe", "m1"), ("e2", "pe", "m1")]
    lake.write("candidates", [_candidate(c, p, m, i % 2) for i, (c, p, m) in enumerate(candidates)], 0)
    labels = {"a1": "correct", "a2": "incorrect", "b1": "incorrect", "b2": "incorrect",
              "e1": "correct", "e2": "correct"}
    lake.write("scores", [_score(c, p, labels[c]) for c, p, _ in candidates], 0)
    lake.write("selections", [
        dict(candidate_id="a1", prompt_id="pt", iteration=0, policy_name="A", policy_hash="ha", rank=0, weight=1.0),
        dict(candidate_id="a1", prompt_id="pt", iteration=0, policy_name="B", policy_hash="hb", rank=0, weight=1.0),
        dict(candidate_id="b1", prompt_id="pt", iteration=0, policy_name="B", policy_hash="hb", rank=0, weight=1.0),
    ], 0)


def test_yield_and_solve_rate_are_per_split_model_and_policy(lake: Lake):
    two_models_two_splits(lake)
    con = connect(lake)
    rows = con.sql("SELECT split, model_id, policy_name, n_candidates, n_correct, n_kept, yield "
                   "FROM iteration_yield").fetchall()
    assert rows == [("eval", "m1", None, 2, 2, 0, 0.0),
                    ("train", "m1", "A", 2, 1, 1, 0.5),
                    ("train", "m1", "B", 2, 1, 1, 0.5),
                    ("train", "m2", "B", 2, 0, 1, 0.5)]
    rates = con.sql("SELECT split, model_id, prompt_id, solve_rate FROM prompt_solve_rate ORDER BY ALL").fetchall()
    assert rates == [("eval", "m1", "pe", 1.0), ("train", "m1", "pt", 0.5), ("train", "m2", "pt", 0.0)]


def test_two_samplings_of_one_model_stay_apart_in_every_view(lake: Lake):
    """Two arms that sample one model differently (another temperature) in one iteration: each
    view answers per sampling, never for their union."""
    lake.write("prompts", [_prompt("pt", "train")], 0)
    # sampling s1: x1 right, x2 wrong; sampling s2: y1 and y2 right
    cands = [("x1", "s1", 0), ("x2", "s1", 1), ("y1", "s2", 0), ("y2", "s2", 1)]
    lake.write("candidates", [_candidate(c, "pt", "m1", i) | {"sampling_hash": s} for c, s, i in cands], 0)
    labels = {"x1": "correct", "x2": "incorrect", "y1": "correct", "y2": "correct"}
    all_steps_right = {"x1": 1.0, "x2": 0.0, "y1": 0.0, "y2": 1.0}
    lake.write("scores", [_score(c, "pt", labels[c]) for c, _, _ in cands]
               + [_score(c, "pt", "correct") | {"scorer": "step_verifier", "value": all_steps_right[c]}
                  for c, _, _ in cands], 0)
    lake.write("selections", [
        dict(candidate_id=c, prompt_id="pt", iteration=0, policy_name="P", policy_hash="hp", rank=0, weight=1.0)
        for c in ("x1", "y1", "y2")], 0)
    con = connect(lake)
    assert con.sql("SELECT sampling_hash, solve_rate FROM prompt_solve_rate ORDER BY ALL").fetchall() == [
        ("s1", 0.5), ("s2", 1.0)]
    assert con.sql("SELECT sampling_hash, policy_name, n_candidates, n_correct, n_kept, yield "
                   "FROM iteration_yield ORDER BY ALL").fetchall() == [
        ("s1", "P", 2, 1, 1, 0.5), ("s2", "P", 2, 2, 2, 1.0)]
    assert con.sql("SELECT sampling_hash, policy_name, n_kept, n_all_steps_correct, purity "
                   "FROM kept_purity ORDER BY ALL").fetchall() == [
        ("s1", "P", 1, 1, 1.0), ("s2", "P", 2, 1, 0.5)]


def readme_queries() -> list[str]:
    """Every `flywheel sql "..."` example of the README."""
    text = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r'^\s*flywheel sql "([^"]+)"', text, flags=re.MULTILINE)


def test_the_readme_queries_run_through_the_duckdb_cli_from_another_folder(lake: Lake, tmp_path: Path):
    queries = readme_queries()
    assert len(queries) >= 4
    two_models_two_splits(lake)
    views = refresh_views_file(lake.root)
    assert views == lake.root / "views.sql"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for query in queries:
        proc = subprocess.run([str(DUCKDB), "-init", str(views), "-csv", "-c", query], cwd=elsewhere,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and "Error" not in proc.stderr, (query, proc.stderr)
        assert proc.stdout.strip(), query


def test_refreshing_views_of_a_missing_lake_writes_nothing(tmp_path: Path):
    assert refresh_views_file(tmp_path / "nowhere") is None
    assert not (tmp_path / "nowhere").exists()
