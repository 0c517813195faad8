"""Task runners as a setting: generation and scoring mapped over prompt shards give the same rows
on threads (one shard) and on a two-worker Dask LocalCluster (two shards, one engine per worker)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from prefect import flow

from flows.loop import generate_stage, score_stage
from tasks.rounds.context import Round
from schemas.config import ConfigError, parse_config
from schemas.loop import LoopConfig
from schemas.runner import TaskRunnerConfig
from tasks.generation.generate import LazyBackend
from tasks.lake.sql import connect
from tasks.lake.store import Lake
from tasks.prompts.demo_task import make_splits
from tasks.prompts.sources import demo_prompt_rows, write_prompts
from tasks.runtime.runners import group_units
from tests.helpers import row_differences


def test_group_units_keeps_units_whole_and_in_order():
    units = [[1, 2], [3], [4, 5, 6], [7], [8]]
    assert group_units(units, 1) == [[1, 2, 3, 4, 5, 6, 7, 8]]
    assert group_units(units, 2) == [[1, 2, 3, 4, 5, 6], [7, 8]]
    assert group_units(units, 3) == [[1, 2, 3], [4, 5, 6, 7], [8]]
    assert group_units(units, 9) == [[1, 2], [3], [4, 5, 6], [7], [8]]
    assert group_units([], 2) == []
    with pytest.raises(ValueError, match="shards must be at least 1"):
        group_units(units, 0)


def test_runner_settings_are_validated():
    assert TaskRunnerConfig().shard_count == 1
    assert TaskRunnerConfig(kind="dask", workers=3).shard_count == 3
    assert TaskRunnerConfig(kind="ray", workers=3, shards=5,
                            ray_listens_on_all_interfaces=True).shard_count == 5
    assert TaskRunnerConfig(kind="ray", address="ray://127.0.0.1:10001").shard_count == 2
    with pytest.raises(ConfigError, match="runner.kind"):
        parse_config({"run_id": "r", "runner": {"kind": "spark"}}, LoopConfig)
    with pytest.raises(ConfigError, match="address is for dask or ray"):
        parse_config({"run_id": "r", "runner": {"address": "tcp://127.0.0.1:8786"}}, LoopConfig)


def stage_config(root: Path, base: Path, runner: dict) -> LoopConfig:
    lake = Lake(root / "lake")
    lake.root.mkdir(parents=True)
    write_prompts(lake, demo_prompt_rows(make_splits(8, 20, 4, seed=7)))
    return parse_config({
        "run_id": "runners", "lake": str(lake.root), "models_dir": str(root / "models"),
        "base_model": str(base), "runner": runner, "scoring": {"prl_eta": 1.0, "chunk_size": 12},
        "generation": {"engine": {"backend": "hf"}, "chunk_size": 4,
                       "sampling": {"n": 3, "temperature": 1.0, "max_tokens": 24, "seed": 0}},
    }, LoopConfig)


@flow(name="generate-and-score")
def generate_and_score(config: LoopConfig) -> dict:
    round_ = Round.start(config, 0)
    engine = LazyBackend(round_.model_in.path, config.generation.engine)
    try:
        generated = generate_stage(round_, engine)
    finally:
        engine.close()
    return {"generated": generated, "scored": score_stage(round_)}


def table_rows(lake: Lake, table: str, order: str) -> list[dict]:
    relation = connect(lake).sql(f"SELECT * EXCLUDE (iteration) FROM {table} ORDER BY {order}")
    return [dict(zip(relation.columns, row)) for row in relation.fetchall()]


def test_row_differences_names_missing_rows_and_differing_columns():
    left = [{"id": "a", "x": 1.0, "t": "s"}, {"id": "b", "x": 2.0, "t": "u"}]
    assert row_differences(left, [dict(r) for r in left], ("id",)) == []
    changed = [{"id": "a", "x": 1.0000001, "t": "s"}, {"id": "c", "x": 2.0, "t": "u"}]
    assert row_differences(left, changed, ("id",), names=("threads", "cluster")) == [
        "('b',): only on threads", "('c',): only on cluster", "('a',) x: 1.0 != 1.0000001"]
    assert row_differences(left, left + left[:1], ("id",)) == [
        "duplicate keys: 2 rows / 2 keys vs 3 rows / 2 keys"]


@pytest.fixture(scope="module")
def on_threads(prefect_harness, tiny_model_dir, tmp_path_factory):
    """The stages on the default runner: the rows every other runner must reproduce."""
    config = stage_config(tmp_path_factory.mktemp("threads"), tiny_model_dir, {"kind": "threads"})
    return config, generate_and_score(config)


@pytest.mark.parametrize("kind", ["dask", "ray"])
def test_a_local_cluster_writes_the_same_rows_as_threads(on_threads, kind, tiny_model_dir, tmp_path, caplog):
    threads, threads_result = on_threads
    runner = {"kind": kind, "workers": 2}
    if kind == "ray":
        runner["ray_listens_on_all_interfaces"] = True
    cluster = stage_config(tmp_path, tiny_model_dir, runner)
    starts = LazyBackend.starts
    with caplog.at_level("INFO"):
        result = generate_and_score(cluster)
    # one log line per stage with its counts and seconds
    lines = [r.getMessage() for r in caplog.records]
    assert any(re.fullmatch(r"generate: 20 prompts in 2 shard\(s\), 60 candidates written, 0/5 chunks "
                            r"already done, [0-9.]+ s", line) for line in lines), lines
    assert any(re.fullmatch(r"score verifier: 60 scored, 0 already scored in 2 shard\(s\), labels .*, [0-9.]+ s",
                            line) for line in lines), lines
    assert LazyBackend.starts == starts, f"on {kind} the engines start in the worker processes"
    assert (threads_result["generated"]["shards"], result["generated"]["shards"]) == (1, 2)
    assert threads_result["generated"]["written"] == result["generated"]["written"] == 20 * 3
    assert threads_result["scored"] == result["scored"]
    assert set(result["scored"]) == {"verifier", "step_verifier", "prl"}
    a, b = Lake(threads.lake), Lake(cluster.lake)
    for table, key in (("candidates", ("candidate_id",)), ("scores", ("candidate_id", "scorer"))):
        left, right = table_rows(a, table, ", ".join(key)), table_rows(b, table, ", ".join(key))
        assert len(left) >= 60
        apart = row_differences(left, right, key, names=("threads", kind))
        assert not apart, (table, apart)
    # five chunks of four prompts: one shard of five chunks on threads, two shards (3 + 2) on the
    # cluster; the same chunk files either way
    names = lambda lake: sorted(p.name for p in lake.shards("candidates"))  # noqa: E731
    assert names(a) == names(b) and len(names(a)) == 5
