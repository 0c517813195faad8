"""prefect.yaml for real: a Prefect server on loopback, a process work pool, `prefect deploy --all`,
a worker, a manual one-iteration run that writes the lake, and the cron deployment's scheduled runs.

Everything is started in its own process group and stopped at the end, also when a test fails.
"""
from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import yaml

from flows.deployments import next_iteration
from schemas.loop import LoopConfig
from tasks.lake.sql import connect
from tasks.lake.store import Lake
from tests.conftest import PROJECT_ROOT
from tests.prefect_stack import POOL, TERMINAL, PrefectStack
from tests.reliability.iteration_runs import write_run

@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A server with the pool and every deployment of prefect.yaml, and a worker; stopped at the end."""
    stack = PrefectStack(tmp_path_factory.mktemp("prefect-real"))
    try:
        stack.start_server()
        created = stack.cli("work-pool", "create", POOL, "--type", "process")
        assert created.returncode == 0, created.stdout + created.stderr
        deployed = stack.cli("--no-prompt", "deploy", "--all")
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        stack.start("worker", "worker", "start", "--pool", POOL, "--type", "process")
        yield stack
    finally:
        stack.stop()
    with pytest.raises(OSError):  # nothing is left listening
        socket.create_connection(("127.0.0.1", stack.port), timeout=2).close()


def deployment(stack: PrefectStack, name: str) -> dict:
    return next(d for d in stack.request("/deployments/filter", {}) if d["name"] == name)


def test_prefect_yaml_has_the_three_deployments_and_no_pull_section():
    spec = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())
    assert "pull" not in spec
    by_name = {d["name"]: d for d in spec["deployments"]}
    assert set(by_name) == {"nightly", "one-iteration", "evaluate"}
    assert all(d["enforce_parameter_schema"] is True for d in by_name.values())
    assert by_name["nightly"]["schedules"][0]["cron"]
    assert all(d["work_pool"]["name"] == POOL for d in by_name.values())


def test_manual_deployment_runs_one_iteration_through_a_worker(stack, tiny_model_dir, tmp_path):
    config_path = write_run(tmp_path / "run", tiny_model_dir, run_id="deployed")
    # the server refuses bad parameters before a worker sees them
    bad = stack.cli("deployment", "run", "flywheel-one-iteration/one-iteration",
                    "--param", f"config_path={config_path}", "--param", "iteration=-1")
    assert bad.returncode != 0
    assert "Validation failed for field 'iteration'" in bad.stdout + bad.stderr

    ran = stack.cli("deployment", "run", "flywheel-one-iteration/one-iteration",
                    "--param", f"config_path={config_path}", "--param", "iteration=0")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    one = deployment(stack, "one-iteration")
    deadline, state = time.monotonic() + 600, None
    while time.monotonic() < deadline:
        runs = stack.poll("/flow_runs/filter", {"deployments": {"id": {"any_": [one["id"]]}}})
        state = runs[0]["state_type"] if runs else state
        if state in TERMINAL:
            break
        time.sleep(3)
    worker_log = (stack.logs / "worker.log").read_text()
    assert state == "COMPLETED", f"flow run ended {state}: {worker_log[-3000:]}"

    config = LoopConfig.model_validate(yaml.safe_load(config_path.read_text()))
    con = connect(Lake(config.lake))
    train = con.sql("SELECT count(*) FROM prompts WHERE split = 'train'").fetchone()[0]
    assert con.sql("SELECT count(*), count(DISTINCT candidate_id) FROM candidates WHERE prompt_id IN "
                   "(SELECT prompt_id FROM prompts WHERE split = 'train')").fetchone() == (train * 2, train * 2)
    assert con.sql("SELECT DISTINCT iteration FROM evals WHERE run_id = 'deployed' ORDER BY 1").fetchall() == [(0,), (1,)]
    assert con.sql("SELECT count(*) FROM models WHERE iteration = 1").fetchone()[0] == 1
    assert (Path(config.models_dir) / "deployed" / "iter-1" / "config.json").is_file()
    # the run is complete: the scheduled flow would now have nothing to do
    assert next_iteration(config) == (None, "all 1 rounds are done")

    # everything the test started listens on loopback only
    assert stack.listening(), "the server should be listening"
    assert {ip for ip, _ in stack.listening()} == {"127.0.0.1"}


def test_cron_deployment_has_scheduled_runs(stack):
    nightly = deployment(stack, "nightly")
    assert nightly["schedules"][0]["schedule"]["cron"] == "0 2 * * *"
    assert nightly["enforce_parameter_schema"] is True
    deadline, runs = time.monotonic() + 60, []
    while time.monotonic() < deadline and not runs:
        runs = stack.poll("/flow_runs/filter", {"deployments": {"id": {"any_": [nightly["id"]]}},
                                                "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}}}) or []
        time.sleep(2)
    assert runs, "the scheduler created no runs for the cron deployment"
    assert all(r["parameters"] == {"config_path": "configs/demo.yaml"} for r in runs)
    assert all(r["expected_start_time"].endswith(("T02:00:00Z", "T02:00:00+00:00")) for r in runs)


def _evals(lake: Lake, values: dict[int, float]) -> None:
    for iteration, value in values.items():
        lake.write("evals", [{"run_id": "r", "iteration": iteration, "model_id": f"m{iteration}", "split": "eval",
                              "benchmark": "demo-arith", "metric": "pass", "k": 1, "scorer": None, "value": value,
                              "ci_low": None, "ci_high": None, "n_problems": 8, "eval_hash": "e"}],
                   iteration=iteration, shard=f"m{iteration}")


@pytest.mark.parametrize("evaluated, early_stop, expected", [
    ({}, True, 0),                              # nothing yet: round 0
    ({0: 0.1}, True, 0),                        # M_0 evaluated, round 0 crashed part-way: redo it
    ({0: 0.1, 1: 0.2}, True, 1),                # round 0 done and improved: round 1
    ({0: 0.1, 1: 0.2, 2: 0.3}, True, None),     # all 2 rounds done
    ({0: 0.2, 1: 0.1}, True, None),             # got worse: early stop
    ({0: 0.2, 1: 0.1}, False, 1),               # ... unless early stopping is off
])
def test_next_iteration_of_a_scheduled_run(lake, evaluated, early_stop, expected):
    _evals(lake, evaluated)
    config = LoopConfig(run_id="r", lake=str(lake.root), rounds=2, early_stop={"enabled": early_stop})
    iteration, reason = next_iteration(config)
    assert iteration == expected, reason
