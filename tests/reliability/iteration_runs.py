"""Shared pieces of the crash and concurrency tests: a tiny run of one iteration as a separate
`flywheel iterate` process against one real Prefect server, and snapshots of the lake's tables."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tasks.lake.sql import connect
from tasks.lake.store import Lake
from tasks.prompts.demo_task import make_splits
from tasks.prompts.sources import demo_prompt_rows, write_prompts
from tests.conftest import PROJECT_ROOT

# columns that legitimately differ between two runs of the same inputs (clock, folder)
VOLATILE = {"models": ["created_at", "train_seconds", "metrics", "path"]}
TABLES = ("candidates", "scores", "selections", "models", "evals")


def write_run(folder: Path, base_model: Path, run_id: str = "chaos",
              splits: tuple[int, int, int, int] = (8, 8, 4, 5), n: int = 2, max_tokens: int = 24,
              reward_models: list[dict] | None = None) -> Path:
    """A lake with the demo prompts and a config for one small round (optionally with reward
    models in the round); `splits` is the demo task's (pretrain, train, eval, seed). Returns the
    config path."""
    lake = Lake(folder / "lake")
    lake.root.mkdir(parents=True)
    pretrain, train, held_out, seed = splits
    write_prompts(lake, demo_prompt_rows(make_splits(pretrain, train, held_out, seed=seed)))
    sampling = {"n": n, "temperature": 1.0, "max_tokens": max_tokens, "seed": 0}
    config = {
        "run_id": run_id, "lake": str(lake.root), "models_dir": str(folder / "models"),
        "base_model": str(base_model), "rounds": 1, "early_stop": {"enabled": False},
        "generation": {"engine": {"backend": "hf"}, "sampling": sampling, "chunk_size": 4},
        "scoring": {"chunk_size": 4, "reward_models": reward_models or []},
        "selection": {"name": "best-by-verifier",
                      "steps": [{"kind": "top_k", "k": 1, "score": {"scorer": "verifier"}}]},
        "finetune": {"epochs": 1, "batch_size": 2},
        "evaluation": {"sampling": {**sampling, "seed": 5}, "ks": [1, 2]},
    }
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def copy_run(source: Path, target: Path) -> Path:
    """A fresh copy of a prepared run folder (its config points at the copy); returns the config path."""
    shutil.copytree(source, target)
    config = yaml.safe_load((target / "run.yaml").read_text())
    config.update(lake=str(target / "lake"), models_dir=str(target / "models"))
    (target / "run.yaml").write_text(yaml.safe_dump(config))
    return target / "run.yaml"


def start_iteration(config: Path, env: dict[str, str], crash_at: str | None = None) -> subprocess.Popen:
    """`flywheel iterate --iteration 0` as its own process (optionally killed at a fault point)."""
    full = {**env, "PYTHONPATH": str(PROJECT_ROOT)}
    full.pop("FLYWHEEL_CRASH_AT", None)
    if crash_at:
        full["FLYWHEEL_CRASH_AT"] = crash_at
    return subprocess.Popen([sys.executable, "-m", "flows.cli", "iterate", "--config", str(config), "--iteration", "0"],
                            cwd=PROJECT_ROOT, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)


def run_iteration_process(config: Path, env: dict[str, str], crash_at: str | None = None,
                          timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run one iteration process to its end; returns its exit code and output."""
    process = start_iteration(config, env, crash_at)
    out, err = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def lake_of(config: Path) -> Lake:
    return Lake(yaml.safe_load(config.read_text())["lake"])


def snapshot(lake: Lake) -> dict[str, list[dict]]:
    """Every row of every table the iteration writes (column -> value), without the volatile
    columns, sorted."""
    con = connect(lake)
    out = {}
    for table in TABLES:
        exclude = VOLATILE.get(table, [])
        cols = f"* EXCLUDE ({', '.join(exclude)})" if exclude else "*"
        relation = con.sql(f"SELECT {cols} FROM {table}")
        rows = [dict(zip(relation.columns, row)) for row in relation.fetchall()]
        out[table] = sorted(rows, key=lambda row: repr(tuple(row.values())))
    return out


def duplicate_keys(lake: Lake) -> dict[str, int]:
    """Rows beyond the first for each table key (0 everywhere when nothing is duplicated)."""
    from schemas import table_spec

    con = connect(lake)
    out = {}
    for table in TABLES:
        key = ", ".join(table_spec(table).key)
        total, distinct = con.sql(f"SELECT count(*), count(DISTINCT ({key})) FROM {table}").fetchone()
        out[table] = total - distinct
    return out


def visible_tables_readable(lake: Lake) -> None:
    """Every shard a reader can see opens and reads completely (raises otherwise)."""
    con = connect(lake)
    for table in ("prompts", *TABLES):
        con.sql(f"SELECT count(*) FROM {table}").fetchone()
    for shard in lake.root.rglob("*.parquet"):
        con.sql(f"SELECT count(*) FROM read_parquet('{shard}')").fetchone()


def env_without_faults() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("FLYWHEEL_CRASH_AT", None)
    return env
