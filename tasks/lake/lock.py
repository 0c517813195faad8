"""One process at a time per lake and iteration: an exclusive lock file with its holder's details.

The lock is an `fcntl.flock` on `<lake>/_locks/iteration-<k>.lock`. The kernel releases it when
its process ends, however it ends, so a crashed run never leaves a lock that blocks the next one
(stale-lock recovery needs no clean-up and no guessing from pids). The file also records who
holds it, for the message another process gets, and the holder's run token (tasks/runtime/reaper.py): the
process that takes over a lock its holder never released ends what still runs of that dead run.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from tasks.runtime.reaper import TOKEN_ENV, end_run

logger = logging.getLogger("flywheel.lock")
WAIT_ENV = "FLYWHEEL_LOCK_WAIT_S"
_held: set[int] = set()  # descriptors of the locks this process holds


def _not_in_forked_children() -> None:
    """A forked child shares the lock's open file, so it would hold the lock on after its parent
    died (vLLM's engine may be forked): in the child, the descriptor points to /dev/null instead."""
    if _held:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in _held:
            os.dup2(null, fd, inheritable=False)
        os.close(null)
        _held.clear()


os.register_at_fork(after_in_child=_not_in_forked_children)


class LockBusy(RuntimeError):
    """Another process holds the lock; the message names it and what to do."""


def lock_path(lake_root: str | os.PathLike[str], iteration: int) -> Path:
    """The lock file of one iteration of a lake."""
    return Path(lake_root) / "_locks" / f"iteration-{int(iteration)}.lock"


def _holder(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _describe(holder: dict) -> str:
    if not holder:
        return "another process"
    return (f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since')} "
            f"({holder.get('command', '?')})")


@contextmanager
def iteration_lock(lake_root: str | os.PathLike[str], iteration: int, wait_s: float | None = None) -> Iterator[Path]:
    """Hold the lake's lock for `iteration` for the block; wait up to `wait_s` seconds for it
    (default: $FLYWHEEL_LOCK_WAIT_S, else 0), then raise LockBusy naming the holder."""
    if wait_s is None:
        wait_s = float(os.environ.get(WAIT_ENV, "0") or 0)
    path = lock_path(lake_root, iteration)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")
    try:
        deadline = time.monotonic() + wait_s
        waiting = False
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                _held.add(handle.fileno())
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockBusy(
                        f"iteration {iteration} of the lake at {lake_root} is being run by "
                        f"{_describe(_holder(path))}: wait for it to finish, or set {WAIT_ENV} to wait") from None
                if not waiting:
                    waiting = True
                    logger.warning("iteration %d: waiting up to %.0f s for %s to finish", iteration, wait_s,
                                   _describe(_holder(path)))
                time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
        previous = _holder(path)  # read under the lock: the last holder's final word
        if previous.get("pid") and not previous.get("released"):
            logger.warning("iteration %d: took over the lock left by %s, which ended without releasing it",
                           iteration, _describe(previous))
            # its watchdog normally ended what it started; should that have been killed too, do it here
            same_host = previous.get("host") == socket.gethostname()
            left = end_run(previous.get("run")) if same_host else []
            if left:
                logger.warning("iteration %d: stopped %d process(es) the dead run left running: %s",
                               iteration, len(left), ", ".join(left))
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                 "command": " ".join(sys.argv)[:200],
                                 "run": os.environ.get(TOKEN_ENV)}))
        handle.flush()
        try:
            yield path
        finally:
            released = {**_holder(path), "released": True}
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps(released))
            handle.flush()
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    finally:
        _held.discard(handle.fileno())
        handle.close()
