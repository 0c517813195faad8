import json
import shutil
import sys
from pathlib import Path

from tasks.lake.store import Lake
from tests.conftest import run_cli
from tests.helpers import simple_score_rows


def test_sql_prints_a_table(lake: Lake):
    lake.write("scores", simple_score_rows(4), iteration=0)
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
    lake.write("scores", simple_score_rows(2), iteration=0)
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
    lake.write("scores", simple_score_rows(3), iteration=0)
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
    lake.write("scores", simple_score_rows(5), iteration=0)
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


def test_run_with_an_unknown_config_key_names_it(tmp_path: Path):
    config = tmp_path / "c.yaml"
    config.write_text("run_id: x\ngeneration:\n  samplng: {n: 4}\n")
    proc = run_cli("run", "--config", str(config))
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"flywheel: error: {config}: unknown key 'generation.samplng'"


def test_run_with_n_below_one_is_refused(tmp_path: Path):
    config = tmp_path / "c.yaml"
    config.write_text("run_id: x\ngeneration:\n  sampling: {n: 0}\n")
    proc = run_cli("run", "--config", str(config))
    assert proc.returncode == 1
    assert "generation.sampling.n" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_eval_k_above_n_is_refused(tmp_path: Path):
    config = tmp_path / "c.yaml"
    config.write_text("run_id: x\nevaluation:\n  sampling: {n: 4}\n  ks: [1, 8]\n")
    proc = run_cli("run", "--config", str(config))
    assert proc.returncode == 1
    assert "k=8 must be between 1 and eval n=4" in proc.stderr


def test_missing_config_file_is_named(tmp_path: Path):
    proc = run_cli("run", "--config", str(tmp_path / "none.yaml"))
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"flywheel: error: config file not found: {tmp_path / 'none.yaml'}"


def test_generate_with_a_missing_model_folder_fails_before_any_engine(lake: Lake, tmp_path: Path):
    from tasks.prompts.demo_task import make_splits
    from tasks.prompts.sources import demo_prompt_rows, write_prompts
    write_prompts(lake, demo_prompt_rows(make_splits(5, 4, 2, seed=1)))
    proc = run_cli("--lake", str(lake.root), "generate", "--model", str(tmp_path / "nomodel"))
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"flywheel: error: model folder not found: {tmp_path / 'nomodel'}"
    assert lake.shards("candidates") == []


def test_shipped_configs_are_valid():
    from schemas.config import load_config
    from schemas.loop import LoopConfig
    from tests.conftest import PROJECT_ROOT
    for name in ("demo.yaml", "demo-mc.yaml", "demo-answer-only.yaml", "gsm8k-qwen.yaml", "demo-consensus.yaml",
                 "demo-keep-correct.yaml"):
        config = load_config(PROJECT_ROOT / "configs" / name, LoopConfig)
        assert config.rounds >= 1
    # the consensus config is the default arm with Math-Shepherd labels as a second filter
    default, consensus = (load_config(PROJECT_ROOT / "configs" / name, LoopConfig)
                          for name in ("demo.yaml", "demo-consensus.yaml"))
    assert consensus.model_copy(update={"run_id": default.run_id, "selection": default.selection,
                                        "scoring": default.scoring}) == default
    assert [s.kind for s in consensus.selection.steps] == ["keep_correct", "threshold", "steps_above"]
    assert [r.kind for r in consensus.scoring.reward_models] == ["confidence", "math_shepherd"]
    # the control keeps every answer-correct sample: the default arm without its threshold
    control = load_config(PROJECT_ROOT / "configs" / "demo-keep-correct.yaml", LoopConfig)
    assert control.model_copy(update={"run_id": default.run_id, "selection": default.selection}) == default
    assert control.run_id != default.run_id and [s.kind for s in control.selection.steps] == ["keep_correct"]


def test_demo_arms_differ_only_in_their_selection_signal_and_weight_merging():
    """`make demo`'s arms and `--all-arms`' extra ones share the budget, base model and lake; the
    default arms select with no step oracle (the step verifier only measures); two merge weights."""
    from flows.demo import DEMO_CONFIGS, EXTRA_ARMS
    from schemas.config import load_config
    from schemas.loop import LoopConfig
    from tests.conftest import PROJECT_ROOT
    configs = {path: load_config(PROJECT_ROOT / path, LoopConfig) for path in DEMO_CONFIGS + EXTRA_ARMS}
    shared = {(c.lake, c.base_model, c.rounds, c.generation.model_dump_json(), c.evaluation.model_dump_json())
              for c in configs.values()}
    assert len(shared) == 1
    finetune = {json.dumps({k: v for k, v in c.finetune.model_dump().items()
                            if not k.startswith("token_weight") and k != "merge_with_base"},
                           sort_keys=True, default=str) for c in configs.values()}
    assert len(finetune) == 1 and '"batching": "by_length"' in finetune.pop()  # every arm finetunes alike
    merged = {path: c.finetune.merge_with_base for path, c in configs.items() if c.finetune.merge_with_base}
    assert merged == {"configs/demo.yaml": 0.3, "configs/demo-merge.yaml": 0.5}
    assert len({c.run_id for c in configs.values()}) == len(configs)
    policies = {path: c.selection.name for path, c in configs.items()}
    assert policies == {"configs/demo.yaml": "rft_conf", "configs/demo-answer-only.yaml": "rft",
                        "configs/demo-oracle.yaml": "all_steps_correct", "configs/demo-mc.yaml": "correct_mc",
                        "configs/demo-judge.yaml": "rft_judge",
                        "configs/demo-prl.yaml": "prl_weighted", "configs/demo-merge.yaml": "rft"}
    for path in DEMO_CONFIGS + ("configs/demo-mc.yaml",):
        steps = [step.kind for step in configs[path].selection.steps]
        assert "keep_all_steps_correct" not in steps, path
    assert [r.kind for r in configs["configs/demo.yaml"].scoring.reward_models] == ["confidence"]
    assert "steps_above" in [step.kind for step in configs["configs/demo-mc.yaml"].selection.steps]


def test_generate_and_score_commands_use_the_loops_settings(tiny_model_dir, tmp_path):
    """Without options, `flywheel generate` and `flywheel score --scorer verifier` write the rows
    a loop round with default settings writes: same sampling hash, step split and scorer version."""
    from tasks.rounds.context import round_sampling_hash
    from tasks.scoring.score import rule_scorers
    from schemas.generation import EngineConfig
    from schemas.loop import LoopConfig
    from tasks.prompts.demo_task import make_splits
    from tasks.prompts.sources import demo_prompt_rows, write_prompts

    lake = Lake(tmp_path / "lake")
    lake.root.mkdir()
    write_prompts(lake, demo_prompt_rows(make_splits(5, 4, 2, seed=1)))
    proc = run_cli("--lake", str(lake.root), "generate", "--model", str(tiny_model_dir), "--limit", "2",
                   "--backend", "hf", "--max-tokens", "16")
    assert proc.returncode == 0, proc.stderr
    loop = LoopConfig(run_id="x", lake=str(lake.root))
    loop = loop.model_copy(update={"generation": loop.generation.model_copy(
        update={"sampling": loop.generation.sampling.model_copy(update={"max_tokens": 16}),
                "engine": EngineConfig(backend="hf")})})  # the engine names the samples too
    rows = lake.read("candidates").to_pylist()
    assert len(rows) == 2 * loop.generation.sampling.n
    assert {r["sampling_hash"] for r in rows} == {round_sampling_hash(loop)}
    proc = run_cli("--lake", str(lake.root), "score", "--scorer", "verifier")
    assert proc.returncode == 0, proc.stderr
    versions = {r["scorer_version"] for r in lake.read("scores").to_pylist()}
    loop_verifier = rule_scorers(loop.scoring)[0]
    assert versions == {loop_verifier.version}
    loop_verifier.close()
