"""Crash-resume: kill -9 a round at points in every stage, rerun it, and get exactly the tables of
an uninterrupted run (same ids and values, 0 duplicates, 0 lost), with no partial shard ever
visible to DuckDB.

`make test` kills at 5 points, one per stage. `make chaos` (FLYWHEEL_CHAOS_POINTS=N, default 24)
adds fault points with random visit counts and kills at random moments (seeded by
FLYWHEEL_CHAOS_SEED).
"""
from __future__ import annotations

import os
import random
import signal
import time

import pytest

from schemas import table_spec
from tasks.lake.sql import connect
from tests.helpers import row_differences
from tests.prefect_stack import running_server
from tests.reliability.iteration_runs import (
    copy_run, duplicate_keys, lake_of, run_iteration_process, snapshot, start_iteration,
    visible_tables_readable, write_run,
)

# (fault point, visit): where a round of the tiny run dies. Writes of candidates: 1 = evaluation of
# M_0, 2-3 = the train chunks, 4 = evaluation of M_1. Scores: 1-2 = evaluation, 3+ = train.
STAGE_POINTS = [
    "write:candidates:2",       # generate: after the first train chunk
    "write-temp:scores:3",      # score: a shard written under its temporary name, not renamed
    "write:selections:1",       # select: after the selection shard
    "finetune-step:2",          # finetune: mid-training, no checkpoint
    "write:candidates:4",       # evaluate the new model: after its candidates, before its scores
]
CHAOS_POINTS = ["write:candidates", "write-temp:candidates", "write:scores", "write-temp:scores",
                "write:selections", "write-temp:selections", "finetune-step", "save-checkpoint",
                "write:models", "write:evals", "write-temp:evals"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One real Prefect server on loopback for every process of this module."""
    with running_server(tmp_path_factory.mktemp("prefect")) as stack:
        yield stack


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_model_dir):
    """The run folder before any round, and the tables of one uninterrupted round."""
    source = tmp_path_factory.mktemp("chaos-source") / "run"
    write_run(source, tiny_model_dir)
    return source


@pytest.fixture(scope="module")
def reference(prepared, server, tmp_path_factory):
    config = copy_run(prepared, tmp_path_factory.mktemp("chaos-reference") / "run")
    done = run_iteration_process(config, server.env)
    assert done.returncode == 0, done.stderr
    return snapshot(lake_of(config))


def crash_then_resume(prepared, server, reference, folder, crash_at: str | None = None,
                      kill_after_s: float | None = None) -> bool:
    """Kill a round (at a fault point or after a delay), check the lake, rerun, compare with the
    uninterrupted round. Returns whether the process was killed before finishing."""
    config = copy_run(prepared, folder)
    process = start_iteration(config, server.env, crash_at)
    if kill_after_s is not None:
        time.sleep(kill_after_s)
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
    _, err = process.communicate(timeout=600)
    killed = process.returncode == -signal.SIGKILL
    assert killed or process.returncode == 0, err[-2000:]
    lake = lake_of(config)
    visible_tables_readable(lake)  # a reader sees whole shards only
    assert all(count == 0 for count in duplicate_keys(lake).values())
    resumed = run_iteration_process(config, server.env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert duplicate_keys(lake) == {table: 0 for table in reference}
    after = snapshot(lake)
    for table, rows in reference.items():
        apart = row_differences(rows, after[table], table_spec(table).key, names=("the reference", "the resumed run"))
        assert not apart and after[table] == rows, \
            f"{table} differs after a crash at {crash_at or kill_after_s}: {apart}"
    return killed


@pytest.fixture(scope="module")
def prepared_with_reward_model(tmp_path_factory, tiny_model_dir):
    """A run folder whose round trains an ORM from its own verifier labels."""
    source = tmp_path_factory.mktemp("rm-source") / "run"
    write_run(source, tiny_model_dir, run_id="rm-chaos", splits=(20, 16, 4, 11), n=4, max_tokens=48, reward_models=[
        {"kind": "orm", "name": "orm_trained", "train": {"epochs": 2, "batch_size": 4, "warmup_steps": 0}}])
    return source


def test_kill_during_reward_model_training_then_resume(prepared_with_reward_model, server, tmp_path):
    config = copy_run(prepared_with_reward_model, tmp_path / "reference")
    done = run_iteration_process(config, server.env)
    assert done.returncode == 0, done.stderr[-2000:]
    reference = snapshot(lake_of(config))
    trained = connect(lake_of(config)).execute(
        "SELECT count(*) FROM models WHERE json_extract_string(metrics, '$.kind') = 'orm'").fetchone()[0]
    assert trained == 1
    assert crash_then_resume(prepared_with_reward_model, server, reference, tmp_path / "run",
                             crash_at="reward-train-step:2"), "reward-model training was never reached"


@pytest.mark.parametrize("crash_at", STAGE_POINTS)
def test_kill_at_a_point_in_each_stage_then_resume(prepared, server, reference, tmp_path, crash_at):
    assert crash_then_resume(prepared, server, reference, tmp_path / "run", crash_at=crash_at), \
        f"the fault point {crash_at} was never reached"


def chaos_cases() -> list[tuple[str | None, float | None]]:
    count = int(os.environ.get("FLYWHEEL_CHAOS_POINTS", "24"))
    rng = random.Random(int(os.environ.get("FLYWHEEL_CHAOS_SEED", "0")))
    cases: list[tuple[str | None, float | None]] = []
    for index in range(count):
        if index % 3 == 2:
            cases.append((None, round(rng.uniform(5, 60), 1)))  # a kill at a random moment
        else:
            cases.append((f"{rng.choice(CHAOS_POINTS)}:{rng.randint(1, 3)}", None))
    return cases


@pytest.mark.chaos
@pytest.mark.parametrize("crash_at, kill_after_s", chaos_cases())
def test_chaos_kill_anywhere_then_resume(prepared, server, reference, tmp_path, crash_at, kill_after_s):
    crash_then_resume(prepared, server, reference, tmp_path / "run", crash_at, kill_after_s)
