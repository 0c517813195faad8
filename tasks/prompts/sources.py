"""Prompt sources: load problems with their reference answers, decontaminate, write the prompts table.

`load_source` reads one configured source (local json/jsonl/parquet through Hugging Face
`datasets`, or a hub dataset) into ProblemRecords, checking everything before anything is written.
`prompt_rows` turns records into prompts-table rows; `decontaminate` drops train problems that also
appear in eval (by prompt_id or normalised text); `write_prompts` adds new rows to the lake and
refuses to let one problem sit in both train and eval. The prompts table never holds a solution.
"""
from __future__ import annotations

import json
import logging
import os
import re
import string
import unicodedata
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from schemas import SchemaError, table_spec
from schemas.bootstrap import DemoTaskConfig
from schemas.prompt_source import PromptSourceConfig
from schemas.prompts import SPLITS
from tasks.lake import ids
from tasks.lake.sql import connect
from tasks.lake.store import Lake
from tasks.prompts import demo_task
from tasks.runtime.progress import progress_enabled

log = logging.getLogger(__name__)

TABLE = "prompts"
_SPEC = table_spec(TABLE)


def _column(name: str) -> str:
    if name not in _SPEC.columns:
        raise SchemaError(f"table {TABLE!r} has no column {name!r}")
    return name


PROMPT_ID = _column("prompt_id")
ITERATION = _column("iteration")
SOURCE = _column("source")
SPLIT = _column("split")
PROBLEM = _column("problem")
REFERENCE = _column("reference_answer")
METADATA = _column("metadata")

EVAL = "eval"
BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}
EXAMPLES = 3
# A problem longer than this is refused when a source is loaded, naming its row: no prompt of a
# reasoning task is anywhere near it, and a runaway cell (a whole document in one field) must not
# reach the engines.
MAX_PROBLEM_CHARS = 100_000
# Punctuation stripped from the ends of a problem by normalise_problem. Brackets, signs and `$`
# stay: "-5+3" and "5+3" are different problems.
_END_PUNCTUATION = ".,;:!?\"'`"
_WHITESPACE = re.compile(r"\s+")
_BOXED = "\\boxed{"
_GSM8K_MARK = "####"


class PromptSourceError(ValueError):
    """A prompt source cannot be loaded or written; the message is one line naming the problem."""


@dataclass(frozen=True)
class ProblemRecord:
    """One loaded problem: its text, its extracted reference answer, its split and source."""

    source: str
    split: str
    problem: str
    reference_answer: str | None
    row: int  # index of the row in the loaded dataset (after `limit`)


# -- reference answers --------------------------------------------------------------------------

def extract_reference(value: Any, style: str) -> str:
    """The reference answer held in one answer-column value, read in `style`.

    gsm8k: the text after the last `####`, stripped, commas removed; boxed: the content of the last
    `\\boxed{...}` (braces balanced); plain: the value as text, stripped. Raises ValueError when
    no answer can be extracted.
    """
    if value is None:
        raise ValueError("the answer is null")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"the answer is a {type(value).__name__}, not text")
    text = str(value)
    if style == "plain":
        answer = text.strip()
    elif style == "gsm8k":
        if _GSM8K_MARK not in text:
            raise ValueError("no '#### answer' marker")
        answer = text.rsplit(_GSM8K_MARK, 1)[1].strip().replace(",", "")
    elif style == "boxed":
        answer = last_boxed(text)
    else:
        raise ValueError(f"unknown reference style {style!r}")
    if not answer:
        raise ValueError("the extracted answer is empty")
    return answer


def last_boxed(text: str) -> str:
    """The content of the last `\\boxed{...}` in `text`, with nested and escaped braces kept.

    Raises ValueError when there is no `\\boxed{` or its braces never close.
    """
    start = text.rfind(_BOXED)
    if start < 0:
        raise ValueError("no \\boxed{...}")
    depth, index = 1, start + len(_BOXED)
    content_start = index
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2  # an escaped character (\{, \}, \\) never opens or closes a group
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[content_start:index].strip()
        index += 1
    raise ValueError("unbalanced braces in the last \\boxed{...}")


# -- loading ------------------------------------------------------------------------------------

def load_source(
    config: PromptSourceConfig,
    root: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> list[ProblemRecord]:
    """Load every problem of one source, with its reference answer and split.

    A relative `path` is read from `root` (default: the working directory). `cache_dir` is the
    datasets cache (default: datasets' own). Raises PromptSourceError, one line, for a missing
    file, malformed JSON, an unreachable hub, missing columns, an empty dataset, text that is not
    UTF-8, a row without a problem or an extractable reference, a problem longer than
    MAX_PROBLEM_CHARS, or an eval_fraction that leaves a split empty.
    """
    if config.path is not None:
        dataset = _load_local(config, Path(root) if root is not None else Path.cwd(), cache_dir)
    else:
        dataset = _load_hub(config, cache_dir)
    where = f"prompt source {config.name!r}"
    columns = list(dataset.column_names)
    for key, column in (("problem_column", config.problem_column),
                        ("answer_column", config.answer_column)):
        if column is not None and column not in columns:
            raise PromptSourceError(
                f"{where}: {key} {column!r} is not in the dataset (columns: {', '.join(columns)})")
    if len(dataset) == 0:
        raise PromptSourceError(f"{where}: the dataset is empty")
    if config.limit is not None and config.limit < len(dataset):
        dataset = dataset.select(range(config.limit))
    problems = _column_values(dataset, config.problem_column, where)
    answers = (_column_values(dataset, config.answer_column, where)
               if config.answer_column is not None else [None] * len(problems))
    loaded: list[tuple[str, str | None]] = []
    for row, (problem, answer) in enumerate(zip(problems, answers)):
        if not isinstance(problem, str) or not problem.strip():
            raise PromptSourceError(
                f"{where}: row {row}: problem column {config.problem_column!r} is "
                f"{'empty' if isinstance(problem, str) else repr(problem)}")
        if len(problem) > MAX_PROBLEM_CHARS:
            raise PromptSourceError(
                f"{where}: row {row}: problem column {config.problem_column!r} holds "
                f"{len(problem):,} characters, over the limit of {MAX_PROBLEM_CHARS:,}")
        reference = None
        if config.reference_style is not None:
            try:
                reference = extract_reference(answer, config.reference_style)
            except ValueError as error:
                raise PromptSourceError(
                    f"{where}: row {row}: cannot extract a reference answer from column "
                    f"{config.answer_column!r} with reference_style {config.reference_style!r}: "
                    f"{error}") from None
        loaded.append((problem.strip(), reference))
    splits = (assign_splits([p for p, _ in loaded], config.eval_fraction, config.seed, where)
              if config.eval_fraction is not None else [str(config.split)] * len(loaded))
    return [ProblemRecord(source=config.name, split=split, problem=problem,
                          reference_answer=reference, row=row)
            for row, ((problem, reference), split) in enumerate(zip(loaded, splits))]


def _column_values(dataset: Any, column: str, where: str) -> list[Any]:
    """The values of one dataset column; text that is not valid UTF-8 is a PromptSourceError
    naming the column and the first bad row (pyarrow keeps such bytes; reading them fails)."""
    try:
        return list(dataset[column])
    except UnicodeDecodeError as error:
        values = dataset.data.column(column)
        row = next((index for index in range(len(values)) if not _decodes(values[index])), None)
        at = f"row {row}: " if row is not None else ""
        raise PromptSourceError(f"{where}: {at}column {column!r} is not UTF-8 text "
                                f"({error.reason})") from None


def _decodes(scalar: Any) -> bool:
    try:
        scalar.as_py()
    except UnicodeDecodeError:
        return False
    return True


def assign_splits(problems: Sequence[str], eval_fraction: float, seed: int | None,
                  where: str = "prompt source") -> list[str]:
    """A deterministic train/eval split of `problems`: one split per problem, in order.

    Problems with the same normalised text always share a split. round(eval_fraction x distinct
    problems) of them go to eval, chosen by a seeded content hash (independent of row order).
    """
    groups = sorted({normalise_problem(p) for p in problems},
                    key=lambda text: ids.content_hash("split", seed, text))
    n_eval = round(eval_fraction * len(groups))
    if n_eval == 0 or n_eval == len(groups):
        raise PromptSourceError(
            f"{where}: eval_fraction {eval_fraction} of {len(groups)} distinct problem(s) leaves "
            f"the {'eval' if n_eval == 0 else 'train'} split empty")
    held_out = set(groups[:n_eval])
    return [EVAL if normalise_problem(p) in held_out else "train" for p in problems]


def _load_local(config: PromptSourceConfig, root: Path, cache_dir: Any) -> Any:
    where = f"prompt source {config.name!r}"
    path = Path(str(config.path)).expanduser()
    if not path.is_absolute():
        path = root / path
    files = _data_files(path, where)
    builder = BUILDERS[files[0].suffix.lower()]
    from datasets import load_dataset  # heavy import, only when loading

    try:
        with _quiet_datasets():
            return load_dataset(builder, data_files=[str(f) for f in files], split="train",
                                cache_dir=None if cache_dir is None else str(cache_dir))
    except Exception as error:  # noqa: BLE001 - datasets raises many types; each becomes one line
        raise PromptSourceError(f"{where}: {_diagnose(files, builder, error)}") from None


@contextmanager
def _quiet_datasets() -> Iterator[None]:
    """While loading: datasets' progress bars follow Flywheel's rule (shown only in a terminal,
    `tasks.runtime.progress`), and its own error log lines are silenced, because every failure is raised
    again as one PromptSourceError line (a failed command's stderr is that line alone)."""
    import datasets
    from datasets.utils import logging as datasets_logging

    bars = datasets.is_progress_bar_enabled()
    verbosity = datasets_logging.get_verbosity()
    if not progress_enabled():
        datasets.disable_progress_bars()
    datasets_logging.set_verbosity(datasets_logging.CRITICAL)
    try:
        yield
    finally:
        datasets_logging.set_verbosity(verbosity)
        if bars:
            datasets.enable_progress_bars()


def _data_files(path: Path, where: str) -> list[Path]:
    if not path.exists():
        raise PromptSourceError(f"{where}: file not found: {path}")
    if path.is_dir():
        files = sorted(p for p in path.iterdir()
                       if p.is_file() and not p.name.startswith(".")
                       and p.suffix.lower() in BUILDERS)
        if not files:
            raise PromptSourceError(
                f"{where}: folder {path} holds no {'/'.join(sorted(BUILDERS))} files")
    else:
        if path.suffix.lower() not in BUILDERS:
            raise PromptSourceError(
                f"{where}: {path}: unsupported extension {path.suffix!r} "
                f"(supported: {', '.join(sorted(BUILDERS))})")
        files = [path]
    builders = {BUILDERS[f.suffix.lower()] for f in files}
    if len(builders) > 1:
        raise PromptSourceError(f"{where}: folder {path} mixes json and parquet files")
    return files


def _diagnose(files: list[Path], builder: str, error: BaseException) -> str:
    """One line explaining why datasets could not load `files`."""
    if all(_is_blank(f) for f in files):
        return f"the dataset is empty ({', '.join(str(f) for f in files)})"
    if builder == "json":
        for file in files:
            problem = _json_problem(file)
            if problem:
                return f"malformed JSON in {file}: {problem}"
    reason = _deepest_message(error)
    return f"cannot read {', '.join(str(f) for f in files)}: {reason}"


def _is_blank(file: Path) -> bool:
    """Whether a data file holds no rows (a parquet file with 0 rows, a json file of whitespace)."""
    if BUILDERS[file.suffix.lower()] == "parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_metadata(file).num_rows == 0
        except (OSError, ValueError):  # unreadable: not known to be empty
            return False
    with open(file, "rb") as handle:
        while chunk := handle.read(1 << 16):
            if chunk.strip():
                return False
    return True


def _json_problem(file: Path) -> str | None:
    """Where a .json/.jsonl file stops being valid JSON ('line N: reason'), or None."""
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        return f"not UTF-8 text ({error.reason} at byte {error.start})"
    if text.lstrip().startswith("["):
        try:
            json.loads(text)
        except json.JSONDecodeError as error:
            return f"line {error.lineno}: {error.msg}"
        return None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            return f"line {number}: {error.msg}"
        if not isinstance(value, dict):
            return f"line {number}: expected a JSON object, got {type(value).__name__}"
    return None


def _deepest_message(error: BaseException) -> str:
    messages = []
    current: BaseException | None = error
    while current is not None and len(messages) < 10:
        text = " ".join(str(current).split())
        if text:
            messages.append(text)
        current = current.__cause__ or current.__context__
    return messages[-1] if messages else type(error).__name__


def _load_hub(config: PromptSourceConfig, cache_dir: Any) -> Any:
    from datasets import load_dataset  # heavy import, only when loading

    where = f"prompt source {config.name!r}: hub dataset {config.hub!r}"
    try:
        with _quiet_datasets():
            return load_dataset(str(config.hub), config.subset, split=config.hf_split,
                                cache_dir=None if cache_dir is None else str(cache_dir))
    except ConnectionError as error:
        raise PromptSourceError(
            f"{where}: the hub is unreachable and the dataset is not cached "
            f"({' '.join(str(error).split())})") from None
    except Exception as error:  # noqa: BLE001 - datasets raises many types; each becomes one line
        raise PromptSourceError(f"{where}: {_deepest_message(error)}") from None


# -- rows ---------------------------------------------------------------------------------------

def prompt_rows(records: Iterable[ProblemRecord], iteration: int = 0) -> tuple[list[dict], int]:
    """Prompts-table rows for `records` and the number of duplicate problems dropped.

    Records with the same (source, problem) collapse to the first one; two of them with
    different reference answers or splits are an error.
    """
    rows: dict[str, dict] = {}
    first_row: dict[str, int] = {}
    dropped = 0
    for record in records:
        key = ids.prompt_id(record.source, record.problem)
        row = {
            PROMPT_ID: key,
            ITERATION: int(iteration),
            SOURCE: record.source,
            SPLIT: record.split,
            PROBLEM: record.problem,
            REFERENCE: record.reference_answer,
            METADATA: ids.canonical_json({"row": record.row}),
        }
        if key in rows:
            _check_same(rows[key], row, f"rows {first_row[key]} and {record.row} of source "
                                         f"{record.source!r}")
            dropped += 1
            continue
        rows[key] = row
        first_row[key] = record.row
    if dropped:
        log.info("prompt rows: dropped %d duplicate problem(s)", dropped)
    return list(rows.values()), dropped


def demo_prompt_rows(splits: demo_task.DemoSplits, iteration: int = 0) -> list[dict]:
    """Prompts-table rows for the demo task's train and eval problems (never pretrain, never
    solutions): problem text and exact answer only."""
    rows = []
    for split, chains in (("train", splits.train), (EVAL, splits.eval)):
        for chain in chains:
            rows.append({
                PROMPT_ID: ids.prompt_id(demo_task.SOURCE, chain.problem),
                ITERATION: int(iteration),
                SOURCE: demo_task.SOURCE,
                SPLIT: split,
                PROBLEM: chain.problem,
                REFERENCE: str(chain.answer),
                METADATA: None,
            })
    report = find_overlap([r for r in rows if r[SPLIT] == "train"],
                          [r for r in rows if r[SPLIT] == EVAL])
    if report.total:
        raise PromptSourceError(f"demo splits overlap: {report.summary()}")
    return rows


def _check_same(first: dict, second: dict, what: str) -> None:
    for column in (SPLIT, REFERENCE):
        if first[column] != second[column]:
            raise PromptSourceError(
                f"{what} hold the same problem with different {column} "
                f"({first[column]!r} vs {second[column]!r}): {_short(first[PROBLEM])!r}")


# -- decontamination ----------------------------------------------------------------------------

def normalise_problem(text: str) -> str:
    """A problem's text for overlap checks: NFKC, lower-case, whitespace collapsed, and sentence
    punctuation (. , ; : ! ? quotes) and whitespace stripped from both ends."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = _WHITESPACE.sub(" ", text)
    return text.strip(string.whitespace + _END_PUNCTUATION)


@dataclass(frozen=True)
class OverlapReport:
    """Train rows that also appear in eval: counts, the train prompt_ids, a few examples."""

    train_rows: int
    eval_rows: int
    by_id: int  # train rows whose prompt_id is an eval prompt_id
    by_text: int  # other train rows whose normalised text is an eval problem's
    overlapping_ids: frozenset[str]
    examples: tuple[tuple[str, str], ...]  # (train problem, eval problem), at most EXAMPLES

    @property
    def total(self) -> int:
        """Train rows that overlap eval, by id or by text."""
        return self.by_id + self.by_text

    def summary(self) -> str:
        """One line: the counts and the first example."""
        text = (f"{self.total} of {self.train_rows} train row(s) overlap {self.eval_rows} eval "
                f"row(s) ({self.by_id} by prompt_id, {self.by_text} by normalised text)")
        if self.examples:
            train, held = self.examples[0]
            text += f", e.g. train {_short(train)!r} ~ eval {_short(held)!r}"
        return text


def find_overlap(train_rows: Sequence[dict], eval_rows: Sequence[dict]) -> OverlapReport:
    """Which train rows share a prompt_id or a normalised problem text with an eval row."""
    eval_ids = {row[PROMPT_ID]: row[PROBLEM] for row in eval_rows}
    eval_texts = {normalise_problem(row[PROBLEM]): row[PROBLEM] for row in eval_rows}
    by_id = by_text = 0
    overlapping: set[str] = set()
    examples: list[tuple[str, str]] = []
    for row in train_rows:
        if row[PROMPT_ID] in eval_ids:
            by_id += 1
            match = eval_ids[row[PROMPT_ID]]
        elif (text := normalise_problem(row[PROBLEM])) in eval_texts:
            by_text += 1
            match = eval_texts[text]
        else:
            continue
        overlapping.add(row[PROMPT_ID])
        if len(examples) < EXAMPLES:
            examples.append((row[PROBLEM], match))
    return OverlapReport(train_rows=len(train_rows), eval_rows=len(eval_rows), by_id=by_id,
                         by_text=by_text, overlapping_ids=frozenset(overlapping),
                         examples=tuple(examples))


def decontaminate(train_rows: Sequence[dict], eval_rows: Sequence[dict]
                  ) -> tuple[list[dict], OverlapReport]:
    """Train rows with every problem that also appears in eval removed (eval stays as it is),
    and the report of what was removed."""
    report = find_overlap(train_rows, eval_rows)
    kept = [row for row in train_rows if row[PROMPT_ID] not in report.overlapping_ids]
    if report.total:
        log.info("decontaminate: %s", report.summary())
    return kept, report


# -- writing ------------------------------------------------------------------------------------

def write_prompts(lake: Lake, rows: Sequence[dict], iteration: int = 0) -> dict[str, int]:
    """Add `rows` to the prompts table at `iteration`, skipping prompt_ids already there.

    Refuses, before writing anything, a row whose problem (prompt_id or normalised text) is
    already in the lake or in `rows` under the other side of the eval / non-eval line, and a
    prompt_id that comes back with a different split or reference answer. Returns counts:
    rows, duplicates_dropped, skipped_existing, written, train, eval.
    """
    counts = {"rows": len(rows), "duplicates_dropped": 0, "skipped_existing": 0, "written": 0,
              "train": 0, EVAL: 0}
    if not rows:
        return counts
    _SPEC.from_rows(list(rows))  # columns and types
    for row in rows:
        if row[SPLIT] not in SPLITS:
            raise PromptSourceError(
                f"prompt {row[PROMPT_ID]}: unknown split {row[SPLIT]!r} (splits: {', '.join(SPLITS)})")
        if row[ITERATION] != iteration:
            raise PromptSourceError(
                f"prompt {row[PROMPT_ID]}: iteration {row[ITERATION]}, expected {iteration}")
        if row[PROMPT_ID] != ids.prompt_id(row[SOURCE], row[PROBLEM]):
            raise PromptSourceError(
                f"prompt {row[PROMPT_ID]}: prompt_id is not hash(source, problem) "
                f"for {_short(row[PROBLEM])!r}")
    unique: dict[str, dict] = {}
    for row in rows:
        if row[PROMPT_ID] in unique:
            _check_same(unique[row[PROMPT_ID]], row, f"two rows for prompt {row[PROMPT_ID]}")
            counts["duplicates_dropped"] += 1
        else:
            unique[row[PROMPT_ID]] = row
    batch = list(unique.values())
    _refuse_overlap(batch, "in the rows being written")

    existing = lake.read(TABLE, columns=[PROMPT_ID, SPLIT, PROBLEM, REFERENCE]).to_pylist()
    existing_by_id = {row[PROMPT_ID]: row for row in existing}
    new = []
    for row in batch:
        old = existing_by_id.get(row[PROMPT_ID])
        if old is None:
            new.append(row)
            continue
        _check_same(old, row, f"prompt {row[PROMPT_ID]} in the lake and in the new rows")
        counts["skipped_existing"] += 1
    _refuse_overlap(new, "in the lake", against=existing)
    if new:
        lake.write(TABLE, new, iteration)
    counts["written"] = len(new)
    split_counts = Counter(row[SPLIT] for row in new)
    counts["train"], counts[EVAL] = split_counts["train"], split_counts[EVAL]
    return counts


def _refuse_overlap(rows: list[dict], where: str, against: list[dict] | None = None) -> None:
    """Raise when a non-eval row of `rows` matches an eval row of `against` (default: `rows`),
    or an eval row of `rows` matches a non-eval row of `against`."""
    others = rows if against is None else against
    pairs = (("train", [r for r in rows if r[SPLIT] != EVAL], [r for r in others if r[SPLIT] == EVAL]),
             (EVAL, [r for r in rows if r[SPLIT] == EVAL], [r for r in others if r[SPLIT] != EVAL]))
    for side, new_rows, other_rows in pairs:
        if not new_rows or not other_rows:
            continue
        report = find_overlap(new_rows, other_rows)
        if report.total:
            other = "eval" if side == "train" else "train"
            new_problem, old_problem = report.examples[0]
            raise PromptSourceError(
                f"refusing to write: {report.total} {side} problem(s) already {where} as {other} "
                f"({report.by_id} by prompt_id, {report.by_text} by normalised text), "
                f"e.g. {_short(new_problem)!r} ~ {_short(old_problem)!r}")


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_prompt_sources(lake: Lake, configs: Sequence[PromptSourceConfig],
                        root: str | os.PathLike[str] | None = None) -> dict[str, int]:
    """Load every source, drop train problems that also appear in eval (reported), write the rest.

    Nothing is written when any source fails to load.
    """
    rows: list[dict] = []
    for config in configs:
        records = load_source(config, root=root)
        source_rows, _ = prompt_rows(records)
        rows += source_rows
    train = [r for r in rows if r["split"] != "eval"]
    evals = [r for r in rows if r["split"] == "eval"]
    clean, report = decontaminate(train, evals)
    counts = write_prompts(lake, clean + evals)
    counts["decontaminated"] = report.total
    return counts


def split_prompts(lake: Lake, split: str, limit: int | None = None) -> list[dict]:
    """Prompts of one split (prompt_id, problem, reference_answer, split) in prompt_id order, the
    first `limit` of them; ValueError when the lake has none."""
    rows = connect(lake).execute(
        "SELECT prompt_id, problem, reference_answer, split FROM prompts WHERE split = ? ORDER BY prompt_id",
        [split]).to_arrow_table().to_pylist()
    if not rows:
        raise ValueError(f"no {split} prompts in the lake at {lake.root}")
    return rows[:limit] if limit else rows


def write_demo_prompts(lake: Lake, task: DemoTaskConfig) -> dict:
    """Write the demo task's train and eval prompts to the lake (idempotent)."""
    chain_cfg = demo_task.ChainConfig(task.min_steps, task.max_steps, task.min_operand, task.max_operand)
    splits = demo_task.make_splits(task.n_pretrain, task.n_train, task.n_eval, task.seed, chain_cfg)
    return write_prompts(lake, demo_prompt_rows(splits))
