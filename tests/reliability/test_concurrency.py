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
    duplicate_keys, lake_of, run_iteration_process, snapshot, start_iteration, write_run,
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


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One real Prefect server on loopback for every process of this module."""
    with running_server(tmp_path_factory.mktemp("prefect")) as stack:
        yield stack


def test_two_processes_run_the_same_iteration_at_once(server, tiny_model_dir, tmp_path):
    config = write_run(tmp_path / "run", tiny_model_dir)
    lake = lake_of(config)
    # Both start at once and either may take the lock first, so both are willing to wait: one
    # proceeds, the other waits for it (a process not willing to wait is refused, below).
    waiting = {**server.env, "FLYWHEEL_LOCK_WAIT_S": "600"}
    first = start_iteration(config, waiting)
    waiter = start_iteration(config, waiting)
    try:
        deadline = time.monotonic() + 120
        lock = lock_path(lake.root, 0)
        holder = None
        while time.monotonic() < deadline:
            text = lock.read_text() if lock.is_file() else ""
            holder = next((p for p in (first, waiter) if f'"pid": {p.pid}' in text), None)
            if holder is not None:
                break
            time.sleep(0.2)
        assert holder is not None, "neither process took the lock"
        refused = run_iteration_process(config, server.env, timeout=120)  # a third, not willing to wait
        assert refused.returncode == 1
        assert refused.stderr.strip().startswith(
            f"flywheel: error: iteration 0 of the lake at {lake.root} is being run by pid {holder.pid} ")
        assert len(refused.stderr.strip().splitlines()) == 1
        printed = {}
        for process in (first, waiter):
            out, err = process.communicate(timeout=600)
            assert process.returncode == 0, err[-2000:]
            printed[process.pid] = out
        other = waiter if holder is first else first
        assert f"iteration 0: waiting up to 600 s for pid {holder.pid} on " in printed[other.pid]
        assert "waiting up to" not in printed[holder.pid]
    finally:
        for process in (first, waiter):
            if process.poll() is None:
                process.kill()
    assert duplicate_keys(lake) == {table: 0 for table in snapshot(lake)}
    assert len(snapshot(lake)["models"]) == 1
