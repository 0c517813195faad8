"""Export kept samples as training datasets: SFT (prompt/completion) and DPO (chosen/rejected).

Each export is written twice under `out_dir`: a Hugging Face dataset folder (`save_to_disk`,
read back with `datasets.load_from_disk`) and a Parquet file next to it with the same rows.
Rewriting an export replaces the previous one.
"""
from __future__ import annotations

import os
import shutil
import string
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.policy import ScoreRef
from tasks.lake.ids import canonical_json
from tasks.lake.sql import connect
from tasks.lake.store import Lake
from tasks.selection.select import PROMPTS_ONE_ROW_SQL, candidate_score, check_prompts, scored_candidates

DEFAULT_PROMPT_TEMPLATE = "Q: {problem}\n"
SFT_NAME = "sft"
DPO_NAME = "dpo"

SFT_SCHEMA = pa.schema([
    pa.field("prompt", pa.string()),
    pa.field("completion", pa.string()),
    pa.field("weight", pa.float64()),
    pa.field("candidate_id", pa.string()),
    pa.field("prompt_id", pa.string()),
])
DPO_SCHEMA = pa.schema([
    pa.field("prompt", pa.string()),
    pa.field("chosen", pa.string()),
    pa.field("rejected", pa.string()),
    pa.field("chosen_id", pa.string()),
    pa.field("rejected_id", pa.string()),
    pa.field("chosen_score", pa.float64()),
    pa.field("rejected_score", pa.float64()),
    pa.field("prompt_id", pa.string()),
])


def check_template(template: str) -> str:
    """Return `template` when its only placeholder is `{problem}`, else raise ValueError."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as error:
        raise ValueError(f"prompt template {template!r} does not parse: {error}") from None
    extra = sorted(set(fields) - {"problem"})
    if extra:
        raise ValueError(f"prompt template has unknown placeholder {{{extra[0]}}}; "
                         "only {problem} is filled")
    if "problem" not in fields:
        raise ValueError(f"prompt template {template!r} has no {{problem}} placeholder")
    return template


def run_policy_hash(lake: Lake, run_id: str, iteration: int) -> str:
    """The hash of the selection policy a run finetuned on in `iteration`: read from the models row
    of the checkpoint that round made (`<models_dir>/<run_id>/iter-<iteration + 1>`)."""
    it = int(iteration)
    rows = connect(lake).execute(
        "SELECT DISTINCT selection_hash FROM models WHERE iteration = ? AND path LIKE ? AND selection_hash IS NOT NULL",
        [it + 1, f"%/{run_id}/iter-{it + 1}"]).fetchall()
    if not rows:
        raise ValueError(f"run {run_id!r} has no model finetuned on iteration {it}'s selection in the lake "
                         f"at {lake.root} (finish that round first, or check the run id)")
    if len(rows) > 1:
        raise ValueError(f"run {run_id!r} finetuned iteration {it} on {len(rows)} different selections: "
                         f"{', '.join(sorted(r[0] for r in rows))}")
    return rows[0][0]

def export_sft(lake: Lake, iteration: int, policy_hash: str, out_dir: str | os.PathLike[str],
               prompt_template: str = DEFAULT_PROMPT_TEMPLATE) -> Path:
    """Write the samples a policy kept as a prompt/completion dataset; return its folder.

    Columns: prompt (the template filled with the problem), completion (the candidate's text),
    weight, candidate_id, prompt_id; rows ordered by prompt_id then rank. The folder is
    `out_dir/sft` and the same rows go to `out_dir/sft.parquet`. No kept rows is an error.
    """
    check_template(prompt_template)
    con = connect(lake)
    check_prompts(con)
    it = int(iteration)
    counts = con.execute("""SELECT count(*), count(DISTINCT candidate_id) FROM selections
        WHERE iteration = ? AND policy_hash = ?""", [it, policy_hash]).fetchone()
    if not counts[0]:
        raise ValueError(f"no selections for policy hash {policy_hash} in iteration {it}")
    if counts[0] != counts[1]:
        raise ValueError(
            f"policy hash {policy_hash} selects some candidate twice in iteration {it}")
    rows = con.execute(f"""
        SELECT s.candidate_id, s.prompt_id, s.weight, c.text, p.problem, c.candidate_id IS NULL,
               p.prompt_id IS NULL
        FROM selections s
        LEFT JOIN candidates c ON c.candidate_id = s.candidate_id
        LEFT JOIN ({PROMPTS_ONE_ROW_SQL}) p ON p.prompt_id = s.prompt_id
        WHERE s.iteration = ? AND s.policy_hash = ?
        ORDER BY s.prompt_id, s.rank, s.candidate_id""", [it, policy_hash]).fetchall()
    records = []
    for cid, pid, weight, text, problem, no_candidate, no_prompt in rows:
        if no_candidate:
            raise ValueError(f"selected candidate {cid} is not in the candidates table")
        if no_prompt:
            raise ValueError(f"selected candidate {cid}: prompt {pid} is not in the prompts table")
        records.append({"prompt": prompt_template.format(problem=problem), "completion": text,
                        "weight": weight, "candidate_id": cid, "prompt_id": pid})
    table = pa.Table.from_pylist(records, schema=SFT_SCHEMA)
    meta = {"iteration": str(it), "policy_hash": policy_hash, "prompt_template": prompt_template}
    return _write(table, Path(out_dir), SFT_NAME, meta)


def export_dpo_pairs(lake: Lake, iteration: int, score_ref: ScoreRef | Mapping[str, Any],
                     out_dir: str | os.PathLike[str],
                     prompt_template: str = DEFAULT_PROMPT_TEMPLATE) -> Path:
    """Write one preference pair per prompt (best vs worst candidate by a score); return its folder.

    Best is the highest score, worst the lowest, each tie going to the lower sample_index;
    candidates with a null score are left out, and prompts whose best and worst scores are equal
    (or that have fewer than two scored candidates) give no pair. The folder is `out_dir/dpo` and
    the same rows go to `out_dir/dpo.parquet`. No pair at all is an error.
    """
    ref = score_ref if isinstance(score_ref, ScoreRef) else ScoreRef.model_validate(dict(score_ref))
    check_template(prompt_template)
    it = int(iteration)
    frame = scored_candidates(lake, it, [ref.scorer])
    if frame.num_rows == 0:
        raise ValueError(f"no candidates in iteration {it} to pair")
    problems = dict(connect(lake).execute(
        f"SELECT prompt_id, problem FROM ({PROMPTS_ONE_ROW_SQL})").fetchall())
    where = f"DPO export by {ref.label()}"
    by_prompt: dict[str, list[tuple[float, int, str, str]]] = {}
    for row in frame.to_pylist():
        score = candidate_score(row, ref, where)
        if score is not None:
            by_prompt.setdefault(row["prompt_id"], []).append(
                (score, row["sample_index"], row["candidate_id"], row["text"]))
    records = []
    for pid in sorted(by_prompt):
        scored = by_prompt[pid]
        best = min(scored, key=lambda s: (-s[0], s[1], s[2]))
        worst = min(scored, key=lambda s: (s[0], s[1], s[2]))
        if best[0] == worst[0]:
            continue
        records.append({
            "prompt": prompt_template.format(problem=problems[pid]),
            "chosen": best[3], "rejected": worst[3], "chosen_id": best[2],
            "rejected_id": worst[2], "chosen_score": best[0], "rejected_score": worst[0],
            "prompt_id": pid,
        })
    if not records:
        raise ValueError(f"no DPO pairs in iteration {it}: every prompt's best and worst "
                         f"candidates tie on {ref.label()}")
    table = pa.Table.from_pylist(records, schema=DPO_SCHEMA)
    meta = {"iteration": str(it), "score_ref": canonical_json(ref.model_dump(mode="json")),
            "prompt_template": prompt_template}
    return _write(table, Path(out_dir), DPO_NAME, meta)


def _write(table: pa.Table, out_dir: Path, name: str, meta: dict[str, str]) -> Path:
    """Save `table` as out_dir/name (HF dataset folder) and out_dir/name.parquet, replacing both."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / name
    if target.exists() and not (target / "state.json").is_file():
        raise ValueError(f"{target} exists and is not a saved dataset; refusing to replace it")
    tag = uuid.uuid4().hex[:8]
    staging = out_dir / f".{name}.tmp-{tag}"
    try:
        datasets.Dataset(table).save_to_disk(str(staging))
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    parquet = out_dir / f"{name}.parquet"
    temp = out_dir / f".{name}.parquet.tmp-{tag}"
    pq.write_table(table.replace_schema_metadata({f"flywheel.{k}": v for k, v in meta.items()}),
                   temp)
    os.replace(temp, parquet)
    return target
