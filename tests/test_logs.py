"""The terminal shows Flywheel's output, not the engine's INFO lines: those go to data/logs/."""
from __future__ import annotations

import json
import os
import re

from tasks.lake.store import Lake
from tasks.prompts.demo_task import make_splits
from tasks.prompts.sources import demo_prompt_rows, write_prompts
from tasks.runtime.logs import LIBRARIES, library_log_path, logging_config, route_library_logs
from tests.conftest import run_cli

VLLM_INFO = re.compile(r"\bINFO\b.*(vllm|\[[a-z_]+\.py:\d+\])")


def test_vllm_info_lines_go_to_the_log_file_and_not_the_terminal(tiny_model_dir, tmp_path):
    lake = Lake(tmp_path / "data" / "lake")
    lake.root.mkdir(parents=True)
    write_prompts(lake, demo_prompt_rows(make_splits(5, 4, 2, seed=1)))
    proc = run_cli("--lake", str(lake.root), "generate", "--model", str(tiny_model_dir), "--n", "2",
                   "--limit", "2", "--backend", "vllm", env={"FLYWHEEL_DEBUG": ""})
    assert proc.returncode == 0, proc.stderr[-2000:]
    terminal = proc.stdout + proc.stderr
    assert not [line for line in terminal.splitlines() if VLLM_INFO.search(line)]
    assert json.loads(proc.stdout[proc.stdout.index("{"):])["candidates_written"] == 4
    logs = sorted((tmp_path / "data" / "logs").glob("generate-*.log"))
    assert len(logs) == 1
    text = logs[0].read_text(encoding="utf-8")
    assert re.search(r"INFO vllm", text), text[:2000]


def test_verbose_or_debug_leaves_library_logging_alone(tmp_path, monkeypatch):
    monkeypatch.delenv("VLLM_LOGGING_CONFIG_PATH", raising=False)
    assert route_library_logs(tmp_path / "a.log", show_all=True) is None
    monkeypatch.setenv("FLYWHEEL_DEBUG", "1")
    assert route_library_logs(tmp_path / "b.log") is None
    assert "VLLM_LOGGING_CONFIG_PATH" not in os.environ
    assert list(tmp_path.iterdir()) == []


def test_the_logging_config_sends_info_to_the_file_and_warnings_to_the_terminal(tmp_path):
    config = logging_config(tmp_path / "x.log")
    assert config["handlers"]["file"]["level"] == "DEBUG"
    assert config["handlers"]["terminal"]["level"] == "WARNING"
    assert set(config["loggers"]) == set(LIBRARIES)
    assert all(not logger["propagate"] for logger in config["loggers"].values())
    path = library_log_path(tmp_path / "data" / "lake", "run")
    assert path.parent == (tmp_path / "data" / "logs").resolve() and path.name.startswith("run-")
