import shutil
import sys
from pathlib import Path

from tasks.lake import Lake
from tests.conftest import run_cli
from tests.test_lake import score_rows


def test_sql_prints_a_table(lake: Lake):
    lake.write("scores", score_rows(4), iteration=0)
    proc = run_cli("--lake", str(lake.root), "sql",
                   "SELECT scorer, count(*) AS n FROM scores GROUP BY scorer")
    assert proc.returncode == 0, proc.stderr
    assert "verifier" in proc.stdout and "4" in proc.stdout


def test_sql_error_is_one_line_and_nonzero(lake: Lake):
    proc = run_cli("--lake", str(lake.root), "sql", "SELEC nonsense")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flywheel: error: SQL error:")


def test_unknown_table_in_sql_names_it(lake: Lake):
    proc = run_cli("--lake", str(lake.root), "sql", "SELECT * FROM bogus_table")
    assert proc.returncode == 1
    assert "bogus_table" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_missing_lake_is_named(tmp_path: Path):
    proc = run_cli("--lake", str(tmp_path / "nowhere"), "sql", "SELECT 1")
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"flywheel: error: lake not found: {tmp_path / 'nowhere'}"


def test_stray_temp_file_is_reported_and_ignored(lake: Lake):
    lake.write("scores", score_rows(2), iteration=0)
    stray = lake.partition_dir("scores", 0) / ".abc.parquet.tmp-1234"
    stray.write_bytes(b"half a file")
    proc = run_cli("--lake", str(lake.root), "sql", "SELECT count(*) AS n FROM scores")
    assert proc.returncode == 0, proc.stderr
    assert "temporary file" in proc.stderr
    assert "2" in proc.stdout


def test_no_subcommand_is_a_usage_error():
    proc = run_cli()
    assert proc.returncode == 2
    assert "usage: flywheel" in proc.stderr


def test_views_command_writes_file_used_from_another_directory(lake: Lake, tmp_path: Path):
    lake.write("scores", score_rows(3), iteration=0)
    proc = run_cli("--lake", str(lake.root), "views")
    assert proc.returncode == 0, proc.stderr
    views = Path(proc.stdout.strip())
    assert views == lake.root / "views.sql"
    other = tmp_path / "other"
    other.mkdir()
    proc = run_cli("--lake", str(lake.root), "sql", "SELECT count(*) AS n FROM scores", cwd=other)
    assert proc.returncode == 0 and "3" in proc.stdout


def test_interactive_shell_reads_statements_from_stdin(lake: Lake):
    """`flywheel sql` with no query runs the DuckDB CLI with the views loaded."""
    import os
    import subprocess
    from tests.conftest import PROJECT_ROOT
    lake.write("scores", score_rows(5), iteration=0)
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    assert shutil.which("duckdb", path=env["PATH"])
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "--lake", str(lake.root), "sql"],
        input="SELECT 'rows=' || count(*) FROM scores;\n", capture_output=True, text=True,
        env=env, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "rows=5" in proc.stdout


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "flywheel"
    assert script.exists()
