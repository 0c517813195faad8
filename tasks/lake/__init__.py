"""The lake: atomic Parquet shards per table and iteration, content-addressed ids, DuckDB views,
the per-iteration lock."""
