"""Where library logs go: the terminal shows Flywheel's progress, a file keeps the engines' own.

vLLM (in this process and in its engine-core process), transformers, accelerate, datasets and
torch log their INFO lines to `<data>/logs/<command>-<time>.log` beside the lake; their warnings
and errors still reach stderr. vLLM reads its logging config from the file named by
`VLLM_LOGGING_CONFIG_PATH` when it is imported, in every process it starts, so the routing is
set before any engine starts. `FLYWHEEL_DEBUG=1` (or `flywheel --verbose`) leaves every library's
logging as it is.
"""
from __future__ import annotations

import json
import logging
import logging.config
import os
import time
from pathlib import Path
from typing import Any

LIBRARIES = ("vllm", "transformers", "accelerate", "datasets", "torch", "math_verify", "latex2sympy2_extended",
             "httpx", "filelock", "urllib3")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def verbose() -> bool:
    """Whether the user asked to see every library's logs (FLYWHEEL_DEBUG=1)."""
    return os.environ.get("FLYWHEEL_DEBUG", "") not in ("", "0")


def library_log_path(lake_root: str | os.PathLike[str], command: str) -> Path:
    """`<lake's parent>/logs/<command>-<YYYYmmdd-HHMMSS>.log` (data/lake -> data/logs/...)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(lake_root).resolve().parent / "logs" / f"{command}-{stamp}-{os.getpid()}.log"


def logging_config(log_file: Path) -> dict:
    """A logging dictConfig: each library's records to `log_file`, WARNING and up also to stderr."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": FORMAT}},
        "handlers": {
            "file": {"class": "logging.FileHandler", "filename": str(log_file), "formatter": "plain",
                     "level": "DEBUG", "encoding": "utf-8"},
            "terminal": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "plain",
                         "level": "WARNING"},
        },
        "loggers": {name: {"handlers": ["file", "terminal"], "level": "INFO", "propagate": False}
                    for name in LIBRARIES},
    }


class QuietFileHandler(logging.FileHandler):
    """A file handler that drops a record it cannot write (a full disk, a file-size limit) instead
    of printing a logging traceback: the library log is a convenience, never a failure."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        pass


def route_library_logs(log_file: Path, show_all: bool = False) -> Path | None:
    """Send the libraries' INFO logs to `log_file` (this process and the engines it starts) and
    return its path; None, changing nothing, with `show_all` or FLYWHEEL_DEBUG set, or when the
    log folder cannot be written."""
    if show_all or verbose():
        return None
    config = logging_config(log_file)
    config_file = log_file.with_suffix(".logging.json")
    try:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        config_file.write_text(json.dumps(config, indent=1), encoding="utf-8")
    except OSError:
        return None
    os.environ["VLLM_LOGGING_CONFIG_PATH"] = str(config_file)
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "1")
    here = {**config, "handlers": {**config["handlers"],
                                   "file": {**config["handlers"]["file"], "()": QuietFileHandler}}}
    del here["handlers"]["file"]["class"]
    logging.config.dictConfig(here)
    return log_file



def run_logger(fallback: str) -> Any:
    """Prefect's run logger inside a flow or task run, else the logging logger `fallback`."""
    from prefect import get_run_logger  # Prefect's import is slow; only callers inside runs pay it

    try:
        return get_run_logger()
    except Exception:  # noqa: BLE001 - outside a flow run
        return logging.getLogger(fallback)
