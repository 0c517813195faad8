"""Errors a round raises to the user (importing this module is cheap: no Prefect, no torch)."""
from __future__ import annotations


class StageFailed(RuntimeError):
    """A stage of a round failed: names the round, the stage, the cause and how to resume."""

    def __init__(self, iteration: int, stage: str, cause: BaseException) -> None:
        reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        super().__init__(f"iteration {iteration}, stage {stage} failed: {reason} — run the same command "
                         f"again to resume; work already in the lake is skipped")
        self.iteration, self.stage = iteration, stage
