"""A killed run leaves nothing running behind (tasks/runtime/reaper.py, and its second line in tasks/lake/lock.py).

The real case: `flywheel iterate` with the vLLM backend and no PREFECT_API_URL (so Prefect starts
its temporary server) is killed with SIGKILL while its engine is up; within 30 s no process of the
dead run is left (the process tree the test noted, and whatever carries the test's marker in its
environment); the resume completes and leaves nothing either. The cheap cases: the watchdog over a
plain process tree (an unrelated process untouched), a normal exit (silent), the lock's takeover
when the watchdog was killed too, a forked child that must not keep the lock, SIGKILL for what
ignores SIGTERM, a pid that is another process by now is never signalled, stale run files.

With FLYWHEEL_REAPER=0 in the environment (no watchdog) the real case and the watchdog's fail.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import psutil
import pytest
import yaml

from tasks.lake.lock import iteration_lock, lock_path
from tasks.runtime import reaper
from tests.conftest import PROJECT_ROOT
from tests.reliability.iteration_runs import run_iteration_process, write_run

MARK = "FLYWHEEL_TEST_ORPHAN_MARK"


def running(proc: tuple[int, float]) -> bool:
    """Whether (pid, create time) is still that process, and not a zombie."""
    pid, created = proc
    try:
        p = psutil.Process(pid)
        return p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def ident(pid: int) -> tuple[int, float]:
    return pid, psutil.Process(pid).create_time()


def marked_pids(mark: str) -> list[int]:
    """Live processes whose environment carries MARK=mark (a renamed process may not show it)."""
    found = []
    for p in psutil.process_iter():
        try:
            if p.pid != os.getpid() and p.environ().get(MARK) == mark and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p.pid)
        except psutil.Error:
            pass
    return found


def wait_until(condition, timeout: float, step: float = 0.1) -> float:
    """Seconds until `condition()` held (raises AssertionError after `timeout`)."""
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > timeout:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(step)
    return time.monotonic() - began


def survivors(tree: dict[int, tuple[float, str]], mark: str) -> list[str]:
    """The processes of `tree` still running, and any other that carries the mark."""
    left = {pid: f"{name} (pid {pid})" for pid, (created, name) in tree.items() if running((pid, created))}
    for pid in marked_pids(mark):
        with contextlib.suppress(psutil.Error):
            left.setdefault(pid, f"{' '.join(psutil.Process(pid).cmdline())[:80]} (pid {pid})")
    return list(left.values())


# -- the watchdog over a plain process tree

PARENT = textwrap.dedent("""
    import json, os, subprocess, sys, time
    from tasks.runtime.reaper import watch_this_process
    watchdog = watch_this_process()
    kids = [
        subprocess.Popen(["sleep", "300"]),                                   # a child
        subprocess.Popen(["sleep", "300"], env={"PATH": os.environ["PATH"]},  # no token, own session
                         start_new_session=True),
        subprocess.Popen(["sh", "-c", "sleep 300 & sleep 300 & wait"]),       # grandchildren
    ]
    daemon = subprocess.run(["sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!"],  # reparented at once
                            capture_output=True, text=True).stdout.strip()
    time.sleep(1.2)  # the watchdog notes the tree twice
    print(json.dumps({"watchdog": watchdog, "kids": [k.pid for k in kids] + [int(daemon)]}), flush=True)
    if sys.argv[1] == "exit":  # a clean end: everything it started has ended
        import psutil
        for p in psutil.Process().children(recursive=True):
            if p.pid != watchdog:
                p.kill()
        for k in kids:
            k.wait()
        os.kill(int(daemon), 9)
        sys.exit(0)
    time.sleep(300)
""")


def start_parent(mode: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, dict]:
    full = {**os.environ, **(env or {}), "PYTHONPATH": str(PROJECT_ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", PARENT, mode], cwd=PROJECT_ROOT, env=full, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    info = json.loads(proc.stdout.readline())
    return proc, info


def tree_of(pid: int) -> list[tuple[int, float]]:
    return [(p.pid, p.create_time()) for p in psutil.Process(pid).children(recursive=True)]


def kill_left(procs: list[tuple[int, float]]) -> None:
    """SIGKILL whatever of `procs` (pid, create time) still runs, with its descendants: a failed
    test leaves nothing running either (a resource tracker last, once it had time to clean up)."""
    found: list[psutil.Process] = []
    for proc in procs:
        if running(proc):
            with contextlib.suppress(psutil.Error):
                found += [psutil.Process(proc[0]), *psutil.Process(proc[0]).children(recursive=True)]
    trackers = [p for p in found if reaper._is_resource_tracker(p.pid)]
    for p in found:
        if p not in trackers:
            with contextlib.suppress(psutil.Error):
                p.kill()
    psutil.wait_procs(trackers, timeout=3)
    for p in trackers:
        with contextlib.suppress(psutil.Error):
            p.kill()


def run_files_of(pid: int) -> list[str]:
    return [name for name in os.listdir(reaper.runs_dir()) if name.startswith(f"{pid}.")]


def test_kill_9_of_the_parent_ends_its_whole_tree_and_nothing_else():
    bystander = subprocess.Popen(["sleep", "300"])  # the test's own: untouched
    parent, info = start_parent("hang")
    tree = tree_of(parent.pid)
    kids = [ident(pid) for pid in info["kids"]]
    try:
        assert info["watchdog"], "no watchdog"
        assert len(tree) == 6 and all(running(k) for k in kids)  # 5 processes and the watchdog
        assert len(run_files_of(parent.pid)) == 1
        os.kill(parent.pid, signal.SIGKILL)
        seconds = wait_until(lambda: not any(running(p) for p in [*tree, *kids]), timeout=15)
        _, err = parent.communicate(timeout=10)
        assert seconds < 3, seconds  # nothing here ignores SIGTERM: no grace period spent
        assert "stopped 6 process(es)" in err, err
        assert bystander.poll() is None
        assert not run_files_of(parent.pid)
    finally:
        parent.kill()
        kill_left([*tree, *kids])
        parent.communicate(timeout=10)
        bystander.kill()
        bystander.wait()


def test_a_normal_exit_is_silent_and_the_watchdog_leaves():
    parent, info = start_parent("exit")
    assert info["watchdog"], "no watchdog"
    watchdog = ident(info["watchdog"])
    out, err = parent.communicate(timeout=30)  # returns once the watchdog let go of stderr
    assert parent.returncode == 0 and err == ""
    wait_until(lambda: not running(watchdog), timeout=5)
    assert not run_files_of(parent.pid)


def test_without_the_watchdog_the_tree_is_left_running():
    """What the watchdog is for: the same tree with FLYWHEEL_REAPER=0, and everything stays."""
    parent, info = start_parent("hang", env={reaper.SWITCH_ENV: "0"})
    tree = tree_of(parent.pid)
    kids = [ident(pid) for pid in info["kids"]]
    try:
        assert info["watchdog"] is None
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        time.sleep(1.5)
        assert all(running(k) for k in kids)
    finally:
        parent.kill()
        kill_left([*tree, *kids])
        parent.communicate(timeout=10)


def test_the_lock_takeover_ends_a_dead_runs_processes_when_its_watchdog_died_too(tmp_path):
    lake = tmp_path / "lake"
    holder = textwrap.dedent(f"""
        import json, os, subprocess, sys, time
        from tasks.lake.lock import iteration_lock
        from tasks.runtime.reaper import watch_this_process
        watchdog = watch_this_process()
        with iteration_lock({str(lake)!r}, 0):
            kids = [subprocess.Popen(["sleep", "300"]),
                    subprocess.Popen(["sleep", "300"], env={{"PATH": os.environ["PATH"]}}, start_new_session=True)]
            time.sleep(1.2)
            print(json.dumps({{"watchdog": watchdog, "kids": [k.pid for k in kids]}}), flush=True)
            time.sleep(300)
    """)
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", holder], cwd=PROJECT_ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    info = json.loads(proc.stdout.readline())
    proc.stdout.close()
    kids = [ident(pid) for pid in info["kids"]]
    try:
        token = json.loads(lock_path(lake, 0).read_text())["run"]
        assert reaper.token_owner(token)[0] == proc.pid
        assert info["watchdog"], "no watchdog"
        os.kill(info["watchdog"], signal.SIGKILL)  # the watchdog first, then the run
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        time.sleep(0.5)
        assert all(running(k) for k in kids)  # nobody ended them
        with iteration_lock(lake, 0):  # the resume's takeover of the stale lock
            assert not any(running(k) for k in kids)
        assert not os.path.exists(os.path.join(reaper.runs_dir(), f"{token}.json"))
    finally:
        proc.kill()
        kill_left(kids)
        proc.wait()


def test_a_forked_child_does_not_keep_the_lock_of_its_dead_parent(tmp_path):
    """A forked child (vLLM's engine may be one) shares the lock's open file: it must not hold the
    lock on once its parent is killed, or the resume could not start."""
    holder = textwrap.dedent(f"""
        import os, sys, time
        from tasks.lake.lock import iteration_lock
        with iteration_lock({str(tmp_path)!r}, 0):
            child = os.fork()
            if child == 0:
                print(os.getpid(), flush=True)  # it runs (the fork's hooks have run)
                time.sleep(300)
                os._exit(0)
            time.sleep(300)
    """)
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", holder], cwd=PROJECT_ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    child = ident(int(proc.stdout.readline()))
    proc.stdout.close()
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert running(child)
        with iteration_lock(tmp_path, 0, wait_s=0):  # not LockBusy
            pass
    finally:
        proc.kill()
        kill_left([child])
        proc.wait()


def test_run_files_of_runs_that_are_over_are_pruned(tmp_path):
    """A watchdog killed with its run, and no resume: its run file goes once all it listed is gone."""
    dead_token = subprocess.run(
        [sys.executable, "-c", "import os; from tasks.runtime.reaper import make_token, start_time; "
                               "print(make_token(os.getpid(), start_time(os.getpid())))"],
        cwd=PROJECT_ROOT, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}, capture_output=True, text=True,
        check=True).stdout.strip()
    other_token = dead_token[:-1] + ("0" if dead_token[-1] != "0" else "1")
    live = subprocess.Popen(["sleep", "300"])
    try:
        over, still = tmp_path / f"{dead_token}.json", tmp_path / f"{other_token}.json"
        reaper.write_run_file(str(over), 1, 1, {live.pid: reaper.start_time(live.pid) + 1})  # not that process
        reaper.write_run_file(str(still), 1, 1, {live.pid: reaper.start_time(live.pid)})
        (tmp_path / "unrelated.json").write_text("{}")
        reaper.prune_run_files(str(tmp_path))
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([still.name, "unrelated.json"])
    finally:
        live.kill()
        live.wait()


def test_sigkill_for_what_ignores_sigterm_and_a_reused_pid_is_never_signalled():
    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, sys, time; "
                                 "signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(300)"],
                                stdout=subprocess.PIPE, text=True)
    other = subprocess.Popen(["sleep", "300"])
    try:
        stubborn.stdout.readline()
        start = reaper.start_time(stubborn.pid)
        names = reaper.terminate({stubborn.pid: start}, grace_s=0.3)
        assert stubborn.wait(timeout=5) == -signal.SIGKILL
        assert len(names) == 1 and names[0].endswith("[SIGKILL]")
        # the same pid with another start time is another process: left alone
        assert not reaper.send(other.pid, reaper.start_time(other.pid) + 1, signal.SIGTERM)
        assert reaper.terminate({other.pid: reaper.start_time(other.pid) - 1}, grace_s=0.3) == []
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
        stubborn.kill()
        stubborn.wait()


# -- the real run

def watch_round_until_engine(process: subprocess.Popen, log: Path, timeout: float = 600
                             ) -> tuple[dict[int, tuple[float, str]], tuple[float, float] | None]:
    """Note every process the round starts until vLLM's engine runs; returns them (pid -> (create
    time, command line)) and the watchdog's (CPU seconds, seconds alive)."""
    began = time.monotonic()
    tree: dict[int, tuple[float, str]] = {}
    watchdog_cpu = None
    while not any("EngineCore" in name for _, name in tree.values()):  # vLLM renames it once it runs
        assert process.poll() is None, f"the round ended before its engine started: {log.read_text()[-2000:]}"
        assert time.monotonic() - began < timeout, f"no vLLM engine after {timeout} s"
        time.sleep(0.2)
        try:
            children = psutil.Process(process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            continue
        for child in children:
            try:
                created, command = child.create_time(), " ".join(child.cmdline())
                name = command[:80]
                if "tasks/runtime/reaper.py" in command:  # a long checkout path can push it past 80 characters
                    watchdog_cpu = sum(child.cpu_times()[:2]), time.time() - created
            except psutil.Error:
                continue
            if tree.get(child.pid, (created,))[0] == created:
                tree[child.pid] = (created, name)
    return tree, watchdog_cpu


@pytest.mark.slow
def test_a_round_killed_while_its_engine_is_up_leaves_nothing_behind(tmp_path, tiny_model_dir):
    config = write_run(tmp_path / "run", tiny_model_dir, run_id="orphans")
    settings = yaml.safe_load(config.read_text())
    settings["generation"]["engine"]["backend"] = "vllm"
    settings["generation"]["engine"]["in_process"] = False  # vLLM's own processes, as on a GPU
    config.write_text(yaml.safe_dump(settings))
    mark = uuid.uuid4().hex
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_API_")}
    env.update({"PREFECT_HOME": str(tmp_path / "prefect-home"), MARK: mark})  # Prefect's temporary server
    log = tmp_path / "killed-round.log"
    began = time.monotonic()
    with open(log, "w") as out:  # a file, not a pipe that nobody reads while the round runs
        process = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "iterate", "--config", str(config), "--iteration", "0"],
            cwd=PROJECT_ROOT, env={**env, "PYTHONPATH": str(PROJECT_ROOT)}, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
    tree: dict[int, tuple[float, str]] = {}
    try:
        tree, watchdog_cpu = watch_round_until_engine(process, log)
        engine_up_s = time.monotonic() - began
        assert any("uvicorn" in name for _, name in tree.values()), f"no temporary Prefect server: {tree}"

        os.kill(process.pid, signal.SIGKILL)
        killed = time.monotonic()
        try:
            wait_until(lambda: not survivors(tree, mark), timeout=30, step=0.2)
        except AssertionError:
            raise AssertionError(f"30 s after kill -9, still running: {survivors(tree, mark)}") from None
        cleaned_s = time.monotonic() - killed
        assert process.wait(timeout=30) == -signal.SIGKILL
        said = log.read_text().split("flywheel: the run")[-1]
        assert "stopped" in said and "EngineCore" in said, said[-2000:]  # the watchdog's one line

        resumed = time.monotonic()
        settings["generation"]["engine"]["backend"] = "hf"  # the resume need not start vLLM twice more
        config.write_text(yaml.safe_dump(settings))
        done = run_iteration_process(config, env)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "took over the lock" in done.stdout  # it is the killed round's resume
        assert "stopped" not in done.stdout  # the watchdog had ended everything already
        wait_until(lambda: not survivors(tree, mark), timeout=10, step=0.2)  # the resume's own too
        cpu_s, lived_s = watchdog_cpu
        print(f"engine up after {engine_up_s:.1f} s; nothing left {cleaned_s:.1f} s after kill -9; resume "
              f"{time.monotonic() - resumed:.1f} s; watchdog CPU {cpu_s:.2f} s in {lived_s:.0f} s; processes "
              f"of the killed run: {sorted(name for _, name in tree.values())}")
        assert cpu_s < 0.02 * lived_s + 0.5  # its start included: nothing measurable beside a round
    finally:  # a failed test leaves nothing running either
        process.kill()
        kill_left([(pid, created) for pid, (created, _) in tree.items()])
        for pid in marked_pids(mark):
            with contextlib.suppress(psutil.Error):
                kill_left([ident(pid)])
        process.wait(timeout=30)
