"""Lake benchmark: write 1M candidate rows and 1M score rows in shards, then time the
per-iteration summary (rows, solve rate per prompt, yield) through the DuckDB views.

It also times the duplicate-key check of `Lake.write`: one more shard written into a partition
that already holds `--rows` candidate rows, with the check and without it, side by side.

Usage: python bench/lake.py [--rows 1000000] [--shard-rows 50000] [--iterations 4] [--lake DIR]
Last line: `summary query seconds: <x>` (target: under 1 s on a 2-core machine).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tasks.lake.store as lake_module  # noqa: E402
from tasks.lake.sql import connect  # noqa: E402
from tasks.lake.store import Lake  # noqa: E402

SUMMARY_SQL = [
    "SELECT * FROM table_rows ORDER BY table_name, iteration",
    "SELECT iteration, count(*) AS prompts, avg(solve_rate) AS mean_solve_rate, "
    "count(*) FILTER (WHERE solve_rate = 0) AS unsolved FROM prompt_solve_rate GROUP BY iteration",
    "SELECT * FROM iteration_yield",
]


def prompt_table(prompts: int) -> pa.Table:
    """Synthetic prompts p0..p{prompts-1}: every tenth in the eval split, the others train."""
    idx = np.arange(prompts)
    return pa.table({
        "prompt_id": pa.array([f"p{i:011d}" for i in idx]),
        "iteration": pa.array(np.zeros(prompts, dtype=np.int32)),
        "source": pa.array(["bench"] * prompts),
        "split": pa.array(np.where(idx % 10 == 0, "eval", "train")),
        "problem": pa.array([f"{i % 9}+{i % 7}" for i in idx]),
        "reference_answer": pa.array([str(i % 97) for i in idx]),
        "metadata": pa.nulls(prompts, pa.string()),
    })


def candidate_shard(start: int, rows: int, iteration: int, n_samples: int) -> pa.Table:
    """A synthetic shard of candidate rows (ids are plain strings; content is realistic size)."""
    idx = np.arange(start, start + rows)
    text = [f"{i % 9}+{i % 7}={i % 9 + i % 7}\n{i % 9 + i % 7}*2={2 * (i % 9 + i % 7)}\n#### {i}"
            for i in idx]
    return pa.table({
        "candidate_id": pa.array([f"c{i:012d}" for i in idx]),
        "prompt_id": pa.array([f"p{i // n_samples:011d}" for i in idx]),
        "model_id": pa.array(["model-0"] * rows),
        "iteration": pa.array(np.full(rows, iteration, dtype=np.int32)),
        "sampling_hash": pa.array(["s0"] * rows),
        "sample_index": pa.array((idx % n_samples).astype(np.int32)),
        "text": pa.array(text),
        "steps": pa.array([t.split("\n") for t in text], pa.list_(pa.string())),
        "num_tokens": pa.array(np.full(rows, 24, dtype=np.int32)),
        "finish_reason": pa.array(["stop"] * rows),
        "cumulative_logprob": pa.array(-np.abs(np.sin(idx)) * 10),
        "token_ids": pa.nulls(rows, pa.list_(pa.int32())),
        "token_logprobs": pa.nulls(rows, pa.list_(pa.float32())),
        "step_token_ends": pa.nulls(rows, pa.list_(pa.int32())),
    })


def score_shard(start: int, rows: int, iteration: int, n_samples: int) -> pa.Table:
    """A synthetic shard of verifier scores, about 40% correct."""
    idx = np.arange(start, start + rows)
    correct = (idx * 2654435761 % 100) < 40
    labels = np.where(correct, "correct", np.where(idx % 50 == 0, "unparseable", "incorrect"))
    return pa.table({
        "candidate_id": pa.array([f"c{i:012d}" for i in idx]),
        "prompt_id": pa.array([f"p{i // n_samples:011d}" for i in idx]),
        "iteration": pa.array(np.full(rows, iteration, dtype=np.int32)),
        "scorer": pa.array(["verifier"] * rows),
        "scorer_version": pa.array(["1"] * rows),
        "value": pa.array(correct.astype(np.float64)),
        "label": pa.array(labels),
        "extracted_answer": pa.array([str(i % 97) for i in idx]),
        "step_scores": pa.nulls(rows, pa.list_(pa.float64())),
        "detail": pa.nulls(rows, pa.string()),
    })


def bench_key_check(rows: int, shard_rows: int, repeats: int = 5) -> None:
    """Time one shard's write into a partition of `rows` rows: with the duplicate-key check (its
    key cache cold, then warm) and without it, alternating, and print the medians and overhead."""
    root = Path(tempfile.mkdtemp(prefix="flywheel-bench-keys-"))
    try:
        lake = Lake(root)
        for start in range(0, rows, shard_rows):
            lake.write("candidates", candidate_shard(start, min(shard_rows, rows - start), 0, 8),
                       iteration=0, shard=f"bench-{start:09d}")
        extra = candidate_shard(rows, shard_rows, 0, 8)
        checked = lake_module.Lake._refuse_duplicate_keys
        times: dict[str, list[float]] = {"cold": [], "warm": [], "off": []}
        for _ in range(repeats):
            for mode in ("cold", "warm", "off"):
                if mode == "cold":
                    lake_module._SHARD_KEYS.clear()
                lake_module.Lake._refuse_duplicate_keys = (
                    checked if mode != "off" else lambda *args, **kwargs: None)
                t0 = time.perf_counter()
                lake.write("candidates", extra, iteration=0, shard="bench-extra")
                times[mode].append(time.perf_counter() - t0)
        lake_module.Lake._refuse_duplicate_keys = checked
        median = {mode: sorted(values)[len(values) // 2] for mode, values in times.items()}
        print(f"duplicate-key check, {shard_rows:,}-row shard into a partition of {rows:,} rows "
              f"(median of {repeats}): write {median['off']:.3f} s unchecked, {median['cold']:.3f} s "
              f"checked with a cold key cache ({median['cold'] / median['off']:.2f}x), "
              f"{median['warm']:.3f} s warm ({median['warm'] / median['off']:.2f}x)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--shard-rows", type=int, default=50_000)
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--samples-per-prompt", type=int, default=8)
    parser.add_argument("--lake", help="lake folder (default: a temporary folder, removed after)")
    args = parser.parse_args()

    root = Path(args.lake) if args.lake else Path(tempfile.mkdtemp(prefix="flywheel-bench-"))
    lake = Lake(root)
    per_iteration = args.rows // args.iterations
    try:
        lake.write("prompts", prompt_table(-(-args.rows // args.samples_per_prompt)), iteration=0)
        for table, make in (("candidates", candidate_shard), ("scores", score_shard)):
            build_s = write_s = 0.0
            for it in range(args.iterations):
                for start in range(it * per_iteration, (it + 1) * per_iteration, args.shard_rows):
                    rows = min(args.shard_rows, (it + 1) * per_iteration - start)
                    t0 = time.perf_counter()
                    shard = make(start, rows, it, args.samples_per_prompt)
                    t1 = time.perf_counter()
                    lake.write(table, shard, iteration=it, shard=f"bench-{start:09d}")
                    write_s += time.perf_counter() - t1
                    build_s += t1 - t0
            total = per_iteration * args.iterations
            print(f"{table}: {total:,} rows in {len(lake.shards(table))} shards, "
                  f"write {total / write_s:,.0f} rows/s (validate + zstd + fsync + rename; "
                  f"building the synthetic rows took {build_s:.1f} s more)")

        bench_key_check(args.rows, args.shard_rows)

        con = connect(lake)
        timings = []
        for _ in range(3):
            t0 = time.perf_counter()
            results = [con.sql(sql).fetchall() for sql in SUMMARY_SQL]
            timings.append(time.perf_counter() - t0)
        for row in results[2]:
            print("iteration_yield:", row)
        print(f"summary query runs (first is cold): {', '.join(f'{t:.3f}' for t in timings)} s")
        print(f"summary query seconds: {sorted(timings)[1]:.3f}")  # the median of 3
    finally:
        if not args.lake:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
