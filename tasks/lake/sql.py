"""DuckDB over the lake: one view per table plus convenience views, and a views file for the CLI.

Views use absolute paths, so they resolve whatever the reader's working directory. A table with
no shards yet gets a typed empty view, so queries over a young lake still run.
"""
from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pyarrow as pa

from schemas import TABLES
from tasks.lake.store import PARTITION, Lake

VIEWS_FILE = "views.sql"
VERIFIER = "verifier"

_SCALAR_TYPES = {
    pa.string(): "VARCHAR",
    pa.int32(): "INTEGER",
    pa.int64(): "BIGINT",
    pa.float32(): "FLOAT",
    pa.float64(): "DOUBLE",
    pa.bool_(): "BOOLEAN",
    pa.timestamp("s", tz="UTC"): "TIMESTAMPTZ",
}


def duckdb_type(arrow_type: pa.DataType) -> str:
    """The DuckDB type name for an Arrow type used in our schemas."""
    if pa.types.is_list(arrow_type):
        return f"{duckdb_type(arrow_type.value_type)}[]"
    try:
        return _SCALAR_TYPES[arrow_type]
    except KeyError:
        raise TypeError(f"no DuckDB type for Arrow type {arrow_type}") from None


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def table_view_sql(lake: Lake, table: str, equals: dict[str, str] | None = None) -> str:
    """CREATE VIEW for one table: its shards with hive partitioning, or a typed empty relation.

    `equals` restricts the view to rows whose columns equal the given strings.
    """
    spec = TABLES[table]
    where = ""
    if equals:
        for column in equals:
            if column not in spec.columns:
                raise ValueError(f"table {table!r} has no column {column!r} to filter on")
        where = " WHERE " + " AND ".join(f"{c} = {_quote(v)}" for c, v in equals.items())
    if lake.shards(table):
        source = (
            f"read_parquet({_quote(lake.glob(table))}, hive_partitioning=true, "
            f"union_by_name=true, hive_types={{'{PARTITION}': INTEGER}})"
        )
        return f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM {source}{where};"
    columns = ", ".join(
        f"CAST(NULL AS {duckdb_type(f.type)}) AS {f.name}" for f in spec.schema
    )
    return f"CREATE OR REPLACE VIEW {table} AS SELECT {columns} WHERE false;"


CONVENIENCE_VIEWS = {
    "table_rows": " UNION ALL ".join(
        f"SELECT '{name}' AS table_name, {PARTITION}, count(*) AS n_rows FROM {name} "
        f"GROUP BY {PARTITION}"
        for name in TABLES
    ),
    # per iteration, split, model, sampling and prompt: the rule verifier's verdicts on its candidates
    "prompt_solve_rate": f"""
        SELECT s.{PARTITION}, p.split, c.model_id, c.sampling_hash, s.prompt_id,
               count(*) AS n_scored,
               count(*) FILTER (WHERE s.label = 'correct') AS n_correct,
               count(*) FILTER (WHERE s.label = 'unparseable') AS n_unparseable,
               count(*) FILTER (WHERE s.label = 'timeout') AS n_timeout,
               count(*) FILTER (WHERE s.label = 'correct') / count(*) AS solve_rate
        FROM scores s
        JOIN candidates c ON c.candidate_id = s.candidate_id
        JOIN (SELECT DISTINCT prompt_id, split FROM prompts) p ON p.prompt_id = s.prompt_id
        WHERE s.scorer = '{VERIFIER}'
        GROUP BY s.{PARTITION}, p.split, c.model_id, c.sampling_hash, s.prompt_id""",
    # per iteration, split, model, sampling and selection policy: what was generated, solved and kept
    # (two arms that sample one model differently in one iteration are two rows, never their union)
    "iteration_yield": f"""
        WITH solved AS (
            SELECT {PARTITION}, split, model_id, sampling_hash, count(*) AS n_prompts,
                   sum(n_scored) AS n_scored, sum(n_correct) AS n_correct,
                   count(*) FILTER (WHERE n_correct > 0) AS n_solved
            FROM prompt_solve_rate GROUP BY {PARTITION}, split, model_id, sampling_hash),
        generated AS (
            SELECT c.{PARTITION}, p.split, c.model_id, c.sampling_hash, count(*) AS n_candidates
            FROM candidates c JOIN (SELECT DISTINCT prompt_id, split FROM prompts) p
                 ON p.prompt_id = c.prompt_id
            GROUP BY c.{PARTITION}, p.split, c.model_id, c.sampling_hash),
        kept AS (
            SELECT s.{PARTITION}, p.split, c.model_id, c.sampling_hash, s.policy_name, s.policy_hash,
                   count(DISTINCT s.candidate_id) AS n_kept
            FROM selections s
            JOIN candidates c ON c.candidate_id = s.candidate_id
            JOIN (SELECT DISTINCT prompt_id, split FROM prompts) p ON p.prompt_id = s.prompt_id
            GROUP BY s.{PARTITION}, p.split, c.model_id, c.sampling_hash, s.policy_name, s.policy_hash)
        SELECT g.{PARTITION}, g.split, g.model_id, g.sampling_hash, k.policy_name, k.policy_hash,
               g.n_candidates,
               coalesce(s.n_prompts, 0) AS n_prompts,
               coalesce(s.n_scored, 0) AS n_scored,
               coalesce(s.n_correct, 0) AS n_correct,
               coalesce(s.n_solved, 0) AS n_prompts_solved,
               s.n_correct / nullif(s.n_scored, 0) AS solve_rate,
               coalesce(k.n_kept, 0) AS n_kept,
               coalesce(k.n_kept, 0) / g.n_candidates AS yield
        FROM generated g
        LEFT JOIN solved s
             ON s.{PARTITION} = g.{PARTITION} AND s.split = g.split AND s.model_id = g.model_id
                AND s.sampling_hash = g.sampling_hash
        LEFT JOIN kept k
             ON k.{PARTITION} = g.{PARTITION} AND k.split = g.split AND k.model_id = g.model_id
                AND k.sampling_hash = g.sampling_hash
        ORDER BY g.{PARTITION}, g.split, g.model_id, g.sampling_hash, k.policy_name, k.policy_hash""",
    # per iteration, split, model and sampling: early warnings of collapse (fewer distinct answers
    # per prompt) and of length drift
    "round_drift": f"""
        WITH answers AS (
            SELECT c.{PARTITION}, p.split, c.model_id, c.sampling_hash, c.prompt_id,
                   count(*) AS n_candidates, avg(c.num_tokens) AS mean_tokens,
                   count(DISTINCT s.extracted_answer) AS n_answers,
                   count(*) FILTER (WHERE s.label = 'unparseable') AS n_unparseable
            FROM candidates c
            JOIN (SELECT DISTINCT prompt_id, split FROM prompts) p ON p.prompt_id = c.prompt_id
            LEFT JOIN scores s ON s.candidate_id = c.candidate_id AND s.scorer = '{VERIFIER}'
            GROUP BY c.{PARTITION}, p.split, c.model_id, c.sampling_hash, c.prompt_id)
        SELECT {PARTITION}, split, model_id, sampling_hash, count(*) AS n_prompts,
               sum(n_candidates) AS n_candidates,
               sum(mean_tokens * n_candidates) / sum(n_candidates) AS mean_tokens,
               avg(n_answers) AS distinct_answers_per_prompt,
               sum(n_unparseable) / sum(n_candidates) AS unparseable_rate
        FROM answers GROUP BY {PARTITION}, split, model_id, sampling_hash
        ORDER BY {PARTITION}, split, model_id, sampling_hash""",
    # per iteration, model, sampling and selection policy: the share of kept samples whose every
    # step is right, where the demo task's step verifier knows (it measures; no selection reads it)
    "kept_purity": f"""
        SELECT k.{PARTITION}, c.model_id, c.sampling_hash, k.policy_name, k.policy_hash,
               count(*) AS n_kept,
               count(v.value) AS n_steps_known,
               count(*) FILTER (WHERE v.value = 1.0) AS n_all_steps_correct,
               count(*) FILTER (WHERE v.value = 1.0) / nullif(count(v.value), 0) AS purity
        FROM (SELECT DISTINCT {PARTITION}, candidate_id, policy_name, policy_hash FROM selections) k
        JOIN candidates c ON c.candidate_id = k.candidate_id
        LEFT JOIN scores v ON v.candidate_id = k.candidate_id AND v.scorer = 'step_verifier'
        GROUP BY k.{PARTITION}, c.model_id, c.sampling_hash, k.policy_name, k.policy_hash
        ORDER BY k.{PARTITION}, c.model_id, c.sampling_hash, k.policy_name, k.policy_hash""",
}


def views_sql(lake: Lake, filters: dict[str, dict[str, str]] | None = None) -> str:
    """The full script: one view per table (optionally filtered), then the convenience views."""
    lines = [f"-- Flywheel views over the lake at {lake.root} (written by flywheel; do not edit)"]
    lines += [table_view_sql(lake, table, (filters or {}).get(table)) for table in TABLES]
    lines += [
        f"CREATE OR REPLACE VIEW {name} AS {' '.join(body.split())};"
        for name, body in CONVENIENCE_VIEWS.items()
    ]
    return "\n".join(lines) + "\n"


def write_views_file(lake: Lake) -> Path:
    """Write the views script to <lake>/views.sql atomically and return its path (flows and the
    CLI call it after they write, so `duckdb -init <lake>/views.sql` sees every table)."""
    lake.require_exists()
    target = lake.root / VIEWS_FILE
    temp = lake.root / f".{VIEWS_FILE}.tmp-{os.getpid()}"
    temp.write_text(views_sql(lake), encoding="utf-8")
    os.replace(temp, target)
    return target


def connect(lake: Lake, filters: dict[str, dict[str, str]] | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with every lake view defined.

    `filters` maps a table to column values its view is restricted to, e.g.
    `{"candidates": {"model_id": "m1"}}` for one model's candidates.
    """
    lake.require_exists()
    con = duckdb.connect()
    con.execute(views_sql(lake, filters))
    return con




def refresh_views_file(root: str | os.PathLike[str]) -> Path | None:
    """Rewrite <root>/views.sql when the lake exists (after a flow or command wrote to it)."""
    lake = Lake(root)
    return write_views_file(lake) if lake.root.is_dir() else None
