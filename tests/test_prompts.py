"""Prompt sources: config, reference extraction, loading errors, decontamination, lake writes."""
from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402

from schemas.prompt_source import PromptSourceConfig, PromptSourceConfigError  # noqa: E402
from tasks.lake import ids  # noqa: E402
from tasks.prompts import demo_task  # noqa: E402
from tasks.prompts.fixtures import (  # noqa: E402
    GSM8K_FILE, MATH_FILE, gsm8k_examples, math_examples, write_fixtures)
from tasks.lake.store import Lake  # noqa: E402
from tasks.prompts.sources import (  # noqa: E402
    ProblemRecord, PromptSourceError, decontaminate, demo_prompt_rows, extract_reference,
    find_overlap, load_source, normalise_problem, prompt_rows, write_prompts)
from tests.conftest import PROJECT_ROOT  # noqa: E402

FIXTURES = PROJECT_ROOT / "data" / "fixtures"
EXAMPLE_CONFIG = PROJECT_ROOT / "configs" / "prompts-gsm8k-fixture.yaml"


def config(**overrides: object) -> PromptSourceConfig:
    """A valid local-file config with `overrides` applied."""
    base: dict[str, object] = dict(name="src", path="data.jsonl", problem_column="q",
                                   answer_column="a", reference_style="plain", split="train")
    base.update(overrides)
    return PromptSourceConfig(**{k: v for k, v in base.items() if v is not None})


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def load(cfg: PromptSourceConfig, tmp_path: Path, root: Path | None = None
         ) -> list[ProblemRecord]:
    """Load with relative paths read from `root` (default tmp_path), the datasets cache in tmp_path."""
    return load_source(cfg, root=root or tmp_path, cache_dir=tmp_path / "hf-cache")


def row(problem: str, split: str = "train", source: str = "src", reference: str | None = "1"
        ) -> dict:
    return {"prompt_id": ids.prompt_id(source, problem), "iteration": 0, "source": source,
            "split": split, "problem": problem, "reference_answer": reference, "metadata": None}


# -- reference styles -----------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "style", "expected"), [
    ("She has 3 + 4 = 7.\n#### 7", "gsm8k", "7"),
    ("Total 1,234 * 2 = 2468\n#### 2,468 ", "gsm8k", "2468"),
    ("#### 1 is wrong, so\n#### 12", "gsm8k", "12"),
    ("so $x = \\boxed{\\frac{1}{2}}$.", "boxed", "\\frac{1}{2}"),
    ("first \\boxed{3}, finally \\boxed{ 4 }", "boxed", "4"),
    ("set $\\boxed{\\{-3, 3\\}}$", "boxed", "\\{-3, 3\\}"),
    ("\\boxed{\\sqrt{\\frac{a}{b}}}+1", "boxed", "\\sqrt{\\frac{a}{b}}"),
    ("  42 \n", "plain", "42"),
    (7, "plain", "7"),
])
def test_extract_reference_styles(value: object, style: str, expected: str) -> None:
    assert extract_reference(value, style) == expected


@pytest.mark.parametrize(("value", "style", "message"), [
    ("the answer is 7", "gsm8k", "no '#### answer' marker"),
    ("#### ", "gsm8k", "the extracted answer is empty"),
    ("the answer is 7", "boxed", "no \\boxed{...}"),
    ("\\boxed{\\frac{1}{2}", "boxed", "unbalanced braces"),
    ("\\boxed{}", "boxed", "the extracted answer is empty"),
    (None, "plain", "the answer is null"),
    (True, "plain", "the answer is a bool"),
    ("   ", "plain", "the extracted answer is empty"),
])
def test_extract_reference_failures(value: object, style: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        extract_reference(value, style)
    assert str(info.value).startswith(message)


# -- config ---------------------------------------------------------------------------------------

def test_example_config_loads_and_splits_deterministically(tmp_path: Path) -> None:
    cfg = PromptSourceConfig.from_yaml(EXAMPLE_CONFIG)
    assert (cfg.name, cfg.reference_style, cfg.eval_fraction, cfg.seed) == (
        "gsm8k-fixture", "gsm8k", 0.25, 0)
    records = load(cfg, tmp_path, PROJECT_ROOT)
    assert [r.reference_answer for r in records] == [e.answer for e in gsm8k_examples()]
    assert [r.problem for r in records] == [e.row["question"] for e in gsm8k_examples()]
    assert [r.row for r in records if r.split == "eval"] == [1, 5, 10, 18, 19]
    assert {r.source for r in records} == {"gsm8k-fixture"}
    assert [r.split for r in load(cfg, tmp_path, PROJECT_ROOT)] == [r.split for r in records]


def test_math_fixture_boxed_references(tmp_path: Path) -> None:
    cfg = config(path=str(FIXTURES / MATH_FILE), problem_column="problem",
                 answer_column="solution", reference_style="boxed", split="eval")
    records = load(cfg, tmp_path)
    assert [r.reference_answer for r in records] == [e.answer for e in math_examples()]
    assert records[5].reference_answer == "\\frac{1}{2}"
    assert {r.split for r in records} == {"eval"}


@pytest.mark.parametrize(("data", "message"), [
    ({"name": "x", "path": "a.jsonl", "problem_column": "q", "split": "train", "colour": 1},
     "unknown key 'colour'"),
    ({"name": "x", "problem_column": "q", "split": "train"},
     "give exactly one of 'path' (a local file or folder) or 'hub'"),
    ({"name": "x", "path": "a", "hub": "b", "problem_column": "q", "split": "train"},
     "give exactly one of 'path' (a local file or folder) or 'hub'"),
    ({"name": "x", "hub": "org/ds", "problem_column": "q", "split": "train"},
     "a 'hub' source needs 'hf_split' (e.g. train or test)"),
    ({"name": "x", "path": "a", "hf_split": "test", "problem_column": "q", "split": "train"},
     "'hf_split' only applies to a 'hub' source"),
    ({"name": "x", "path": "a", "problem_column": "q", "answer_column": "a", "split": "train"},
     "give 'answer_column' and 'reference_style' together"),
    ({"name": "x", "path": "a", "problem_column": "q", "answer_column": "a",
      "reference_style": "plain", "split": "train", "eval_fraction": 0.2, "seed": 1},
     "give exactly one of 'split' (train or eval) or 'eval_fraction'"),
    ({"name": "x", "path": "a", "problem_column": "q", "answer_column": "a",
      "reference_style": "plain", "eval_fraction": 0.2},
     "give 'eval_fraction' and 'seed' together"),
    ({"name": "x", "path": "a", "problem_column": "q", "split": "eval"},
     "eval problems need a reference: set 'answer_column'"),
    ({"name": "x", "path": "a", "problem_column": "q", "split": "test"},
     "split: Input should be 'train' or 'eval' (got 'test')"),
    ({"path": "a", "problem_column": "q", "split": "train"}, "missing key 'name'"),
])
def test_config_errors_are_one_line(data: dict, message: str) -> None:
    with pytest.raises(PromptSourceConfigError) as info:
        PromptSourceConfig.from_dict(data, origin="cfg.yaml")
    assert str(info.value) == f"cfg.yaml: {message}"


def test_config_yaml_errors(tmp_path: Path) -> None:
    with pytest.raises(PromptSourceConfigError, match="prompt source config not found: "):
        PromptSourceConfig.from_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\npath: [unclosed\n", encoding="utf-8")
    with pytest.raises(PromptSourceConfigError, match=r"bad.yaml line 3: invalid YAML"):
        PromptSourceConfig.from_yaml(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- name: x\n", encoding="utf-8")
    with pytest.raises(PromptSourceConfigError, match="expected a mapping of keys, got list"):
        PromptSourceConfig.from_yaml(listing)


# -- loading: column mapping and formats ----------------------------------------------------------

def test_column_mapping_limit_and_no_reference(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "d.jsonl", [{"text": f"P{i}", "sol": f"x\n#### {i},000", "id": i}
                                       for i in range(5)])
    cfg = config(path="d.jsonl", problem_column="text", answer_column="sol",
                 reference_style="gsm8k", limit=3)
    records = load(cfg, tmp_path)
    assert records == [ProblemRecord("src", "train", f"P{i}", f"{i}000", i) for i in range(3)]
    bare = load(config(path="d.jsonl", problem_column="text", answer_column=None,
                       reference_style=None), tmp_path)
    assert [(r.problem, r.reference_answer) for r in bare] == [(f"P{i}", None) for i in range(5)]


def test_parquet_file_and_folder(tmp_path: Path) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    for part, start in (("b.parquet", 2), ("a.parquet", 0)):
        pq.write_table(pa.table({"q": [f"P{start}", f"P{start + 1}"], "a": [start, start + 1]}),
                       folder / part)
    (folder / "README.md").write_text("ignored", encoding="utf-8")
    records = load(config(path="parts"), tmp_path)
    assert [(r.problem, r.reference_answer) for r in records] == [
        ("P0", "0"), ("P1", "1"), ("P2", "2"), ("P3", "3")]


def test_hub_unreachable_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets.config
    import huggingface_hub.constants
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    cfg = config(path=None, hub="openai/gsm8k", subset="main", hf_split="train")
    with pytest.raises(PromptSourceError) as info:
        load(cfg, tmp_path)
    message = str(info.value)
    assert message.startswith("prompt source 'src': hub dataset 'openai/gsm8k': the hub is "
                              "unreachable and the dataset is not cached (")
    assert "\n" not in message


# -- loading: bad input ---------------------------------------------------------------------------

def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PromptSourceError) as info:
        load(config(path="missing.jsonl"), tmp_path)
    assert str(info.value) == f"prompt source 'src': file not found: {tmp_path / 'missing.jsonl'}"


def test_unsupported_extension_and_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("q,a\n", encoding="utf-8")
    with pytest.raises(PromptSourceError, match=r"unsupported extension '\.csv'"):
        load(config(path="d.csv"), tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(PromptSourceError, match=r"folder .*empty holds no .json/.jsonl/.parquet"):
        load(config(path="empty"), tmp_path)


def test_missing_column_lists_available(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data.jsonl", [{"question": "P", "answer": "1"}])
    with pytest.raises(PromptSourceError) as info:
        load(config(), tmp_path)
    assert str(info.value) == ("prompt source 'src': problem_column 'q' is not in the dataset "
                               "(columns: question, answer)")
    with pytest.raises(PromptSourceError, match="answer_column 'sol' is not in the dataset"):
        load(config(problem_column="question", answer_column="sol"), tmp_path)


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_json_dataset(tmp_path: Path, content: str) -> None:
    (tmp_path / "data.jsonl").write_text(content, encoding="utf-8")
    with pytest.raises(PromptSourceError, match=r"^prompt source 'src': the dataset is empty"):
        load(config(), tmp_path)


def test_empty_parquet_dataset(tmp_path: Path) -> None:
    pq.write_table(pa.table({"q": pa.array([], pa.string()), "a": pa.array([], pa.string())}),
                   tmp_path / "d.parquet")
    with pytest.raises(PromptSourceError) as info:
        load(config(path="d.parquet"), tmp_path)
    assert str(info.value) == f"prompt source 'src': the dataset is empty ({tmp_path / 'd.parquet'})"


def test_malformed_json_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"q": "P0", "a": "0"}\n{"q": "P1", "a": "1"\n{"q": "P2", "a": "2"}\n',
                    encoding="utf-8")
    with pytest.raises(PromptSourceError) as info:
        load(config(), tmp_path)
    assert str(info.value).startswith(f"prompt source 'src': malformed JSON in {path}: line 2: ")


def test_unextractable_reference_names_row_and_style(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data.jsonl", [{"q": "P0", "a": "x\n#### 1"}, {"q": "P1", "a": "2"}])
    with pytest.raises(PromptSourceError) as info:
        load(config(reference_style="gsm8k"), tmp_path)
    assert str(info.value) == (
        "prompt source 'src': row 1: cannot extract a reference answer from column 'a' with "
        "reference_style 'gsm8k': no '#### answer' marker")


def test_null_or_empty_problem_names_row(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data.jsonl", [{"q": "P0", "a": "1"}, {"q": None, "a": "2"}])
    with pytest.raises(PromptSourceError, match=r"row 1: problem column 'q' is None$"):
        load(config(), tmp_path)
    write_jsonl(tmp_path / "data.jsonl", [{"q": " ", "a": "1"}])
    with pytest.raises(PromptSourceError, match=r"row 0: problem column 'q' is empty$"):
        load(config(), tmp_path)


def test_eval_fraction_that_empties_a_split(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data.jsonl", [{"q": f"P{i}", "a": "1"} for i in range(4)])
    with pytest.raises(PromptSourceError, match=r"eval_fraction 0\.1 of 4 distinct problem\(s\) "
                                                r"leaves the eval split empty"):
        load(config(split=None, eval_fraction=0.1, seed=0), tmp_path)


def test_eval_fraction_keeps_normalised_duplicates_together(tmp_path: Path) -> None:
    rows = [{"q": f"Problem {i}?", "a": str(i)} for i in range(10)]
    rows += [{"q": f"problem  {i}", "a": str(i)} for i in range(10)]
    write_jsonl(tmp_path / "data.jsonl", rows)
    records = load(config(split=None, eval_fraction=0.3, seed=5), tmp_path)
    assert sum(r.split == "eval" for r in records) == 6
    assert [r.split for r in records[:10]] == [r.split for r in records[10:]]
    train = [row(r.problem) for r in records if r.split == "train"]
    held = [row(r.problem, "eval") for r in records if r.split == "eval"]
    assert find_overlap(train, held).total == 0


# -- rows and decontamination ---------------------------------------------------------------------

def test_prompt_rows_collapse_duplicates() -> None:
    records = [ProblemRecord("s", "train", "P", "1", 0), ProblemRecord("s", "train", "Q", "2", 1),
               ProblemRecord("s", "train", "P", "1", 2)]
    rows, dropped = prompt_rows(records, iteration=0)
    assert dropped == 1
    assert rows == [
        {"prompt_id": ids.prompt_id("s", "P"), "iteration": 0, "source": "s", "split": "train",
         "problem": "P", "reference_answer": "1", "metadata": '{"row":0}'},
        {"prompt_id": ids.prompt_id("s", "Q"), "iteration": 0, "source": "s", "split": "train",
         "problem": "Q", "reference_answer": "2", "metadata": '{"row":1}'},
    ]
    with pytest.raises(PromptSourceError, match=r"rows 0 and 1 of source 's' hold the same problem "
                                                r"with different reference_answer \('1' vs '9'\)"):
        prompt_rows([ProblemRecord("s", "train", "P", "1", 0),
                     ProblemRecord("s", "train", "P", "9", 1)])


def test_normalise_problem() -> None:
    assert normalise_problem("What is 2+2?") == "what is 2+2"
    assert normalise_problem("  what is\t 2+2 ") == "what is 2+2"
    assert normalise_problem("\"Compute ５+1.\"") == "compute 5+1"
    assert normalise_problem("-5+3") == "-5+3"
    assert normalise_problem("((7+5)*3)-4") == "((7+5)*3)-4"


def test_decontaminate_by_id_and_by_text() -> None:
    eval_rows = [row("What is 2+2?", "eval"), row("Name a prime.", "eval")]
    train_rows = [row("Name a prime.", "train"),                 # same prompt_id
                  row("what is  2+2", "train", source="other"),  # same normalised text
                  row("What is 3+3?", "train")]
    kept, report = decontaminate(train_rows, eval_rows)
    assert kept == [train_rows[2]]
    assert (report.by_id, report.by_text, report.total) == (1, 1, 2)
    assert report.overlapping_ids == {train_rows[0]["prompt_id"], train_rows[1]["prompt_id"]}
    assert report.examples == (("Name a prime.", "Name a prime."),
                               ("what is  2+2", "What is 2+2?"))
    assert report.summary() == (
        "2 of 3 train row(s) overlap 2 eval row(s) (1 by prompt_id, 1 by normalised text), "
        "e.g. train 'Name a prime.' ~ eval 'Name a prime.'")
    assert eval_rows == [row("What is 2+2?", "eval"), row("Name a prime.", "eval")]


# -- writing --------------------------------------------------------------------------------------

def test_write_prompts_is_idempotent(lake: Lake) -> None:
    rows = [row("A"), row("B"), row("C", "eval"), row("A")]
    first = write_prompts(lake, rows)
    assert first == {"rows": 4, "duplicates_dropped": 1, "skipped_existing": 0, "written": 3,
                     "train": 2, "eval": 1}
    second = write_prompts(lake, rows)
    assert second == {"rows": 4, "duplicates_dropped": 1, "skipped_existing": 3, "written": 0,
                      "train": 0, "eval": 0}
    assert len(lake.shards("prompts", 0)) == 1
    assert sorted(lake.read("prompts").column("problem").to_pylist()) == ["A", "B", "C"]
    third = write_prompts(lake, [row("B"), row("D")])
    assert (third["written"], third["skipped_existing"]) == (1, 1)
    assert lake.read("prompts").num_rows == 4


def test_write_prompts_refuses_train_that_is_eval_in_lake(lake: Lake) -> None:
    write_prompts(lake, [row("What is 2+2?", "eval", source="bench")])
    with pytest.raises(PromptSourceError) as info:
        write_prompts(lake, [row("Fresh"), row("what is  2+2", source="web")])
    assert str(info.value) == (
        "refusing to write: 1 train problem(s) already in the lake as eval (0 by prompt_id, "
        "1 by normalised text), e.g. 'what is 2+2' ~ 'What is 2+2?'")
    assert lake.read("prompts").column("problem").to_pylist() == ["What is 2+2?"]


def test_write_prompts_refuses_eval_that_is_train_in_lake(lake: Lake) -> None:
    write_prompts(lake, [row("Q1", reference="5")])
    with pytest.raises(PromptSourceError, match=r"different split \('train' vs 'eval'\)"):
        write_prompts(lake, [row("Q1", "eval", reference="5")])
    with pytest.raises(PromptSourceError, match=r"refusing to write: 1 eval problem\(s\) already in "
                                                r"the lake as train \(0 by prompt_id, 1 by norm"):
        write_prompts(lake, [row("q1.", "eval", source="bench", reference="5")])
    assert lake.read("prompts").num_rows == 1


def test_write_prompts_refuses_bad_batches(lake: Lake) -> None:
    with pytest.raises(PromptSourceError, match=r"1 train problem\(s\) already in the rows being "
                                                r"written as eval"):
        write_prompts(lake, [row("Same?"), row("same", "eval", source="b")])
    write_prompts(lake, [row("R", reference="1")])
    with pytest.raises(PromptSourceError, match=r"different reference_answer \('1' vs '2'\)"):
        write_prompts(lake, [row("R", reference="2")])
    with pytest.raises(PromptSourceError, match=r"unknown split 'test'"):
        write_prompts(lake, [row("S", "test")])
    forged = {**row("T"), "prompt_id": "0" * 16}
    with pytest.raises(PromptSourceError, match=r"prompt_id is not hash\(source, problem\)"):
        write_prompts(lake, [forged])
    assert lake.read("prompts").column("problem").to_pylist() == ["R"]


def test_load_and_write_example_source(lake: Lake, tmp_path: Path) -> None:
    records = load(PromptSourceConfig.from_yaml(EXAMPLE_CONFIG), tmp_path, PROJECT_ROOT)
    rows, dropped = prompt_rows(records)
    counts = write_prompts(lake, rows)
    assert (dropped, counts["written"], counts["train"], counts["eval"]) == (0, 20, 15, 5)
    stored = lake.read("prompts").to_pylist()
    assert not any("####" in (r["reference_answer"] or "") or "<<" in r["problem"]
                   for r in stored)


# -- the demo task --------------------------------------------------------------------------------

def test_demo_prompt_rows(lake: Lake) -> None:
    splits = demo_task.make_splits(n_pretrain=8, n_train=6, n_eval=4, seed=1)
    rows = demo_prompt_rows(splits)
    train = [r for r in rows if r["split"] == "train"]
    held = [r for r in rows if r["split"] == "eval"]
    assert [r["problem"] for r in train] == [c.problem for c in splits.train]
    assert [r["problem"] for r in held] == [c.problem for c in splits.eval]
    assert [r["reference_answer"] for r in rows] == [
        str(c.answer) for c in [*splits.train, *splits.eval]]
    assert {r["prompt_id"] for r in train}.isdisjoint(r["prompt_id"] for r in held)
    assert {r["source"] for r in rows} == {demo_task.SOURCE}
    pretrain = {c.problem for c in splits.pretrain}
    assert pretrain.isdisjoint(r["problem"] for r in rows)
    for r in rows:
        assert "=" not in r["problem"] and "####" not in r["problem"]
        assert int(r["reference_answer"]) == demo_task.parse_problem(r["problem"]).answer
    assert write_prompts(lake, rows)["written"] == 10


# -- fixtures -------------------------------------------------------------------------------------

def test_committed_fixtures_match_generator(tmp_path: Path) -> None:
    written = write_fixtures(tmp_path)
    assert [p.name for p in written] == [GSM8K_FILE, MATH_FILE]
    for path in written:
        assert (FIXTURES / path.name).read_bytes() == path.read_bytes()
    questions = [e.row["question"] for e in gsm8k_examples()]
    problems = [e.row["problem"] for e in math_examples()]
    assert (len(questions), len(set(questions)), len(problems), len(set(problems))) == (
        20, 20, 20, 20)
    assert any("\\boxed{\\frac{1}{2}}" in e.row["solution"] for e in math_examples())
