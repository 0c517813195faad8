"""Compare the tables of two lakes row by row: the check that a refactoring changed no data.

Every table of `schemas.TABLES` is read from both lakes with DuckDB (all iterations), the timing
columns (`models.train_seconds`, `models.created_at` and the `seconds` entry of `models.metrics`)
are left out, a model's `path` is compared by its folder name only (the two lakes live under
different roots), and the rows are compared as sorted multisets of values. Prints one line per table; exits 1 if any
table differs, naming its first differing row.

Usage: python bench/compare_lakes.py LAKE_A LAKE_B
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from schemas import TABLES  # noqa: E402

IGNORED = {"models": {"train_seconds", "created_at", "path"}}


def table_rows(lake: Path, table: str) -> list[str] | None:
    """The table's rows (ignored columns left out) as sorted reprs, or None when the lake has none."""
    files = sorted((lake / table).glob("iteration=*/*.parquet"))
    if not files:
        return None
    columns = [c for c in TABLES[table].schema.names if c not in IGNORED.get(table, set())]
    if table == "models":
        columns.append("regexp_extract(path, '[^/]+$') AS folder")
    query = f"SELECT {', '.join(columns)} FROM read_parquet(?, hive_partitioning = false)"
    rows = duckdb.connect().execute(query, [[str(f) for f in files]]).fetchall()
    if table == "models":
        at = columns.index("metrics")
        rows = [row[:at] + (_without_seconds(row[at]),) + row[at + 1:] for row in rows]
    return sorted(map(repr, rows))


def _without_seconds(metrics: str | None) -> str | None:
    """A models row's metrics JSON without its wall-clock `seconds`."""
    if metrics is None:
        return None
    values = json.loads(metrics)
    values.pop("seconds", None)
    return json.dumps(values, sort_keys=True)


def main(argv: list[str] | None = None) -> int:
    """Compare every table of two lakes; 0 when all are identical."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lake_a", type=Path)
    parser.add_argument("lake_b", type=Path)
    args = parser.parse_args(argv)
    differing = 0
    for table in TABLES:
        a, b = table_rows(args.lake_a, table), table_rows(args.lake_b, table)
        if a is None and b is None:
            print(f"{table:12} absent in both")
        elif a == b:
            print(f"{table:12} identical ({len(a)} rows)")
        else:
            differing += 1
            set_a, set_b = set(a or []), set(b or [])
            only_a = [r for r in (a or []) if r not in set_b][:1]
            only_b = [r for r in (b or []) if r not in set_a][:1]
            print(f"{table:12} DIFFERENT: {len(a or [])} vs {len(b or [])} rows; "
                  f"first only in A: {only_a}; first only in B: {only_b}")
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
