"""Progress and logs: bars on stderr in a terminal (or when asked), one log line per stage with
counts and seconds, and a failed stage that names itself and how to resume in one line."""
from __future__ import annotations

from pathlib import Path

import pytest

from tasks.generation.generate import Completion, candidate_rows
from tasks.lake.store import Lake
from tasks.prompts.demo_task import make_splits
from tasks.prompts.sources import demo_prompt_rows, write_prompts
from tasks.runtime.progress import progress_bar, progress_enabled
from tests.conftest import run_cli


@pytest.mark.parametrize("setting, shown", [("1", True), ("0", False), ("", False)])
def test_bars_show_when_asked_and_never_when_stderr_is_not_a_terminal(monkeypatch, capsys, setting, shown):
    monkeypatch.setenv("FLYWHEEL_PROGRESS", setting)
    assert progress_enabled() is shown  # pytest's stderr is not a terminal
    with progress_bar("score verifier", 3, "candidate") as bar:
        for done in range(1, 4):
            bar.to(done, loss=0.5)
        bar.to(2)  # never moves back
        assert bar.done == 3
    err = capsys.readouterr().err
    assert ("score verifier" in err and "3/3" in err) is shown
    assert (err == "") is not shown


def _lake_with_candidates(root: Path) -> tuple[Lake, int]:
    lake = Lake(root)
    lake.root.mkdir(parents=True)
    prompts = [r for r in demo_prompt_rows(make_splits(5, 6, 2, seed=1)) if r["split"] == "train"]
    write_prompts(lake, prompts)
    rows = []
    for prompt in prompts:
        done = [Completion(f"step\n#### {prompt['reference_answer']}", [], None, None, "stop"),
                Completion("no answer", [], None, None, "stop")]
        rows += candidate_rows(prompt["prompt_id"], done, model_id="m", iteration=0, sampling_hash="s",
                               tokenizer=None)
    lake.write("candidates", rows, iteration=0)
    return lake, len(rows)


def test_score_command_draws_a_bar_on_stderr_when_asked(tmp_path):
    lake, count = _lake_with_candidates(tmp_path / "lake")
    quiet = run_cli("--lake", str(lake.root), "score", "--scorer", "verifier")
    assert quiet.returncode == 0, quiet.stderr
    assert "score verifier" not in quiet.stderr  # not a terminal: no bar
    shown = run_cli("--lake", str(tmp_path / "lake"), "score", "--scorer", "step_verifier",
                    env={"FLYWHEEL_PROGRESS": "1"})
    assert shown.returncode == 0, shown.stderr
    assert "score step_verifier" in shown.stderr and f"{count}/{count}" in shown.stderr


def test_a_failed_stage_is_one_line_naming_the_stage_and_how_to_resume(tiny_model_dir, tmp_path):
    lake = Lake(tmp_path / "lake")
    lake.root.mkdir()
    write_prompts(lake, [r for r in demo_prompt_rows(make_splits(5, 6, 2, seed=1)) if r["split"] == "train"])
    config = tmp_path / "c.yaml"
    config.write_text(f"run_id: sf\nlake: {lake.root}\nmodels_dir: {tmp_path / 'models'}\n"
                      f"base_model: {tiny_model_dir}\ngeneration: {{engine: {{backend: hf}}}}\n")
    data_files = lambda: sorted(p for p in lake.root.rglob("*") if p.is_file() and "_locks" not in p.parts)  # noqa: E731
    before = data_files()
    proc = run_cli("iterate", "--config", str(config), "--iteration", "0")
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"flywheel: error: iteration 0, stage evaluate failed: no eval prompts in the lake at {lake.root} "
        "— run the same command again to resume; work already in the lake is skipped")
    assert "stage evaluate failed" in proc.stdout  # the flow's log line (with the traceback) is on stdout
    assert data_files() == before
