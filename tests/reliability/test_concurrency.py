"""Concurrency: one lock per lake and iteration. A second process refuses with a message naming the
holder, or waits when asked; a crashed holder never blocks the next run; never a duplicate row."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.lake.lock import LockBusy, iteration_lock, lock_path
from tests.conftest import PROJECT_ROOT
from tests.prefect_stack import running_server
from tests.reliability.iteration_runs import (
    duplicate_keys, lake_of, run_iteration_process, snapshot, write_run,
)

HOLD = ("import sys, time; from tasks.lake.lock import iteration_lock\n"
        "with iteration_lock(sys.argv[1], 0):\n    print('held', flush=True); time.sleep(float(sys.argv[2]))\n")


def hold_lock(root: Path, seconds: float) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(root), str(seconds)], cwd=PROJECT_ROOT,
                               env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_holder_is_refused_with_the_holder_named(tmp_path):
    holder = hold_lock(tmp_path, 60)
    try:
        with pytest.raises(LockBusy, match=rf"iteration 0 of the lake at {tmp_path} is being run by pid {holder.pid} "):
            with iteration_lock(tmp_path, 0, wait_s=0):
                pass
        with iteration_lock(tmp_path, 1, wait_s=0):  # another iteration is another lock
            pass
    finally:
        holder.kill()
        holder.wait()


def test_a_waiting_process_gets_the_lock_when_the_holder_finishes(tmp_path, caplog):
    holder = hold_lock(tmp_path, 1.5)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="flywheel.lock"):
        with iteration_lock(tmp_path, 0, wait_s=60):
            assert holder.poll() is not None or time.monotonic() - started >= 1.0
    holder.wait()
    assert f"iteration 0: waiting up to 60 s for pid {holder.pid} on " in caplog.text  # said once
    assert caplog.text.count("waiting up to") == 1
    assert "took over" not in caplog.text  # the holder released it: nothing was left behind


def test_a_lock_left_by_a_killed_process_is_recovered(tmp_path, caplog):
    holder = hold_lock(tmp_path, 600)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert str(holder.pid) in lock_path(tmp_path, 0).read_text()  # the file is still there
    with caplog.at_level(logging.WARNING, logger="flywheel.lock"):
        with iteration_lock(tmp_path, 0, wait_s=0):
            pass
    assert f"took over the lock left by pid {holder.pid}" in caplog.text


def start_logged(config: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    """`flywheel iterate --iteration 0` as its own process, its output going to `log`."""
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-m", "flows.cli", "iterate", "--config", str(config),
                                 "--iteration", "0"], cwd=PROJECT_ROOT, env={**env, "PYTHONPATH": str(PROJECT_ROOT)},
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One real Prefect server on loopback for every process of this module."""
    with running_server(tmp_path_factory.mktemp("prefect")) as stack:
        yield stack


def test_two_processes_run_the_same_iteration_at_once(server, tiny_model_dir, tmp_path):
    """While the lock is held (here by this test, so that the timing is not a race), a process not
    willing to wait is refused in one line naming the holder; two willing ones wait, then run the
    iteration one after the other: the lake ends with one set of rows."""
    config = write_run(tmp_path / "run", tiny_model_dir)
    lake = lake_of(config)
    waiting = {**server.env, "FLYWHEEL_LOCK_WAIT_S": "600"}
    processes = []
    try:
        with iteration_lock(lake.root, 0):
            refused = run_iteration_process(config, server.env, timeout=120)
            assert refused.returncode == 1
            assert refused.stderr.strip().startswith(
                f"flywheel: error: iteration 0 of the lake at {lake.root} is being run by pid {os.getpid()} ")
            assert len(refused.stderr.strip().splitlines()) == 1
            logs = [tmp_path / f"waiter-{i}.log" for i in range(2)]
            processes = [start_logged(config, waiting, log) for log in logs]
            expected = f"iteration 0: waiting up to 600 s for pid {os.getpid()} on "
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and not all(expected in log.read_text() for log in logs):
                assert all(p.poll() is None for p in processes), [log.read_text()[-2000:] for log in logs]
                time.sleep(0.5)
            assert all(expected in log.read_text() for log in logs), "both processes wait for the lock"
        for process, log in zip(processes, logs):
            assert process.wait(timeout=600) == 0, log.read_text()[-2000:]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    assert duplicate_keys(lake) == {table: 0 for table in snapshot(lake)}
    assert len(snapshot(lake)["models"]) == 1
