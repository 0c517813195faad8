"""Bad inputs: what Flywheel does with malformed, empty, huge, non-finite or mismatched input.

User-facing cases run the real CLI (`python -m flows.cli` in a subprocess) and assert: exit code 1,
stderr is exactly one line `flywheel: error: ...` that names the problem (the file, key, column,
row, folder or value), no traceback, and the lake holds exactly the files it held before (no new
or partial shard, no temporary file). Internal cases call the Python API: a scorer returns a label
and never raises, a lake write either lands whole or leaves nothing, a non-finite number is an
error that names where it is.

Catalogue (test[id]: what it asserts)

Prompt sources: `flywheel prompts SOURCE.yaml`
  bad_prompt_source[source-malformed-jsonl]        names the file and "line 2"
  bad_prompt_source[source-wrong-column-name]      names problem_column 'q', lists the columns found
  bad_prompt_source[source-empty-dataset]          "the dataset is empty (<file>)"
  bad_prompt_source[source-invalid-utf8-problem]   "row 0: column 'q' is not UTF-8 text"
  bad_prompt_source[source-invalid-utf8-answer]    "row 1: column 'a' is not UTF-8 text"
  bad_prompt_source[source-duplicate-prompts-conflicting]  names rows 0 and 2 and both answers
  bad_prompt_source[source-1mb-prompt]             names row 0, 1,000,010 characters, the 100,000 limit
  bad_prompt_source[source-unknown-config-key]     "<config>: unknown key 'colour'"
  bad_prompt_source[source-file-missing]           "file not found: <file>"
  bad_prompt_source[source-null-problem]           "row 1: problem column 'q' is None"
  bad_prompt_source[source-no-reference-marker]    names row 0 and reference_style 'gsm8k'
  duplicate_identical_prompts_are_written_once     not an error: exit 0, clean stderr, stored once
Loop config: the loader of `flywheel run/iterate/eval --config`, exact message "<file>: <problem>"
  bad_loop_config[config-unknown-key]              "unknown key 'scoring.verifer_mode'"
  bad_loop_config[config-n-below-1]                "generation.sampling.n: ... >= 1"
  bad_loop_config[config-k-above-n]                "evaluation: k=16 must be between 1 and eval n=4"
  bad_loop_config[config-greedy-with-n-8]          "temperature 0 (greedy) gives one answer ..."
  bad_loop_config[config-invalid-yaml]             "<file> line 2: invalid YAML: ..."
  bad_loop_config[config-not-a-mapping]            "expected a mapping at the top level, got list"
  bad_loop_config[config-wrong-type]               "rounds: Input should be a valid integer ..."
  bad_loop_config[config-missing-run-id]           "missing key 'run_id'"
  bad_loop_config[config-unknown-preset]           names the preset and lists the presets
  bad_loop_config[config-infinite-learning-rate]   "finetune.learning_rate: Input should be a finite number"
  bad_loop_config[config-nan-epochs]               "finetune.epochs: Input should be a finite number"
  bad_loop_config[config-epochs-and-max-steps]     "finetune: set epochs or max_steps, not both: ..."
  bad_loop_config[config-unknown-batching]         "finetune.batching: Input should be 'shuffle' or 'by_length'"
  bad_loop_config[config-infinite-temperature]     "generation.sampling.temperature: ... finite number"
  bad_loop_config[config-empty-file]               "missing key 'run_id'"
  run_with_a_bad_config_is_one_line                the unknown key through `flywheel run`: one line, exit 1
Generate and score on a small lake
  bad_command[generate-n-below-1]                  names n and the bound
  bad_command[generate-negative-temperature]       names temperature and the bound
  bad_command[generate-unknown-split]              "no prompts with split 'test' in the lake at <lake>"
  bad_command[generate-missing-model-folder]       "model folder not found: <dir>"
  bad_command[generate-folder-without-weights]     "model folder has no weights ...: <dir>"
  bad_command[score-unknown-scorer]                names 'bogus' and lists the scorers
  bad_command[score-no-candidates]                 "no candidates in iteration 7 to score"
  bad_command[score-orm-without-model]             "scorer 'orm' needs --model ..."
  bad_command[score-prl-without-reference]         "scorer 'prl' needs --reference ..."
  bad_command[score-missing-reward-model-folder]   "reward model folder not found: <dir>"
  bad_command[score-causal-lm-as-orm]              "<dir> is not a *ForSequenceClassification model
                                                    (architectures: LlamaForCausalLM)"
  bad_command[score-two-label-reward-model]        "<dir> has 2 labels; a reward model needs exactly one"
  score_on_a_missing_lake                          "lake not found: <dir>", nothing created
  score_into_a_read_only_lake                      "cannot create <lake>/scores...: read-only or not permitted"
  score_when_the_disk_fills_mid_shard              a 1 KiB file-size limit: "cannot write <shard>.parquet:
                                                    File too large", no shard, no temp file
  score_with_a_corrupt_shard                       names the corrupt candidates shard
  orm_that_outputs_nan                             a NaN reward-model head: "non-finite score for
                                                    candidate <id>", no scores shard
  model_loading_adds_nothing_to_stderr             the same without muting transformers' bar
  generate_refuses_a_reward_model_as_policy        names the folder and its architecture
  generate_refuses_a_prompt_longer_than_the_context  names the prompt and the context, before any engine
  judge_with_zero_attempts_is_one_line             one line, not a traceback
Lake writes (Python API)
  lake_write_fails_mid_shard[disk-full]            half a shard written, then ENOSPC: one LakeError line
                                                    naming the shard; no *.parquet, no temp file
  lake_write_fails_mid_shard[interrupted]          half written, then KeyboardInterrupt: nothing left
  lake_write_fails_mid_shard[arrow-error]          half written, then an Arrow error: nothing left
  lake_schema_forbids_non_finite[nan|inf|-inf|nan-in-list]  a schema with finite columns refuses
                                                    them, naming column and row; nothing written
  lake_refuses_a_nan_score                         NaN in scores.value: names column and row
  lake_refuses_empty_rows                          "refusing to write an empty shard to table 'scores'"
  lake_wrong_column_names[missing|unexpected|wrong-type]  names the column; nothing written
Non-finite scores: a ValueError (RewardModelError) naming the index or candidate
  non_finite_scores[vote-weight-nan|vote-weight-inf|aggregate-step-nan|aggregate-step-inf|
                    rm-at-k-nan|bootstrap-inf|prl-reward-nan|reward-model-inf]
Verifier, exact and math modes: label, value and reason as in VERIFIER_CASES, within 3 s (6 s for
a timeout), never an exception
  pathological_verifier_input[{exact,math}-{huge-integer-5000-digits, huge-integer-999-digits,
    huge-exponent, power-tower-via-parse-expr, boxed-nested-10000-deep, boxed-unclosed-100000,
    braces-60-deep-in-box, answer-100k-chars, text-1mb-no-answer, fullwidth-digits,
    arabic-indic-digits, superscript-digit, zero-width-space, nul-byte, lone-surrogate, empty-text,
    empty-boxed, blank-hash-line, division-by-zero, infinity}]
Step verifier: the labels in STEP_CASES within 0.5 s
  pathological_step_input[line-1mb, unicode-digits, numbers-5000-digits, numbers-20-digits,
    parentheses-100000, answer-line-100k, no-steps, blank-steps, nul-byte, control-correct]
  scorers_return_a_row_for_every_pathological_candidate  verifier and step-verifier scorers label
                                                    every candidate; the rows store in the lake
Judge output without a verdict
  judge_output_without_verdict[empty, sentence, double-bracket, verdict-word, boxed-3, boxed-empty,
    two-verdicts, verdict-not-last, no-backslash, unclosed-10000]  parse_verdict gives None
  a_judge_that_never_decides_is_recorded_not_raised  every comparison stored as unparseable after
                                                    the configured attempts; rows written, no exception
"""
from __future__ import annotations

import ctypes
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from schemas import SchemaError
from tasks.lake import ids
from tasks.lake.store import Lake, LakeError
from tasks.scoring.reward_model import RewardModelError
from tests.conftest import PROJECT_ROOT, run_cli

DEMO_PROBLEMS = (("((7+5)*3)-4", "32"), ("(2+3)*4", "20"))
MODEL, SAMPLING = "m-test", "s-test"


# ---------------------------------------------------------------- helpers

def lake_files(root: Path) -> set[str]:
    """Every file under the lake (relative paths), temporary ones included."""
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit code 1 and stderr exactly one `flywheel: error:` line containing every needle."""
    assert proc.returncode == 1, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith("flywheel: error: "), line
    for needle in needles:
        assert needle in line, (needle, line)
    return line


def run_cli_with(preexec_fn: Callable[[], None], *args: str, timeout: float = 300
                 ) -> subprocess.CompletedProcess[str]:
    """`run_cli`, with `preexec_fn` run in the child before the CLI starts (limits, capabilities)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          preexec_fn=preexec_fn)


def prompt_row(problem: str, reference: str | None, split: str = "train", source: str = "demo-arith") -> dict:
    return {"prompt_id": ids.prompt_id(source, problem), "iteration": 0, "source": source,
            "split": split, "problem": problem, "reference_answer": reference, "metadata": None}


def candidate_row(prompt_id: str, index: int, text: str, iteration: int = 0) -> dict:
    return {"candidate_id": ids.candidate_id(prompt_id, MODEL, SAMPLING, index), "prompt_id": prompt_id,
            "model_id": MODEL, "iteration": iteration, "sampling_hash": SAMPLING, "sample_index": index,
            "text": text, "steps": [s for s in text.split("\n") if s.strip()], "num_tokens": len(text),
            "finish_reason": "stop", "cumulative_logprob": None, "token_ids": None,
            "token_logprobs": None, "step_token_ends": None}


def score_rows(values: list[float | None], steps: list[list[float] | None] | None = None) -> list[dict]:
    return [{"candidate_id": f"c{i}", "prompt_id": "p", "iteration": 0, "scorer": "orm",
             "scorer_version": "1", "value": v, "label": None, "extracted_answer": None,
             "step_scores": (steps or [None] * len(values))[i], "detail": None}
            for i, v in enumerate(values)]


@pytest.fixture
def demo_lake(lake: Lake) -> Lake:
    """Two demo prompts, each with two candidates (one correct), in iteration 0."""
    prompts = [prompt_row(p, r) for p, r in DEMO_PROBLEMS]
    lake.write("prompts", prompts, 0)
    texts = ["7+5=12\n12*3=36\n36-4=32\n#### 32", "#### 20"]
    lake.write("candidates", [candidate_row(p["prompt_id"], i, t)
                              for p in prompts for i, t in enumerate(texts)], 0)
    return lake


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Untrained tiny model folders made with the project's own code: a causal-LM policy, a
    one-label reward model built from it, and the same reward model with a NaN head."""
    import torch
    from transformers import LlamaForSequenceClassification

    from tasks.prompts.tiny_model import TinyModelConfig, build_model, build_tokenizer

    root = tmp_path_factory.mktemp("bad-input-models")
    tokenizer = build_tokenizer()
    folders = {"policy": root / "policy", "reward_model": root / "rm", "nan_reward_model": root / "rm-nan"}
    build_model(tokenizer, TinyModelConfig(), seed=0).save_pretrained(folders["policy"])
    tokenizer.save_pretrained(folders["policy"])
    reward = LlamaForSequenceClassification.from_pretrained(folders["policy"], num_labels=1)
    reward.save_pretrained(folders["reward_model"])
    with torch.no_grad():
        reward.score.weight.fill_(float("nan"))
    reward.save_pretrained(folders["nan_reward_model"])
    for name in ("reward_model", "nan_reward_model"):
        tokenizer.save_pretrained(folders[name])
    return folders


# ---------------------------------------------------------------- prompt sources (CLI)

def _jsonl(*rows: dict) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


SOURCE_CASES = [
    pytest.param(b'{"q": "P0", "a": "1"}\n{"q": "P1", "a": "1"\n', {},
                 ["malformed JSON in {data}: line 2: "], id="source-malformed-jsonl"),
    pytest.param(_jsonl({"question": "P0", "answer": "1"}), {},
                 ["problem_column 'q' is not in the dataset (columns: question, answer)"],
                 id="source-wrong-column-name"),
    pytest.param(b"\n  \n", {}, ["prompt source 'src': the dataset is empty ({data})"],
                 id="source-empty-dataset"),
    pytest.param(b'{"q": "P\xff0", "a": "1"}\n', {},
                 ["prompt source 'src': row 0: column 'q' is not UTF-8 text (invalid start byte)"],
                 id="source-invalid-utf8-problem"),
    pytest.param(b'{"q": "P0", "a": "1"}\n{"q": "P1", "a": "\xfe2"}\n', {},
                 ["prompt source 'src': row 1: column 'a' is not UTF-8 text"],
                 id="source-invalid-utf8-answer"),
    pytest.param(_jsonl({"q": "P0", "a": "1"}, {"q": "P1", "a": "5"}, {"q": "P0", "a": "2"}), {},
                 ["rows 0 and 2 of source 'src' hold the same problem with different reference_answer "
                  "('1' vs '2')"], id="source-duplicate-prompts-conflicting"),
    pytest.param(_jsonl({"q": "What is " + "1+" * 500_000 + "1?", "a": "500001"}), {},
                 ["prompt source 'src': row 0: problem column 'q' holds 1,000,010 characters, "
                  "over the limit of 100,000"], id="source-1mb-prompt"),
    pytest.param(_jsonl({"q": "P0", "a": "1"}), {"colour": "red"},
                 ["{config}: unknown key 'colour'"], id="source-unknown-config-key"),
    pytest.param(None, {"path": "{tmp}/missing.jsonl"},
                 ["prompt source 'src': file not found: {tmp}/missing.jsonl"], id="source-file-missing"),
    pytest.param(_jsonl({"q": "P0", "a": "1"}, {"q": None, "a": "2"}), {},
                 ["prompt source 'src': row 1: problem column 'q' is None"], id="source-null-problem"),
    pytest.param(_jsonl({"q": "P0", "a": "the answer is 7"}), {"reference_style": "gsm8k"},
                 ["row 0: cannot extract a reference answer from column 'a' with reference_style "
                  "'gsm8k': no '#### answer' marker"], id="source-no-reference-marker"),
]


def write_source(tmp_path: Path, data: bytes | None, overrides: dict[str, Any]) -> tuple[Path, Path]:
    """The data file and a prompt-source YAML over it (`overrides` may use {tmp})."""
    data_file = tmp_path / "data.jsonl"
    if data is not None:
        data_file.write_bytes(data)
    config = {"name": "src", "path": str(data_file), "problem_column": "q", "answer_column": "a",
              "reference_style": "plain", "split": "train"}
    config.update({k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in overrides.items()})
    config_file = tmp_path / "source.yaml"
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    return data_file, config_file


@pytest.mark.parametrize(("data", "overrides", "needles"), SOURCE_CASES)
def test_bad_prompt_source(data: bytes | None, overrides: dict[str, Any], needles: list[str],
                           tmp_path: Path, lake: Lake) -> None:
    lake.write("prompts", [prompt_row("(1+1)*2", "4")], 0)  # the lake is not empty
    before = lake_files(lake.root)
    data_file, config_file = write_source(tmp_path, data, overrides)
    proc = run_cli("--lake", str(lake.root), "prompts", str(config_file), timeout=300,
                   env={"HF_DATASETS_CACHE": str(tmp_path / "hf-cache")})
    assert_one_line_error(proc, *(n.format(data=data_file, config=config_file, tmp=tmp_path)
                                  for n in needles))
    assert lake_files(lake.root) == before and lake.stray_files() == []


def test_duplicate_identical_prompts_are_written_once(tmp_path: Path, lake: Lake) -> None:
    """source-duplicate-prompts-identical: the same problem with the same answer is one prompt."""
    _, config_file = write_source(tmp_path, _jsonl({"q": "P0", "a": "1"}, {"q": "P1", "a": "2"},
                                                   {"q": "P0", "a": "1"}), {})
    proc = run_cli("--lake", str(lake.root), "prompts", str(config_file), timeout=300,
                   env={"HF_DATASETS_CACHE": str(tmp_path / "hf-cache")})
    assert proc.returncode == 0, proc.stderr
    counts = json.loads(proc.stdout)
    assert (counts["rows"], counts["written"]) == (2, 2)  # collapsed while loading the source
    assert sorted(lake.read("prompts").column("problem").to_pylist()) == ["P0", "P1"]
    assert proc.stderr == ""


# ---------------------------------------------------------------- loop config

CONFIG_CASES = [
    pytest.param("run_id: x\nscoring:\n  verifer_mode: math\n", "unknown key 'scoring.verifer_mode'",
                 id="config-unknown-key"),
    pytest.param("run_id: x\ngeneration:\n  sampling: {n: 0}\n",
                 "generation.sampling.n: Input should be greater than or equal to 1", id="config-n-below-1"),
    pytest.param("run_id: x\nevaluation:\n  sampling: {n: 4}\n  ks: [1, 16]\n",
                 "evaluation: k=16 must be between 1 and eval n=4", id="config-k-above-n"),
    pytest.param("run_id: x\ngeneration:\n  sampling: {n: 8, temperature: 0}\n",
                 "generation.sampling: temperature 0 (greedy) gives one answer: n must be 1, got 8",
                 id="config-greedy-with-n-8"),
    pytest.param("run_id: x\n  rounds: [\n", "line 2: invalid YAML: mapping values are not allowed here",
                 id="config-invalid-yaml"),
    pytest.param("- run_id: x\n", "expected a mapping at the top level, got list", id="config-not-a-mapping"),
    pytest.param("run_id: x\nrounds: three\n",
                 "rounds: Input should be a valid integer, unable to parse string as an integer",
                 id="config-wrong-type"),
    pytest.param("rounds: 1\n", "missing key 'run_id'", id="config-missing-run-id"),
    pytest.param("run_id: x\nscoring:\n  reward_models: [{kind: orm, path: a}, {kind: orm, path: b}]\n",
                 "scoring.reward_models: two scorers are named 'orm'; set `name` on one", id="config-two-scorers-one-name"),
    pytest.param("run_id: x\nscoring:\n  reward_models: [{kind: ensemble}]\n",
                 "scoring.reward_models.0: Input tag 'ensemble' found using 'kind' does not match any of the expected "
                 "tags: 'orm', 'prm', 'prl', 'math_shepherd', 'judge', 'confidence'",
                 id="config-unknown-reward-model-kind"),
    pytest.param("run_id: x\nselection: keep_everything\n",
                 "selection: unknown policy preset 'keep_everything' (presets: keep_correct, "
                 "all_steps_correct, rft, majority, rft_mc, rft_prm, rft_judge, rft_conf, prl_weighted)",
                 id="config-unknown-preset"),
    pytest.param("run_id: x\nfinetune:\n  learning_rate: .inf\n",
                 "finetune.learning_rate: Input should be a finite number", id="config-infinite-learning-rate"),
    pytest.param("run_id: x\nfinetune:\n  epochs: .nan\n", "finetune.epochs: Input should be a finite number",
                 id="config-nan-epochs"),
    pytest.param("run_id: x\nfinetune: {epochs: 15, max_steps: 300}\n",
                 "finetune: set epochs or max_steps, not both: max_steps trains that many steps whatever the epochs",
                 id="config-epochs-and-max-steps"),
    pytest.param("run_id: x\nfinetune: {batching: sorted}\n",
                 "finetune.batching: Input should be 'shuffle' or 'by_length'", id="config-unknown-batching"),
    pytest.param("run_id: x\ngeneration:\n  sampling: {temperature: .inf}\n",
                 "generation.sampling.temperature: Input should be a finite number",
                 id="config-infinite-temperature"),
    pytest.param("", "missing key 'run_id'", id="config-empty-file"),
]


@pytest.mark.parametrize(("text", "problem"), CONFIG_CASES)
def test_bad_loop_config(text: str, problem: str, tmp_path: Path) -> None:
    """The loader `flywheel run/iterate/eval --config` use; the CLI prints `flywheel: error: ` + this."""
    from schemas.config import ConfigError, load_config
    from schemas.loop import LoopConfig

    path = tmp_path / "loop.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, LoopConfig)
    separator = " " if problem.startswith("line ") else ": "
    assert str(info.value) == f"{path}{separator}{problem}"


def test_run_with_a_bad_config_is_one_line(tmp_path: Path, lake: Lake) -> None:
    """config-unknown-key through `flywheel run`: the key, one line, exit 1, the lake untouched."""
    path = tmp_path / "loop.yaml"
    path.write_text(f"run_id: x\nlake: {lake.root}\nscoring:\n  verifer_mode: math\n", encoding="utf-8")
    proc = run_cli("run", "--config", str(path), timeout=300)
    line = assert_one_line_error(proc)
    assert line == f"flywheel: error: {path}: unknown key 'scoring.verifer_mode'"
    assert lake_files(lake.root) == set()


# ---------------------------------------------------------------- generate and score (CLI)

def _wrong_kind_folders(tmp_path: Path) -> dict[str, Path]:
    folders = {}
    for name, config in (("causal", {"architectures": ["LlamaForCausalLM"], "model_type": "llama"}),
                         ("two_labels", {"architectures": ["LlamaForSequenceClassification"],
                                         "model_type": "llama", "num_labels": 2}),
                         ("no_weights", {"architectures": ["LlamaForCausalLM"], "model_type": "llama"})):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
        folders[name] = folder
    folders["missing"] = tmp_path / "missing-model"
    return folders


COMMAND_CASES = [
    pytest.param(["generate", "--model", "{missing}", "--n", "0"],
                 ["SamplingConfig", " n ", "greater than or equal to 1"], id="generate-n-below-1"),
    pytest.param(["generate", "--model", "{missing}", "--temperature", "-1"],
                 ["temperature", "greater than or equal to 0"], id="generate-negative-temperature"),
    pytest.param(["generate", "--model", "{missing}", "--split", "test"],
                 ["no prompts with split 'test' in the lake at {lake}"], id="generate-unknown-split"),
    pytest.param(["generate", "--model", "{missing}"], ["model folder not found: {missing}"],
                 id="generate-missing-model-folder"),
    pytest.param(["generate", "--model", "{no_weights}"],
                 ["model folder has no weights (*.safetensors or *.bin): {no_weights}"],
                 id="generate-folder-without-weights"),
    pytest.param(["score", "--scorer", "bogus"],
                 ["unknown scorer 'bogus' (scorers: confidence, orm, prl, prm, step_verifier, verifier)"],
                 id="score-unknown-scorer"),
    pytest.param(["score", "--scorer", "verifier", "--iteration", "7"], ["no candidates in iteration 7 to score"],
                 id="score-no-candidates"),
    pytest.param(["score", "--scorer", "orm"], ["scorer 'orm' needs --model (the reward model folder)"],
                 id="score-orm-without-model"),
    pytest.param(["score", "--scorer", "prl"], ["scorer 'prl' needs --reference (the base model folder)"],
                 id="score-prl-without-reference"),
    pytest.param(["score", "--scorer", "orm", "--model", "{missing}"],
                 ["reward model folder not found: {missing}"], id="score-missing-reward-model-folder"),
    pytest.param(["score", "--scorer", "orm", "--model", "{causal}"],
                 ["{causal} is not a *ForSequenceClassification model (architectures: LlamaForCausalLM)"],
                 id="score-causal-lm-as-orm"),
    pytest.param(["score", "--scorer", "orm", "--model", "{two_labels}"],
                 ["{two_labels} has 2 labels; a reward model needs exactly one"],
                 id="score-two-label-reward-model"),
]


@pytest.mark.parametrize(("args", "needles"), COMMAND_CASES)
def test_bad_command(args: list[str], needles: list[str], demo_lake: Lake, tmp_path: Path) -> None:
    places = {**_wrong_kind_folders(tmp_path), "lake": demo_lake.root}
    before = lake_files(demo_lake.root)
    proc = run_cli("--lake", str(demo_lake.root), *(a.format(**places) for a in args), timeout=300)
    assert_one_line_error(proc, *(n.format(**places) for n in needles))
    assert lake_files(demo_lake.root) == before and demo_lake.stray_files() == []


def test_score_on_a_missing_lake(tmp_path: Path) -> None:
    """score-missing-lake."""
    proc = run_cli("--lake", str(tmp_path / "nowhere"), "score", "--scorer", "verifier")
    assert assert_one_line_error(proc) == f"flywheel: error: lake not found: {tmp_path / 'nowhere'}"
    assert not (tmp_path / "nowhere").exists()


def _drop_file_permission_override() -> None:
    """In the child: give up root's power to write where file modes forbid it (a no-op for others)."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop, cap_dac_override, cap_dac_read_search, cap_fowner = 24, 1, 2, 3
    for capability in (cap_dac_override, cap_dac_read_search, cap_fowner):
        if libc.prctl(pr_capbset_drop, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_score_into_a_read_only_lake(demo_lake: Lake) -> None:
    """score-read-only-lake: every folder of the lake is r-x; the scores partition cannot be made."""
    before = lake_files(demo_lake.root)
    folders = [demo_lake.root, *(p for p in demo_lake.root.rglob("*") if p.is_dir())]
    for folder in folders:
        folder.chmod(0o555)
    try:
        proc = run_cli_with(_drop_file_permission_override, "--lake", str(demo_lake.root),
                            "score", "--scorer", "step_verifier")
    except subprocess.SubprocessError as error:  # prctl refused: this machine cannot drop root's override
        pytest.skip(f"cannot make the lake read-only for the child process: {error}")
    finally:
        for folder in folders:
            folder.chmod(0o755)
    assert_one_line_error(proc, f"cannot create {demo_lake.root / 'scores'}",
                          "read-only or not permitted (Permission denied)")
    assert lake_files(demo_lake.root) == before and demo_lake.stray_files() == []


def test_score_when_the_disk_fills_mid_shard(demo_lake: Lake) -> None:
    """score-disk-full-mid-shard: a 1 KiB file-size limit in the CLI process; the scores shard
    (about 4 KiB) fails part-way through its write."""
    before = lake_files(demo_lake.root)

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))

    proc = run_cli_with(small_files, "--lake", str(demo_lake.root), "score", "--scorer", "step_verifier")
    line = assert_one_line_error(proc, f"cannot write {demo_lake.root / 'scores' / 'iteration=0'}/",
                                 ".parquet: File too large")
    assert line.count(".parquet") == 1
    assert lake_files(demo_lake.root) == before and demo_lake.stray_files() == []
    assert demo_lake.shards("scores") == []
    # the same command without the limit writes the shard: the limit alone made it fail
    assert run_cli("--lake", str(demo_lake.root), "score", "--scorer", "step_verifier").returncode == 0
    assert len(demo_lake.shards("scores")) == 1


def test_score_with_a_corrupt_shard(demo_lake: Lake) -> None:
    """score-corrupt-candidates-shard: a truncated candidates shard is named, nothing is written."""
    corrupt = demo_lake.partition_dir("candidates", 0) / "zz-truncated.parquet"
    corrupt.write_bytes(b"PAR1 half a file")
    before = lake_files(demo_lake.root)
    proc = run_cli("--lake", str(demo_lake.root), "score", "--scorer", "step_verifier")
    assert_one_line_error(proc, str(corrupt))
    assert lake_files(demo_lake.root) == before


def test_orm_that_outputs_nan(demo_lake: Lake, model_folders: dict[str, Path]) -> None:
    """score-orm-gives-nan: a NaN from the reward model is an error naming the candidate, never a
    stored score. (transformers' own "Loading weights" bar is switched off here; that it shows
    at all off a terminal is the next case.)"""
    before = lake_files(demo_lake.root)
    candidates = set(demo_lake.read("candidates").column("candidate_id").to_pylist())
    proc = run_cli("--lake", str(demo_lake.root), "score", "--scorer", "orm",
                   "--model", str(model_folders["nan_reward_model"]), timeout=300,
                   env={"HF_HUB_DISABLE_PROGRESS_BARS": "1"})
    line = assert_one_line_error(proc, "reward model gave a non-finite score for candidate ")
    assert line.split()[-1] in candidates
    assert lake_files(demo_lake.root) == before


def test_model_loading_adds_nothing_to_stderr(demo_lake: Lake, model_folders: dict[str, Path]) -> None:
    """score-orm-gives-nan with the default environment: still exactly one stderr line."""
    env = {"HF_HUB_DISABLE_PROGRESS_BARS": ""} if "HF_HUB_DISABLE_PROGRESS_BARS" in os.environ else None
    proc = run_cli("--lake", str(demo_lake.root), "score", "--scorer", "orm",
                   "--model", str(model_folders["nan_reward_model"]), timeout=300, env=env)
    assert_one_line_error(proc, "reward model gave a non-finite score for candidate ")


def test_generate_refuses_a_reward_model_as_policy(demo_lake: Lake, model_folders: dict[str, Path]) -> None:
    """generate-reward-model-as-policy."""
    before = lake_files(demo_lake.root)
    folder = model_folders["reward_model"]
    proc = run_cli("--lake", str(demo_lake.root), "generate", "--model", str(folder), "--backend", "hf",
                   "--n", "1", "--max-tokens", "4", "--limit", "1", timeout=300)
    assert_one_line_error(proc, str(folder), "LlamaForSequenceClassification")
    assert lake_files(demo_lake.root) == before


def test_generate_refuses_a_prompt_longer_than_the_context(lake: Lake, model_folders: dict[str, Path]) -> None:
    """generate-prompt-longer-than-context: a 2,332-character prompt for a 256-position model."""
    long_prompt = prompt_row("(" * 999 + "1" + "+1)" * 333, "334")
    lake.write("prompts", [long_prompt], 0)
    before = lake_files(lake.root)
    proc = run_cli("--lake", str(lake.root), "generate", "--model", str(model_folders["policy"]),
                   "--backend", "hf", "--n", "1", "--max-tokens", "4", timeout=300)
    assert_one_line_error(proc, long_prompt["prompt_id"], "context")
    assert lake_files(lake.root) == before


def test_judge_with_zero_attempts_is_one_line(demo_lake: Lake, model_folders: dict[str, Path]) -> None:
    """score-judge-zero-attempts."""
    before = lake_files(demo_lake.root)
    proc = run_cli("--lake", str(demo_lake.root), "score", "--scorer", "judge", "--backend", "hf",
                   "--model", str(model_folders["policy"]), "--attempts", "0", timeout=300)
    assert_one_line_error(proc, "max_attempts must be an integer >= 1, got 0")
    assert lake_files(demo_lake.root) == before


# ---------------------------------------------------------------- lake writes (API)

class _Interrupt(KeyboardInterrupt):
    pass


@pytest.mark.parametrize(("failure", "expected"), [
    pytest.param(OSError(28, "No space left on device"), LakeError, id="disk-full"),
    pytest.param(_Interrupt(), KeyboardInterrupt, id="interrupted"),
    pytest.param(pa.ArrowInvalid("column chunk overflow"), pa.ArrowInvalid, id="arrow-error"),
])
def test_lake_write_fails_mid_shard(failure: BaseException, expected: type[BaseException], lake: Lake,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """lake-write-fails-mid-shard: the writer puts half the bytes down, then fails."""
    real_write = pq.write_table

    def half_then_fail(table: pa.Table, where: Any, **kwargs: Any) -> None:
        buffer = pa.BufferOutputStream()
        real_write(table, buffer, **kwargs)
        data = buffer.getvalue().to_pybytes()
        where.write(data[: len(data) // 2])
        where.flush()
        raise failure

    monkeypatch.setattr(pq, "write_table", half_then_fail)
    rows = [candidate_row("p", i, f"#### {i}") for i in range(50)]
    with pytest.raises(expected) as info:
        lake.write("candidates", rows, 0)
    assert lake_files(lake.root) == set() and lake.stray_files() == []
    if expected is LakeError:
        message = str(info.value)
        assert "\n" not in message
        assert message.startswith(f"cannot write {lake.partition_dir('candidates', 0)}/")
        assert message.endswith(".parquet: No space left on device")


@pytest.mark.parametrize(("values", "steps", "needle"), [
    pytest.param([1.0, math.nan], None, "column 'value' holds nan at row 1", id="nan"),
    pytest.param([math.inf], None, "column 'value' holds inf at row 0", id="inf"),
    pytest.param([0.5, 0.2, -math.inf], None, "column 'value' holds -inf at row 2", id="-inf"),
    pytest.param([None, 1.0], [[0.5], [0.1, math.nan]], "column 'step_scores' holds nan at row 1",
                 id="nan-in-list"),
])
def test_lake_schema_forbids_non_finite(values: list[float | None], steps: list | None, needle: str,
                                        lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    """lake-schema-forbids-non-finite: Lake.write refuses NaN and infinities in columns a schema
    declares finite (`TableSpec.finite`), naming column and row; nulls stay allowed."""
    import schemas
    from schemas.base import TableSpec

    spec = schemas.TABLES["scores"]
    strict = TableSpec(name="scores", schema=spec.schema, key=spec.key, version=spec.version,
                       finite=("value", "step_scores"))
    monkeypatch.setitem(schemas.TABLES, "scores", strict)
    lake.write("scores", score_rows([None, 2.5], [None, [0.5]]), 0)  # finite and null: accepted
    before = lake_files(lake.root)
    with pytest.raises(SchemaError) as info:
        lake.write("scores", score_rows(values, steps), 1)
    assert str(info.value) == f"table 'scores': {needle}; only finite numbers (or null) are allowed"
    assert lake_files(lake.root) == before


def test_lake_refuses_a_nan_score(lake: Lake) -> None:
    """lake-nan-score: a NaN in scores.value never reaches a shard."""
    with pytest.raises(SchemaError, match="column 'value' holds nan at row 0"):
        lake.write("scores", score_rows([math.nan]), 0)
    assert lake_files(lake.root) == set()


def test_lake_refuses_empty_rows(lake: Lake) -> None:
    """lake-empty-rows."""
    with pytest.raises(LakeError, match=r"^refusing to write an empty shard to table 'scores'$"):
        lake.write("scores", [], 0)
    assert lake_files(lake.root) == set()


@pytest.mark.parametrize(("change", "message"), [
    pytest.param(lambda r: {("candidate" if k == "candidate_id" else k): v for k, v in r.items()},
                 "table 'scores': missing column 'candidate_id'", id="missing"),
    pytest.param(lambda r: {**r, "score": 1.0}, "table 'scores': unexpected column 'score'", id="unexpected"),
    pytest.param(lambda r: {**r, "value": "high"}, "table 'scores': column 'value': ", id="wrong-type"),
])
def test_lake_wrong_column_names(change: Callable[[dict], dict], message: str, lake: Lake) -> None:
    """lake-wrong-column-names: the column is named, nothing is written."""
    rows = score_rows([1.0, 0.0])
    rows[1] = change(rows[1])
    with pytest.raises(SchemaError) as info:
        lake.write("scores", rows, 0)
    assert str(info.value).startswith(message)
    assert lake_files(lake.root) == set()


# ---------------------------------------------------------------- non-finite scores (API)

def _non_finite_cases() -> list[Any]:
    from tasks.evaluation.metrics import bootstrap_ci, rm_at_k
    from tasks.scoring.aggregate import aggregate_steps
    from tasks.scoring.prl import group_advantages
    from tasks.scoring.reward_model import check_finite
    from tasks.scoring.vote import majority_answer

    return [
        pytest.param(lambda: majority_answer(["1", "2"], [1.0, math.nan]), ValueError,
                     "weight at index 1 is nan, not finite", id="vote-weight-nan"),
        pytest.param(lambda: majority_answer(["1", "2"], [math.inf, 1.0]), ValueError,
                     "weight at index 0 is inf, not finite", id="vote-weight-inf"),
        pytest.param(lambda: aggregate_steps([0.5, math.nan], "min"), ValueError,
                     "step score 1 is not finite: nan", id="aggregate-step-nan"),
        pytest.param(lambda: aggregate_steps([math.inf], "mean"), ValueError,
                     "step score 0 is not finite: inf", id="aggregate-step-inf"),
        pytest.param(lambda: rm_at_k([math.nan, 0.2], [True, False], 1), ValueError,
                     "score at index 0 is NaN", id="rm-at-k-nan"),
        pytest.param(lambda: bootstrap_ci([0.0, math.inf]), ValueError,
                     "per-problem value at index 1 is inf, not finite", id="bootstrap-inf"),
        pytest.param(lambda: group_advantages([1.0, math.nan]), ValueError,
                     "rewards[1] is not finite: nan", id="prl-reward-nan"),
        pytest.param(lambda: check_finite(math.inf, {"candidate_id": "c7"}), RewardModelError,
                     "reward model gave a non-finite score for candidate c7", id="reward-model-inf"),
    ]


@pytest.mark.parametrize(("call", "error", "message"), _non_finite_cases())
def test_non_finite_scores(call: Callable[[], Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error) as info:
        call()
    assert str(info.value) == message


# ---------------------------------------------------------------- verifier (API)

MEGA = 1_000_000
NO_ANSWER = "no final answer found (extractors: hash, boxed, answer_is, answer_line)"
TOO_LONG = "answer longer than 1000 characters"
# id: (text, reference, {mode: (label, detail or None)}); one entry for both modes when they agree
VERIFIER_CASES: dict[str, tuple[str, str, dict[str, tuple[str, str | None]]]] = {
    "huge-integer-5000-digits": ("#### " + "9" * 5000, "9" * 5000, {"*": ("unparseable", TOO_LONG)}),
    "huge-integer-999-digits": ("#### " + "9" * 999, "1", {"*": ("incorrect", None)}),
    "huge-exponent": ("#### 1e100000000", "1", {"*": ("incorrect", None)}),
    "power-tower-via-parse-expr": ("\\boxed{\\foo{ 9^9^9 }}", "1",
                                   {"exact": ("incorrect", None),
                                    "math": ("timeout", "verification exceeded the 2 s timeout")}),
    "boxed-nested-10000-deep": ("\\boxed{" * 10_000 + "1" + "}" * 10_000, "1", {"*": ("correct", None)}),
    "boxed-unclosed-100000": ("\\boxed{" * 100_000, "1", {"*": ("unparseable", NO_ANSWER)}),
    "braces-60-deep-in-box": ("\\boxed{" + "{" * 60 + "1" + "}" * 60 + "}", "1",
                              {"exact": ("incorrect", None),
                               "math": ("unparseable", "answer nests brackets more than 50 deep")}),
    "answer-100k-chars": ("#### " + "1" * 100_000, "1", {"*": ("unparseable", TOO_LONG)}),
    "text-1mb-no-answer": ("x" * MEGA, "1", {"*": ("unparseable", NO_ANSWER)}),
    # math mode reads other scripts' digits as the numbers they are (exact mode compares strings)
    "fullwidth-digits": ("#### \uff13\uff12", "32", {"exact": ("incorrect", None), "math": ("correct", None)}),
    "arabic-indic-digits": ("#### \u0663\u0662", "32", {"exact": ("incorrect", None),
                                                          "math": ("correct", None)}),
    "superscript-digit": ("\\boxed{\u00b2}", "2", {"*": ("incorrect", None)}),
    "zero-width-space": ("#### 3\u200b2", "32", {"*": ("incorrect", None)}),
    "nul-byte": ("#### 3\x002", "32", {"*": ("incorrect", None)}),
    "lone-surrogate": ("#### 3\udcff", "3", {"*": ("unparseable", "answer is not valid UTF-8")}),
    "empty-text": ("", "1", {"*": ("unparseable", NO_ANSWER)}),
    "empty-boxed": ("\\boxed{}", "1", {"*": ("unparseable", NO_ANSWER)}),
    "blank-hash-line": ("####   \n", "1", {"*": ("unparseable", NO_ANSWER)}),
    "division-by-zero": ("\\boxed{\\frac{1}{0}}", "1", {"*": ("incorrect", None)}),
    "infinity": ("\\boxed{\\infty}", "\\infty", {"*": ("correct", None)}),
}
VALUES = {"correct": 1.0, "incorrect": 0.0, "unparseable": None, "timeout": None}


@pytest.fixture(scope="module")
def verifiers():
    """One warm verifier pool per mode, started on first use (2 s per-item timeout)."""
    from tasks.scoring.verify import Verifier

    pools: dict[str, Verifier] = {}

    def get(mode: str) -> Verifier:
        if mode not in pools:
            pools[mode] = Verifier(mode, timeout_s=2.0, workers=2)
        return pools[mode]

    yield get
    for pool in pools.values():
        pool.close()


@pytest.mark.parametrize("case", list(VERIFIER_CASES))
@pytest.mark.parametrize("mode", ["exact", "math"])
def test_pathological_verifier_input(mode: str, case: str, verifiers: Callable[[str], Any]) -> None:
    from tasks.scoring.verify import VerifyItem

    text, reference, expected = VERIFIER_CASES[case]
    label, detail = expected.get(mode, expected.get("*"))  # type: ignore[misc]
    pool = verifiers(mode)
    started = time.perf_counter()
    (verdict,) = pool.verify([VerifyItem(text, reference)])
    elapsed = time.perf_counter() - started
    assert (verdict.label, verdict.value, verdict.detail) == (label, VALUES[label], detail)
    assert elapsed < (6.0 if label == "timeout" else 3.0)


STEP_CASES = {
    "line-1mb": (["7+5=12" + "0" * MEGA], [0.0]),
    "unicode-digits": (["\uff17+\uff15=\uff11\uff12", "12*3=36", "36-4=32", "#### \uff13\uff12"], [0.0] * 4),
    "numbers-5000-digits": (["9" * 5000 + "+5=12"], [0.0]),
    "numbers-20-digits": (["99999999999999999999+5=100000000000000000004"], [0.0]),
    "parentheses-100000": (["(" * 100_000 + "7+5=12"], [0.0]),
    "answer-line-100k": (["#### " + "9" * 100_000], [0.0]),
    "no-steps": ([], []),
    "blank-steps": (["", " ", "####"], [0.0, 0.0, 0.0]),
    "nul-byte": (["7+5=12\x00"], [0.0]),
    "control-correct": (["7+5=12", "12*3=36", "36-4=32", "#### 32"], [1.0] * 4),
}


@pytest.mark.parametrize("case", list(STEP_CASES))
def test_pathological_step_input(case: str) -> None:
    from tasks.scoring.step_verify import all_steps_correct, step_labels

    steps, expected = STEP_CASES[case]
    started = time.perf_counter()
    assert step_labels("((7+5)*3)-4", steps, "32") == expected
    assert all_steps_correct("((7+5)*3)-4", steps, "32") is (case == "control-correct")
    assert time.perf_counter() - started < 0.5


def test_scorers_return_a_row_for_every_pathological_candidate(lake: Lake) -> None:
    """The verifier and step-verifier scorers label every candidate (never raise), and their rows
    store in the lake as they are."""
    from schemas.scores import LABELS
    from tasks.scoring.score import StepVerifierScorer, VerifierScorer

    texts = [text for text, _, _ in VERIFIER_CASES.values() if len(text) < 200_000]
    candidates = [{**candidate_row("p-demo", i, t), "problem": "((7+5)*3)-4", "reference_answer": "32"}
                  for i, t in enumerate(texts)]
    verifier = VerifierScorer(mode="exact", timeout_s=2.0, workers=1)
    try:
        rows = verifier.score(candidates)
    finally:
        verifier.close()
    rows += StepVerifierScorer().score(candidates)
    assert len(rows) == 2 * len(candidates)
    assert {r["label"] for r in rows} <= set(LABELS)
    assert lake.write("scores", rows, 0).exists()
    assert lake.read("scores").num_rows == len(rows)


# ---------------------------------------------------------------- judge without a verdict (API)

@pytest.mark.parametrize("output", [
    "", "Response 1 is better.", "[[A]]", "Verdict: Response 2", "\\boxed{3}", "\\boxed{}",
    "\\boxed{1}\n\\boxed{2}", "\\boxed{1} on reflection, no.", "boxed{1}", "\\boxed{" * 10_000,
], ids=["empty", "sentence", "double-bracket", "verdict-word", "boxed-3", "boxed-empty", "two-verdicts",
        "verdict-not-last", "no-backslash", "unclosed-10000"])
def test_judge_output_without_verdict(output: str) -> None:
    from tasks.scoring.judge import parse_verdict

    assert parse_verdict(output) is None


def test_a_judge_that_never_decides_is_recorded_not_raised(demo_lake: Lake) -> None:
    """Every comparison is stored as unparseable after the configured attempts; the stage writes
    its comparisons and scores and raises nothing."""
    from schemas.generation import SamplingConfig
    from tasks.generation.generate import Completion
    from tasks.scoring.judge import GenerativeJudge
    from tasks.scoring.judge_stage import judge_candidates
    from tasks.scoring.score import load_candidates

    class Undecided:
        name = "undecided"

        def __init__(self) -> None:
            self.calls = 0

        def generate(self, prompts, sampling, seeds):  # noqa: ANN001, ANN201 - the backend protocol
            self.calls += 1
            return [[Completion("Both look fine to me. [[A]]", [], None, None, "stop")] for _ in prompts]

        def close(self) -> None:
            pass

    backend = Undecided()
    judge = GenerativeJudge(backend, SamplingConfig(n=1, temperature=0.7), max_attempts=2)
    report = judge_candidates(demo_lake, judge, load_candidates(demo_lake, 0), 0)
    assert report.comparisons == report.unparseable == 2  # one knockout match per prompt
    assert backend.calls == 4  # each prompt's match is its own batch: 2 prompts x 2 attempts
    rows = demo_lake.read("comparisons").to_pylist()
    assert [(r["verdict"], r["winner_id"], r["attempts"]) for r in rows] == [("unparseable", None, 2)] * 2
    assert demo_lake.read("scores").num_rows == 4
