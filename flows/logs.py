"""The logger of the current Prefect run, or a plain logger outside one."""
from __future__ import annotations

import logging
from typing import Any

from prefect import get_run_logger


def run_logger(fallback: str) -> Any:
    """Prefect's run logger inside a flow or task run, else the logging logger `fallback`."""
    try:
        return get_run_logger()
    except Exception:  # noqa: BLE001 - outside a flow run
        return logging.getLogger(fallback)
