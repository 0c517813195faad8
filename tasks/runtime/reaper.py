"""Nothing a run starts outlives it: a watchdog that ends the processes a dead run left behind.

A `flywheel` command starts processes of its own: vLLM's engine (`EngineCore` and its workers),
Prefect's temporary API server (uvicorn, when no PREFECT_API_URL is set), verifier, Dask or Ray
workers. They end with a command that ends normally, but not with one that is killed (kill -9,
the OOM killer): they are reparented to init and keep running with their memory (on a GPU, the
GPU memory), and the resumed run starts a second engine beside the first. Neither vLLM nor
Prefect has a setting for this (vLLM's workers watch their EngineCore through a pipe, but the
EngineCore does not watch its parent; `PR_SET_PDEATHSIG` cannot be set inside their children,
and it follows the parent *thread*, not the process), so:

`watch_this_process()` (the CLI's first act) marks the process and everything it starts with a
run token, FLYWHEEL_RUN_TOKEN=<pid>.<start>.<random> in the environment that every child
inherits, and starts a small watchdog: this file, run by the same Python (standard library only,
no site packages), in a session of its own so that a Ctrl-C or a kill of the terminal's process
group does not end it first, holding nothing of the parent but stderr.

While the parent lives, the watchdog waits on a pidfd of the parent (it wakes at the parent's
death) and every 0.5 s notes the parent's descendants (pid and start time: the parent of each new
pid in /proc, a full pass every 10 s; about 0.15 % of one core), keeping them in a private run
file, `$XDG_RUNTIME_DIR or /tmp`/flywheel-<uid>-runs/<token>.json, whenever they change. When
the parent ends, however it ends, the watchdog sends SIGTERM to the processes it noted that are
still the same processes, to every process that carries the run's token (one that renames itself
with setproctitle, as vLLM's do, no longer shows its environment: the notes find those), and to
their descendants; waits up to 5 s; sends SIGKILL to what remains (a multiprocessing resource
tracker last, after it had the chance to remove the shared memory its clients left); reports them
on stderr in one line; removes the run file; and exits. A process is always named by pid *and*
start time, and signalled through a pidfd opened and checked first, so a reused pid is never
touched. A normal exit leaves nothing to end, and the watchdog exits silently.

Second line, should the watchdog itself have been killed: the iteration lock records its holder's
token, and the resume that takes over a lock its holder never released ends, through `end_run`,
what the dead run's run file lists and what carries its token, once the run's own process is gone.

FLYWHEEL_REAPER=0 turns the watchdog off (the token stays). Linux only (/proc); elsewhere
`watch_this_process` does nothing.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import select
import signal
import sys
import time

TOKEN_ENV = "FLYWHEEL_RUN_TOKEN"
SWITCH_ENV = "FLYWHEEL_REAPER"
INTERVAL_S = 0.5   # how often the watchdog notes the parent's descendants
SETTLE_S = 0.5     # after the parent ends, how long its processes get to end on their own
GRACE_S = 5.0      # between SIGTERM and SIGKILL
FULL_EVERY = 20    # ticks between two full passes over /proc (in between, only new pids are read)
ENDED = ("Z", "X", "x")  # process states of a process that has ended (a zombie, or dead)

_watchdog_pid: int | None = None


# -- processes, named by (pid, start time in clock ticks since boot)

def _stat(pid: int) -> tuple[int, int, str] | None:
    """(parent pid, start time, state) of a process, or None when there is none."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2:].split()  # the name may hold spaces and parentheses
    try:
        return int(fields[1]), int(fields[19]), fields[0].decode()
    except (IndexError, ValueError):
        return None


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot), or None when there is none."""
    stat = _stat(pid)
    return stat[1] if stat else None


def alive(pid: int, start: int) -> bool:
    """Whether `pid` is still the process that started at `start` and has not ended (a zombie has)."""
    stat = _stat(pid)
    return stat is not None and stat[1] == start and stat[2] not in ENDED


def _pids() -> set[int]:
    try:
        return {int(name) for name in os.listdir("/proc") if name.isdigit()}
    except OSError:
        return set()


def process_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, start time, state) of every process."""
    table = {}
    for pid in _pids():
        stat = _stat(pid)
        if stat is not None:
            table[pid] = stat
    return table


def descendants(roots: list[int] | set[int], table: dict[int, tuple[int, int, str]] | None = None) -> dict[int, int]:
    """pid -> start time of every live descendant of the `roots` (not the roots themselves)."""
    table = process_table() if table is None else table
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, state) in table.items():
        if state not in ENDED:
            children.setdefault(ppid, []).append(pid)
    found: dict[int, int] = {}
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found[child] = table[child][1]
                todo.append(child)
    return found


def carriers(token: str, table: dict[int, tuple[int, int, str]] | None = None) -> dict[int, int]:
    """pid -> start time of every live process (of this user) that carries the run token."""
    table = process_table() if table is None else table
    marker = f"\0{TOKEN_ENV}={token}\0".encode()
    found = {}
    for pid, (_, start, state) in table.items():
        if state in ENDED:
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                environ = handle.read()
        except OSError:
            continue
        if marker in b"\0" + environ + b"\0":
            found[pid] = start
    return found


def describe(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            words = handle.read().replace(b"\0", b" ").decode(errors="replace").split()
    except OSError:
        words = []
    return f"{' '.join(words)[:60] or '?'} (pid {pid})"


def send(pid: int, start: int, sig: int) -> bool:
    """Signal the process `pid` only if it is still the one that started at `start`."""
    fd = None
    try:
        fd = os.pidfd_open(pid)  # from here on the fd names this process, whatever happens to the pid
    except (AttributeError, OSError):
        pass
    try:
        if not alive(pid, start):
            return False
        if fd is None:
            os.kill(pid, sig)
        else:
            signal.pidfd_send_signal(fd, sig)
        return True
    except OSError:
        return False
    finally:
        if fd is not None:
            os.close(fd)


def terminate(targets: dict[int, int], grace_s: float = GRACE_S, exclude: set[int] | frozenset[int] = frozenset(),
              token: str | None = None, since: int = 0) -> list[str]:
    """SIGTERM the `targets` (pid -> start time) and their descendants, SIGKILL what is left after
    `grace_s` (with what they started meanwhile, and what carries `token` then, if started after
    `since`); returns the descriptions of those that were running ("[SIGKILL]" marks the ones
    that had to be killed)."""
    exclude = set(exclude) | {os.getpid()}
    targets = {pid: start for pid, start in targets.items() if pid not in exclude and alive(pid, start)}
    targets.update({pid: start for pid, start in descendants(set(targets)).items() if pid not in exclude})
    names = {pid: describe(pid) for pid in sorted(targets)}
    for pid, start in targets.items():
        send(pid, start, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(alive(pid, start) for pid, start in targets.items()):
        time.sleep(0.05)
    killed: set[int] = set()
    for attempt in range(4):  # whatever is left, with anything it started meanwhile
        left = {pid: start for pid, start in targets.items() if alive(pid, start)}
        if token:
            left.update({pid: start for pid, start in carriers(token).items()
                         if start >= since and pid not in exclude})
        if not left:
            break
        left.update({pid: start for pid, start in descendants(set(left)).items() if pid not in exclude})
        if attempt == 0:  # a resource tracker ignores SIGTERM, and removes what its clients leave once they end
            left = {pid: start for pid, start in left.items() if not _is_resource_tracker(pid)} or left
        for pid, start in left.items():
            name = names.get(pid) or describe(pid)
            if send(pid, start, signal.SIGKILL) and pid not in killed:
                names[pid] = name + " [SIGKILL]"
                killed.add(pid)
        targets.update(left)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and any(alive(pid, start) for pid, start in targets.items()):
            time.sleep(0.05)
    return list(names.values())


def _is_resource_tracker(pid: int) -> bool:
    """multiprocessing's resource tracker: it unlinks the shared memory and semaphores that its
    clients leave behind (vLLM's engine has some) once they have ended, so it is killed last."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return b"multiprocessing.resource_tracker" in handle.read()
    except OSError:
        return False


# -- the run token, and the run file where the watchdog keeps the run's processes

TOKEN_PATTERN = re.compile(r"[0-9]+\.[0-9]+\.[0-9a-f]{12}")


def make_token(pid: int, start: int) -> str:
    return f"{pid}.{start}.{os.urandom(6).hex()}"


def token_owner(token: str | None) -> tuple[int, int] | None:
    """(pid, start time) of the process a token was made for; None for anything not a token."""
    if not isinstance(token, str) or not TOKEN_PATTERN.fullmatch(token):
        return None
    pid, start, _ = token.split(".")
    return int(pid), int(start)


def runs_dir() -> str | None:
    """This user's private folder of run files (created 0700), or None when it is not private."""
    import tempfile

    folder = os.path.join(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir(), f"flywheel-{os.getuid()}-runs")
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        info = os.lstat(folder)
    except OSError:
        return None
    if not stat_is_private_dir(info):
        return None
    return folder


def stat_is_private_dir(info: os.stat_result) -> bool:
    import stat as stat_module

    return stat_module.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o077


def write_run_file(path: str, parent: int, parent_start: int, processes: dict[int, int]) -> None:
    """Record the run's processes (pid, start time), replacing the file whole."""
    temporary = f"{path}.tmp"
    try:
        with open(temporary, "w") as handle:
            json.dump({"parent": [parent, parent_start], "processes": sorted(processes.items())}, handle)
        os.replace(temporary, path)
    except OSError:
        pass


def read_run_file(path: str) -> dict[int, int]:
    try:
        with open(path) as handle:
            data = json.load(handle)
        return {int(pid): int(start) for pid, start in data.get("processes", [])}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


def prune_run_files(folder: str) -> None:
    """Remove the run files of runs that are over (their process and all they listed are gone),
    left by a watchdog that was killed when no resume took the run over."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        owner = token_owner(name.split(".json")[0])
        path = os.path.join(folder, name)
        if owner is None or alive(*owner) or any(alive(*proc) for proc in read_run_file(path).items()):
            continue
        with contextlib.suppress(OSError):
            os.unlink(path)


def end_run(token: str | None, grace_s: float = GRACE_S) -> list[str]:
    """End what is still running of the run marked with `token`, once that run's own process is
    gone: the processes its watchdog last recorded and those that carry the token (never this
    process or its ancestors). Returns the descriptions of the processes that were running."""
    owner = token_owner(token)
    if owner is None or alive(*owner) or not os.path.isdir("/proc"):
        return []
    folder = runs_dir()
    path = os.path.join(folder, f"{token}.json") if folder else None
    targets = read_run_file(path) if path else {}
    targets.update({pid: start for pid, start in carriers(token).items() if start >= owner[1]})
    mine = {os.getpid()}
    pid = os.getpid()
    while pid > 1 and (stat := _stat(pid)) is not None:  # this process's own ancestors are spared
        pid = stat[0]
        mine.add(pid)
    ended = terminate(targets, grace_s, exclude=mine, token=token, since=owner[1])
    if path:
        with contextlib.suppress(OSError):
            os.unlink(path)
    return ended


# -- the watchdog

def watch_this_process() -> int | None:
    """Mark this process's run with a token and start its watchdog (once); returns the watchdog's
    pid, or None when there is none."""
    global _watchdog_pid
    if _watchdog_pid is not None:
        return _watchdog_pid
    me = os.getpid()
    start = start_time(me)
    if start is None or not hasattr(os, "posix_spawn"):
        return None  # no /proc: not Linux
    token = make_token(me, start)
    os.environ[TOKEN_ENV] = token  # set even without the watchdog: the lock's takeover uses it
    if os.environ.get(SWITCH_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    folder = runs_dir()
    run_file = os.path.join(folder, f"{token}.json") if folder else "-"
    env = {key: os.environ[key] for key in ("PATH", "LANG", "LC_ALL") if key in os.environ}
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        _watchdog_pid = os.posix_spawn(
            sys.executable,
            [sys.executable, "-I", "-S", os.path.abspath(__file__), str(me), str(start), token, run_file],
            env, setsid=True, file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, devnull, 1)])
    except OSError as error:
        print(f"flywheel: warning: could not start the watchdog that ends the run's processes should it be "
              f"killed: {error}", file=sys.stderr)
        return None
    finally:
        os.close(devnull)
    return _watchdog_pid


def watch(parent: int, parent_start: int, token: str, run_file: str | None = None,
          interval_s: float = INTERVAL_S, grace_s: float = GRACE_S) -> list[str]:
    """Until `parent` ends, note its descendants (in `run_file` too); then end them and what
    carries `token`. Returns the descriptions of the processes that were still running."""
    for name in ("SIGINT", "SIGHUP", "SIGQUIT", "SIGTSTP", "SIGTTOU", "SIGTTIN"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    me = os.getpid()
    pidfd = None
    try:
        pidfd = os.pidfd_open(parent)
    except (AttributeError, OSError):
        pass
    if run_file:
        prune_run_files(os.path.dirname(run_file))
    known: dict[int, int] = {}  # every descendant seen, while it lives (a reparented one too)
    recorded: dict[int, int] = {}
    seen: dict[int, int] = {}  # pid -> start time of every process looked at
    for tick in itertools.count():
        if not alive(parent, parent_start):
            break
        # A process's parent is read once, when it is new: a full pass over /proc only every
        # FULL_EVERY ticks (a pid reused between two ticks), in between only the new pids.
        if tick % FULL_EVERY == 0:
            seen.clear()
        pids = _pids()
        seen = {pid: start for pid, start in seen.items() if pid in pids}
        new = {}
        for pid in pids.difference(seen):
            stat = _stat(pid)
            if stat is not None:
                new[pid] = stat
                seen[pid] = stat[1]
        known = {pid: start for pid, start in known.items() if seen.get(pid) == start}
        grew = True
        while grew:  # a new process whose parent is the run or one of its processes is one of them
            grew = False
            for pid, (ppid, start, state) in new.items():
                if (pid not in known and pid != me and state not in ENDED
                        and (ppid == parent or ppid in known)):
                    known[pid] = start
                    grew = True
        if run_file and known != recorded:
            write_run_file(run_file, parent, parent_start, known)
            recorded = dict(known)
        if pidfd is not None:
            select.select([pidfd], [], [], interval_s)
        else:
            time.sleep(interval_s)
    table = process_table()
    targets = {pid: start for pid, start in known.items() if pid in table and table[pid][1] == start}
    targets.update({pid: start for pid, start in carriers(token, table).items() if start >= parent_start})
    targets.update(descendants(set(targets), table))
    targets.pop(me, None)
    targets.pop(parent, None)
    deadline = time.monotonic() + SETTLE_S  # a normal exit: what is ending gets to end by itself
    while time.monotonic() < deadline and any(alive(pid, start) for pid, start in targets.items()):
        time.sleep(0.05)
    ended = terminate(targets, grace_s, exclude={parent}, token=token, since=parent_start)
    if run_file:
        with contextlib.suppress(OSError):
            os.unlink(run_file)
    if ended:
        with contextlib.suppress(OSError):
            print(f"flywheel: the run (pid {parent}) ended; stopped {len(ended)} process(es) it left "
                  f"running: {', '.join(ended)}", file=sys.stderr, flush=True)
    return ended


def main(argv: list[str]) -> int:
    """`python tasks/runtime/reaper.py PARENT_PID PARENT_START TOKEN RUN_FILE` (see watch_this_process)."""
    if len(argv) != 4:
        print("usage: python -m tasks.runtime.reaper PARENT_PID PARENT_START TOKEN RUN_FILE|-", file=sys.stderr)
        return 2
    watch(int(argv[0]), int(argv[1]), argv[2], None if argv[3] == "-" else argv[3])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
