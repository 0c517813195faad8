import os
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from schemas import SchemaError
from tasks.lake import ids
from tasks.lake.sql import connect, write_views_file
from tasks.lake.store import DuplicateKeyError, Lake, LakeError
from tests.conftest import PROJECT_ROOT
from tests.helpers import simple_prompt_and_candidate_rows, simple_score_rows


def test_write_then_read_roundtrip(lake: Lake):
    path = lake.write("scores", simple_score_rows(5, iteration=2), iteration=2)
    assert path.parent == lake.root / "scores" / "iteration=2"
    assert path.suffix == ".parquet"
    back = lake.read("scores")
    assert back.num_rows == 5
    assert sorted(back.column("candidate_id").to_pylist()) == [f"c{i}" for i in range(5)]
    assert lake.iterations("scores") == [2]


def test_shard_carries_metadata_and_zstd(lake: Lake):
    import pyarrow.parquet as pq
    path = lake.write("scores", simple_score_rows(3), iteration=0, metadata={"scorer_version": "v7"})
    meta = lake.file_metadata(path)
    assert meta["schema_version"] == "1"
    assert meta["table"] == "scores"
    assert meta["scorer_version"] == "v7"
    assert "code_version" in meta
    assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "ZSTD"


def test_same_rows_write_the_same_shard_name(lake: Lake):
    first = lake.write("scores", simple_score_rows(4), iteration=0)
    second = lake.write("scores", list(reversed(simple_score_rows(4))), iteration=0)
    assert first == second
    assert lake.read("scores").num_rows == 4


def test_a_key_already_in_the_partition_is_refused_naming_table_and_key(lake: Lake):
    lake.write("scores", simple_score_rows(4), iteration=0, shard="first")
    overlapping = simple_score_rows(6)[3:]  # c3 is already in shard "first"
    with pytest.raises(DuplicateKeyError) as error:
        lake.write("scores", overlapping, iteration=0, shard="second")
    message = str(error.value)
    assert "'scores'" in message and "candidate_id='c3'" in message and "scorer='verifier'" in message
    assert "first.parquet" in message and "\n" not in message
    assert sorted(p.name for p in lake.shards("scores")) == ["first.parquet"]
    assert lake.read("scores").num_rows == 4


def test_the_same_key_in_another_partition_or_for_another_scorer_is_allowed(lake: Lake):
    lake.write("scores", simple_score_rows(3), iteration=0, shard="a")
    lake.write("scores", simple_score_rows(3, iteration=1), iteration=1, shard="a")
    lake.write("scores", simple_score_rows(3, scorer="step_verifier"), iteration=0, shard="b")
    assert lake.read("scores").num_rows == 9


def test_rewriting_a_shard_under_its_own_name_replaces_it(lake: Lake):
    lake.write("scores", simple_score_rows(3), iteration=0, shard="same")
    lake.write("scores", simple_score_rows(4), iteration=0, shard="same")
    assert lake.read("scores").num_rows == 4


def test_rows_repeating_a_key_within_one_write_are_refused(lake: Lake):
    rows = simple_score_rows(3) + simple_score_rows(2)
    with pytest.raises(DuplicateKeyError, match="more than once"):
        lake.write("scores", rows, iteration=0)
    assert lake.shards("scores") == []


def test_null_key_parts_compare_equal(lake: Lake):
    from schemas import table_spec

    row = {c: None for c in table_spec("evals").columns}
    row.update(run_id="r", model_id="m", iteration=0, split="eval", benchmark="b", metric="pass", k=1,
               scorer=None, value=0.5, n_problems=3, eval_hash="e")
    rows = [row]
    lake.write("evals", rows, iteration=0, shard="one")
    with pytest.raises(DuplicateKeyError, match="'evals'"):
        lake.write("evals", rows, iteration=0, shard="two")


def test_wrong_schema_writes_nothing(lake: Lake):
    rows = simple_score_rows(2)
    rows[1]["value"] = "high"
    with pytest.raises(SchemaError, match="column 'value'"):
        lake.write("scores", rows, iteration=0)
    assert not (lake.root / "scores").exists()


def test_rows_of_another_iteration_are_refused(lake: Lake):
    with pytest.raises(SchemaError, match="iteration"):
        lake.write("scores", simple_score_rows(2, iteration=1), iteration=0)
    assert lake.shards("scores") == []


def test_unknown_table_is_refused(lake: Lake):
    with pytest.raises(SchemaError, match="unknown table 'bogus'"):
        lake.write("bogus", simple_score_rows(1), iteration=0)


def test_unwritable_lake_gives_one_line_error(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    lake = Lake(blocker / "lake")
    with pytest.raises(LakeError, match="cannot create"):
        lake.write("scores", simple_score_rows(1), iteration=0)


def test_read_only_filesystem_gives_one_line_error():
    lake = Lake("/proc/flywheel-lake")
    with pytest.raises(LakeError, match="cannot create /proc/flywheel-lake"):
        lake.write("scores", simple_score_rows(1), iteration=0)


def test_crash_between_write_and_rename_leaves_nothing_visible(lake: Lake):
    """A process killed after the temp file is written but before the rename."""
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(PROJECT_ROOT)!r})
        from tasks.lake.store import Lake
        from tests.helpers import simple_score_rows
        os.replace = lambda *a, **k: os._exit(9)   # die exactly at the rename
        Lake({str(lake.root)!r}).write("scores", simple_score_rows(10), iteration=0)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == 9, proc.stderr
    strays = lake.stray_files()
    assert len(strays) == 1 and not strays[0].name.endswith(".parquet")
    assert list((lake.root / "scores").rglob("*.parquet")) == []
    assert lake.read("scores").num_rows == 0
    count = connect(lake).sql("SELECT count(*) FROM scores").fetchone()[0]
    assert count == 0


def test_failed_write_removes_its_temp_file(lake: Lake, monkeypatch):
    def broken_replace(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(LakeError, match="No space left on device"):
        lake.write("scores", simple_score_rows(3), iteration=0)
    assert lake.stray_files() == []
    assert lake.shards("scores") == []


def test_existing_keys_for_resume(lake: Lake):
    lake.write("scores", simple_score_rows(3), iteration=0)
    lake.write("scores", simple_score_rows(2, iteration=1, scorer="orm"), iteration=1)
    assert lake.existing_keys("scores") == {
        ("c0", "verifier"), ("c1", "verifier"), ("c2", "verifier"), ("c0", "orm"), ("c1", "orm")}
    assert lake.existing_keys("scores", iteration=1, columns=["candidate_id"]) == {("c0",), ("c1",)}
    assert lake.existing_keys("candidates") == set()


def test_ids_are_deterministic_and_distinct():
    a = ids.prompt_id("demo", "Q: 1+2")
    assert a == ids.prompt_id("demo", "Q: 1+2")
    assert a != ids.prompt_id("gsm8k", "Q: 1+2")
    assert len(a) == 16
    params = {"temperature": 0.8, "max_tokens": 64, "seed": 1}
    h = ids.sampling_hash(params)
    assert h == ids.sampling_hash(dict(reversed(list(params.items()))))
    assert h != ids.sampling_hash({**params, "temperature": 0.7})
    c = ids.candidate_id(a, "m1", h, 0)
    assert c == ids.candidate_id(a, "m1", h, 0)
    assert len({ids.candidate_id(a, "m1", h, i) for i in range(100)}) == 100
    # sha256('["x",1]')[:16], computed with sha256sum: changing the hash orphans every lake.
    assert ids.content_hash("x", 1) == "59402b0471b497c0"


def test_views_work_from_another_working_directory(lake: Lake, tmp_path: Path):
    prompts, candidates = simple_prompt_and_candidate_rows(6)
    lake.write("prompts", prompts, iteration=0)
    lake.write("candidates", candidates, iteration=0)
    lake.write("scores", simple_score_rows(6), iteration=0)
    views = write_views_file(lake)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    duckdb_cli = Path(sys.executable).parent / "duckdb"
    proc = subprocess.run(
        [str(duckdb_cli), "-init", str(views), "-csv", "-noheader", "-c",
         "SELECT n_correct FROM prompt_solve_rate WHERE prompt_id = 'p1'"],
        cwd=elsewhere, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "1"


def test_empty_tables_have_typed_views(lake: Lake):
    con = connect(lake)
    assert con.sql("SELECT count(*) FROM candidates").fetchone()[0] == 0
    types = {r[0]: r[1] for r in con.sql("DESCRIBE candidates").fetchall()}
    assert types["steps"] == "VARCHAR[]"
    assert types["iteration"] == "INTEGER"
    assert con.sql("SELECT count(*) FROM iteration_yield").fetchone()[0] == 0


def test_solve_rate_and_yield_views(lake: Lake):
    prompts, candidates = simple_prompt_and_candidate_rows(6)
    lake.write("prompts", prompts, iteration=0)
    lake.write("candidates", candidates, iteration=0)
    lake.write("scores", simple_score_rows(6), iteration=0)
    con = connect(lake)
    rates = dict(con.sql("SELECT prompt_id, solve_rate FROM prompt_solve_rate").fetchall())
    # p0: c0,c3 -> 1 of 2 correct; p1: c1,c4 -> 1 of 2; p2: c2,c5 -> 1 of 2
    assert rates == {"p0": 0.5, "p1": 0.5, "p2": 0.5}
    row = con.sql("SELECT n_scored, n_correct, n_prompts_solved FROM iteration_yield").fetchone()
    assert row == (6, 3, 3)
    per_table = dict(con.sql(
        "SELECT table_name, n_rows FROM table_rows WHERE iteration = 0").fetchall())
    assert per_table == {"prompts": 3, "candidates": 6, "scores": 6}


def test_corrupt_shard_is_named(lake: Lake):
    bad = lake.partition_dir("scores", 0) / "broken.parquet"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(LakeError, match="broken.parquet"):
        lake.read("scores")
    with pytest.raises(duckdb.Error):
        connect(lake).sql("SELECT count(*) FROM scores").fetchall()
