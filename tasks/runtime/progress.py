"""Progress bars for long stages: tqdm on stderr, shown only in a terminal.

`FLYWHEEL_PROGRESS=1` shows bars even when stderr is not a terminal, `0` hides them. Logs are
not progress bars: every stage also logs one line with its counts and seconds.
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Any, Iterator

from tqdm.auto import tqdm


def progress_enabled() -> bool:
    """Whether bars are shown: FLYWHEEL_PROGRESS if set, else whether stderr is a terminal."""
    setting = os.environ.get("FLYWHEEL_PROGRESS", "").strip().lower()
    if setting in {"0", "false", "no", "off"}:
        return False
    if setting in {"1", "true", "yes", "on"}:
        return True
    return sys.stderr.isatty()


class Bar:
    """One progress bar; `to(done)` moves it to an absolute count, with optional figures after it."""

    def __init__(self, description: str, total: int | None, unit: str) -> None:
        self._bar = tqdm(total=total, desc=description, unit=unit, file=sys.stderr, dynamic_ncols=True,
                         disable=not progress_enabled(), leave=True)
        self._done = 0  # a disabled tqdm does not count

    @property
    def done(self) -> int:
        """Units finished so far."""
        return self._done

    def set_total(self, total: int) -> None:
        """Set the total once it is known."""
        self._bar.total = total
        self._bar.refresh()

    def to(self, done: int, **figures: Any) -> None:
        """Show `done` units finished (never moves back), and `figures` such as a loss."""
        if done > self._done:
            self._bar.update(done - self._done)
            self._done = done
        if figures:
            self._bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in figures.items()},
                                  refresh=False)

    def close(self) -> None:
        """Finish the bar."""
        self._bar.close()


@contextmanager
def progress_bar(description: str, total: int | None, unit: str = "it") -> Iterator[Bar]:
    """A bar for `total` units of `description`, closed at the end of the block."""
    bar = Bar(description, total, unit)
    try:
        yield bar
    finally:
        bar.close()
