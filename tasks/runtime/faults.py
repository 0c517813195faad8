"""Fault injection for the reliability suite: kill this process at a named point.

`FLYWHEEL_CRASH_AT=POINT:N` sends SIGKILL to the process the N-th time it reaches POINT (no
cleanup, no `finally`, as a power cut or OOM kill would). Unset, every call is a no-op.

Points: `write-temp:<table>` (a shard is written and fsynced under its temporary name, not yet
renamed), `write:<table>` (a shard has just become visible), `finetune-step` (after a training
step), `reward-train-step` (after a reward model's training step), `save-checkpoint` (the
checkpoint is written to its staging folder, not yet renamed).
"""
from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "FLYWHEEL_CRASH_AT"
_reached: Counter[str] = Counter()


def crash_point(point: str) -> None:
    """Die here (SIGKILL) if FLYWHEEL_CRASH_AT names this point and this is its N-th visit."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    name, _, nth = spec.rpartition(":")
    if name != point:
        return
    _reached[point] += 1
    if _reached[point] == int(nth):
        os.kill(os.getpid(), signal.SIGKILL)
