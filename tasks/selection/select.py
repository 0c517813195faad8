"""Rejection-sampling selection: apply a declarative policy to one iteration's scored candidates.

`scored_candidates` builds one wide row per candidate (its prompt's reference and every scorer's
verdict, joined by id in one DuckDB query); `apply_policy` runs the policy's steps over those rows
and returns selection rows; `select` does both against the lake and writes the kept rows to the
selections table, one shard per (iteration, policy hash), so a rerun replaces instead of adding.

Step semantics, shared by every step (see schemas/policy.py for the configs):
- a candidate with no score row for a scorer a step reads is an error, as is a NaN score;
- a null score (unparseable, timeout, no step scores) never passes a filter and is never ranked;
- ranks are 0-based within a prompt, best first; order is sample_index until a ranking step
  (best_of_n, top_k) reorders by score, ties going to the lower sample_index;
- pass_rate_band and majority_pseudo_label look at all of a prompt's candidates, not just the
  ones that survived earlier steps; prl_weights sets weights over the final kept set.
- any_of applies each of its steps to the same survivors and keeps the union, in the order the
  survivors had.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet  # noqa: F401  (pa.parquet)

from schemas import table_spec
from schemas.policy import (
    AnyOf, BestOfN, Dedup, KeepAllStepsCorrect, KeepCorrect, MajorityPseudoLabel, MaxPerPrompt,
    PassRateBand, PrlWeights, PrmMinThreshold, ScoreRef, SelectionPolicy, StepsAbove, Subsample,
    Threshold, ThresholdOrTopK, TopK,
    canonical,
)
from tasks.lake.ids import ID_HEX_CHARS, canonical_json, content_hash
from tasks.lake.ids import policy_hash as policy_content_hash
from tasks.lake.sql import connect
from tasks.lake.store import Lake
from tasks.scoring.aggregate import aggregate_steps
from tasks.scoring.vote import majority_answer, normalize_answer
from tasks.selection.best_of_n import orm_vote_weight

SEP = "__"
SCORE_FIELDS = {  # frame suffix -> scores column
    "version": "scorer_version",
    "value": "value",
    "label": "label",
    "answer": "extracted_answer",
    "steps": "step_scores",
}
BASE_COLUMNS = ("candidate_id", "prompt_id", "iteration", "sample_index")
SELECTIONS = table_spec("selections")
Row = dict[str, Any]


def policy_hash(policy: SelectionPolicy) -> str:
    """The policy's content id: equal configs hash equal, whatever their key order or defaults."""
    return policy_content_hash(canonical(policy))


def score_column(scorer: str, field: str) -> str:
    """The frame column holding `field` (version, value, label, answer, steps) of `scorer`."""
    if field not in SCORE_FIELDS:
        raise ValueError(f"unknown score field {field!r} (fields: {', '.join(SCORE_FIELDS)})")
    return f"{scorer}{SEP}{field}"


# -- the frame ---------------------------------------------------------------------------------
def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


PROMPTS_ONE_ROW_SQL = """
    SELECT prompt_id, any_value(problem) AS problem, any_value(reference_answer) AS reference_answer,
           any_value(split) AS split
    FROM prompts GROUP BY prompt_id"""


def check_prompts(con: Any) -> None:
    """Raise ValueError when one prompt_id has rows that disagree on problem or reference."""
    bad = con.execute("""
        SELECT prompt_id FROM prompts GROUP BY prompt_id
        HAVING count(DISTINCT problem) > 1 OR count(DISTINCT reference_answer) > 1
            OR (count(reference_answer) > 0 AND count(reference_answer) < count(*))
        ORDER BY prompt_id LIMIT 1""").fetchone()
    if bad:
        raise ValueError(f"prompt {bad[0]} has rows that disagree on problem or reference_answer")


def scored_candidates(lake: Lake, iteration: int, scorers: Sequence[str] | None = None,
                      split: str | None = "train", model_id: str | None = None,
                      sampling_hash: str | None = None) -> pa.Table:
    """One row per candidate of `iteration` (of prompts in `split`; None: every split) with its
    prompt's reference and its scores. Evaluation candidates never reach selection by default.

    Columns: candidate_id, prompt_id, iteration, sample_index, text, steps, reference_answer, and
    per scorer s (all scorers with rows for these candidates, or `scorers`): s__version,
    s__value, s__label, s__answer, s__steps (null when the candidate has no row for s).
    Rows are ordered by prompt_id, sample_index. Duplicate candidates or score rows, candidates
    whose prompt is missing, and requested scorers with no rows are errors.
    """
    # only one round's candidates (one model and sampling config) when runs share a lake
    con = connect(lake, filters={"candidates": candidate_filter(model_id, sampling_hash)})
    it = int(iteration)
    dup = con.execute("""SELECT candidate_id FROM candidates WHERE iteration = ?
        GROUP BY candidate_id HAVING count(*) > 1 ORDER BY 1 LIMIT 1""", [it]).fetchone()
    if dup:
        raise ValueError(f"candidate {dup[0]} appears more than once in iteration {it}")
    check_prompts(con)
    orphan = con.execute("""SELECT c.candidate_id, c.prompt_id FROM candidates c
        ANTI JOIN prompts p ON p.prompt_id = c.prompt_id WHERE c.iteration = ?
        ORDER BY 1 LIMIT 1""", [it]).fetchone()
    if orphan:
        raise ValueError(f"candidate {orphan[0]}: prompt {orphan[1]} is not in the prompts table")
    ours = "SELECT candidate_id FROM candidates WHERE iteration = ?"
    dup = con.execute(f"""SELECT candidate_id, scorer FROM scores WHERE candidate_id IN ({ours})
        GROUP BY candidate_id, scorer HAVING count(*) > 1 ORDER BY 1, 2 LIMIT 1""", [it]).fetchone()
    if dup:
        raise ValueError(f"candidate {dup[0]} has more than one {dup[1]!r} score row")
    present = [r[0] for r in con.execute(
        f"SELECT DISTINCT scorer FROM scores WHERE candidate_id IN ({ours}) ORDER BY 1",
        [it]).fetchall()]
    if scorers is None:
        wanted = present
    else:
        wanted = list(dict.fromkeys(scorers))
        for name in wanted:
            if name not in present:
                raise ValueError(f"scorer {name!r} has no scores for iteration {it} "
                                 f"(present: {', '.join(present) or 'none'})")
    columns = ["c.candidate_id", "c.prompt_id", "c.iteration", "c.sample_index", "c.text",
               "c.steps", "p.reference_answer"]
    joins, params = [], []
    for n, name in enumerate(wanted):
        for suffix, source in SCORE_FIELDS.items():
            columns.append(f"s{n}.{source} AS {_ident(score_column(name, suffix))}")
        joins.append(f"LEFT JOIN scores s{n} ON s{n}.candidate_id = c.candidate_id "
                     f"AND s{n}.scorer = ?")
        params.append(name)
    sql = (f"SELECT {', '.join(columns)} FROM candidates c "
           f"JOIN ({PROMPTS_ONE_ROW_SQL}) p ON p.prompt_id = c.prompt_id "
           f"{' '.join(joins)} WHERE c.iteration = ? {'' if split is None else 'AND p.split = ?'} "
           f"ORDER BY c.prompt_id, c.sample_index, c.candidate_id")
    return con.execute(sql, [*params, it, *([] if split is None else [split])]).to_arrow_table()


# -- reading scores off a row ------------------------------------------------------------------
@dataclass
class _Context:
    """The whole frame, grouped by prompt, and the step being applied (for error messages)."""

    columns: set[str]
    by_prompt: dict[str, list[Row]]  # every candidate of a prompt, by (sample_index, id)
    where: str = ""

    def need(self, scorer: str, field: str) -> str:
        """The column for (scorer, field), or ValueError naming the scorer and the step."""
        column = score_column(scorer, field)
        if column not in self.columns:
            scorers = sorted({c.split(SEP)[0] for c in self.columns if SEP in c})
            if not any(c.startswith(f"{scorer}{SEP}") for c in self.columns):
                raise ValueError(f"{self.where} needs scorer {scorer!r}, which is absent "
                                 f"(scorers present: {', '.join(scorers) or 'none'})")
            raise ValueError(f"{self.where} needs column {column!r}, which is absent")
        return column

    def field(self, row: Row, scorer: str, field: str) -> Any:
        """One score field of a candidate; ValueError when the candidate has no row for scorer."""
        column = self.need(scorer, field)
        version = score_column(scorer, "version")
        if version in row and row[version] is None:
            raise ValueError(f"{self.where}: candidate {row['candidate_id']} has no "
                             f"{scorer!r} score")
        return row[column]

    def number(self, row: Row, ref: ScoreRef) -> float | None:
        """The candidate's score under `ref` (None when null); NaN is a ValueError naming it."""
        cid = row["candidate_id"]
        if ref.field == "value":
            value = self.field(row, ref.scorer, "value")
            if value is None:
                return None
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"{self.where}: candidate {cid} has a non-finite "
                                 f"{ref.scorer!r} value ({value})")
            return value
        steps = self.field(row, ref.scorer, "steps")
        try:
            return aggregate_steps(steps, ref.aggregate or "")
        except ValueError as error:
            raise ValueError(
                f"{self.where}: candidate {cid} {ref.scorer!r} steps: {error}") from None

    def check(self, ref: ScoreRef) -> None:
        """Fail fast when the frame lacks the column `ref` reads."""
        self.need(ref.scorer, ref.field)


def candidate_score(row: Mapping[str, Any], ref: ScoreRef, where: str = "score") -> float | None:
    """One frame row's score under `ref` (None when null); a missing column, a missing score row
    or a NaN is a ValueError that starts with `where`."""
    return _Context(columns=set(row), by_prompt={}, where=where).number(dict(row), ref)


Kept = dict[str, list[Row]]  # prompt_id -> surviving candidates in rank order


def _order_key(row: Row) -> tuple[int, str]:
    return (row["sample_index"], row["candidate_id"])


def _filter(kept: Kept, keep: Callable[[Row], bool]) -> Kept:
    return {p: [r for r in rows if keep(r)] for p, rows in kept.items()}


def _rank(kept: Kept, ctx: _Context, ref: ScoreRef, limit: int) -> Kept:
    """Reorder each prompt's survivors by score, best first, keeping `limit`; nulls are dropped."""
    out = {}
    for prompt, rows in kept.items():
        scored = [(ctx.number(r, ref), r) for r in rows]
        scored = [(s, r) for s, r in scored if s is not None]
        scored.sort(key=lambda sr: (-sr[0], *_order_key(sr[1])))
        out[prompt] = [r for _, r in scored[:limit]]
    return out


# -- steps -------------------------------------------------------------------------------------
def _keep_correct(step: KeepCorrect, ctx: _Context, kept: Kept) -> Kept:
    ctx.need(step.scorer, "label")
    return _filter(kept, lambda r: ctx.field(r, step.scorer, "label") == "correct")


def _keep_all_steps_correct(step: KeepAllStepsCorrect, ctx: _Context, kept: Kept) -> Kept:
    ref = ScoreRef(scorer=step.scorer, field="value")
    ctx.check(ref)
    return _filter(kept, lambda r: ctx.number(r, ref) == 1.0)


def _at_least(ctx: _Context, kept: Kept, ref: ScoreRef, minimum: float) -> Kept:
    ctx.check(ref)

    def keep(row: Row) -> bool:
        score = ctx.number(row, ref)
        return score is not None and score >= minimum

    return _filter(kept, keep)


def _threshold(step: Threshold, ctx: _Context, kept: Kept) -> Kept:
    return _at_least(ctx, kept, step.score, step.min)


def _union(kept: Kept, parts: Sequence[Kept]) -> Kept:
    """The candidates of `kept` that any of `parts` holds, in `kept`'s order."""
    chosen = {r["candidate_id"] for part in parts for rows in part.values() for r in rows}
    return _filter(kept, lambda r: r["candidate_id"] in chosen)


def _threshold_or_top_k(step: ThresholdOrTopK, ctx: _Context, kept: Kept) -> Kept:
    return _union(kept, [_at_least(ctx, kept, step.score, step.min), _rank(kept, ctx, step.score, step.k)])


def _prm_min_threshold(step: PrmMinThreshold, ctx: _Context, kept: Kept) -> Kept:
    return _at_least(ctx, kept, ScoreRef(scorer=step.scorer, field="steps", aggregate="min"),
                     step.min)


def _steps_above(step: StepsAbove, ctx: _Context, kept: Kept) -> Kept:
    column, version = ctx.need(step.scorer, "steps"), score_column(step.scorer, "version")

    def keep(row: Row) -> bool:
        if row.get(version) is None:
            return False  # not labelled
        steps = row[column]
        if steps and not all(math.isfinite(s) for s in steps):
            raise ValueError(f"{ctx.where}: candidate {row['candidate_id']} has a non-finite {step.scorer!r} step")
        return bool(steps) and min(steps) > step.above

    return _filter(kept, keep)


def _best_of_n(step: BestOfN, ctx: _Context, kept: Kept) -> Kept:
    ctx.check(step.score)
    return _rank(kept, ctx, step.score, 1)


def _top_k(step: TopK, ctx: _Context, kept: Kept) -> Kept:
    ctx.check(step.score)
    return _rank(kept, ctx, step.score, step.k)


def _vote_weight(score: float | None) -> float | None:
    """A sample's vote from its weight score: best-of-N's bounded weight (the sigmoid), None: no vote."""
    return None if score is None else orm_vote_weight(score)


def _majority_pseudo_label(step: MajorityPseudoLabel, ctx: _Context, kept: Kept) -> Kept:
    ctx.need(step.scorer, "answer")
    if step.weight is not None:
        ctx.check(step.weight)
    if step.referenced != "vote" and "reference_answer" not in ctx.columns:
        raise ValueError(f"{ctx.where} needs column 'reference_answer', which is absent")
    out = {}
    for prompt, rows in kept.items():
        everyone = ctx.by_prompt[prompt]
        if not rows:
            out[prompt] = rows
            continue
        if everyone[0]["reference_answer"] is not None and step.referenced != "vote":
            out[prompt] = rows if step.referenced == "pass" else []
            continue
        answers = [ctx.field(r, step.scorer, "answer") for r in everyone]
        weights = None if step.weight is None else [_vote_weight(ctx.number(r, step.weight))
                                                    for r in everyone]
        try:
            winner = majority_answer(answers, weights)
        except ValueError as error:
            raise ValueError(f"{ctx.where}: prompt {prompt}: {error}") from None
        out[prompt] = [] if winner is None else [
            r for r in rows
            if (a := ctx.field(r, step.scorer, "answer")) is not None
            and normalize_answer(a) == winner
        ]
    return out


def _pass_rate_band(step: PassRateBand, ctx: _Context, kept: Kept) -> Kept:
    ctx.need(step.scorer, "label")
    out = {}
    for prompt, rows in kept.items():
        everyone = ctx.by_prompt[prompt]
        if not rows:
            out[prompt] = rows
            continue
        solved = sum(ctx.field(r, step.scorer, "label") == "correct" for r in everyone)
        rate = solved / len(everyone)
        out[prompt] = [] if rate <= step.low or rate >= step.high else rows
    return out


def _dedup(step: Dedup, ctx: _Context, kept: Kept) -> Kept:
    if "text" not in ctx.columns:
        raise ValueError(f"{ctx.where} needs column 'text', which is absent")

    def key(text: str) -> str:
        return text if step.mode == "exact" else " ".join(text.split()).lower()

    out = {}
    for prompt, rows in kept.items():
        first: dict[str, str] = {}
        for row in sorted(rows, key=_order_key):
            first.setdefault(key(row["text"]), row["candidate_id"])
        winners = set(first.values())
        out[prompt] = [r for r in rows if r["candidate_id"] in winners]
    return out


def _max_per_prompt(step: MaxPerPrompt, ctx: _Context, kept: Kept) -> Kept:
    return {p: rows[: step.m] for p, rows in kept.items()}


def _subsample(step: Subsample, ctx: _Context, kept: Kept) -> Kept:
    span = 16 ** ID_HEX_CHARS  # a content hash read as a number falls in [0, span)

    def keep(row: Row) -> bool:
        return int(content_hash("subsample", step.seed, row["candidate_id"]), 16) < step.share * span

    return _filter(kept, keep)


def _any_of(step: AnyOf, ctx: _Context, kept: Kept) -> Kept:
    where, parts = ctx.where, []
    for index, branch in enumerate(step.steps):
        ctx.where = f"{where} branch {index} ({branch.kind})"
        parts.append(STEPS[branch.kind](branch, ctx, kept))
    ctx.where = where
    return _union(kept, parts)


def _prl_weights(step: PrlWeights, ctx: _Context, kept: Kept) -> Kept:
    ctx.check(step.score)  # weights are set once the final kept set is known
    return kept


STEPS: dict[str, Callable[[Any, _Context, Kept], Kept]] = {
    "keep_correct": _keep_correct,
    "keep_all_steps_correct": _keep_all_steps_correct,
    "threshold": _threshold,
    "threshold_or_top_k": _threshold_or_top_k,
    "prm_min_threshold": _prm_min_threshold,
    "steps_above": _steps_above,
    "best_of_n": _best_of_n,
    "top_k": _top_k,
    "majority_pseudo_label": _majority_pseudo_label,
    "pass_rate_band": _pass_rate_band,
    "dedup": _dedup,
    "max_per_prompt": _max_per_prompt,
    "subsample": _subsample,
    "any_of": _any_of,
    "prl_weights": _prl_weights,
}


def _weights(step: PrlWeights | None, ctx: _Context, kept: Kept) -> dict[str, float]:
    """candidate_id -> sample weight (1.0 without a prl_weights step)."""
    rows = [r for rs in kept.values() for r in rs]
    if step is None:
        return {r["candidate_id"]: 1.0 for r in rows}
    raw: dict[str, float] = {}
    for row in rows:
        value = ctx.number(row, step.score)
        if value is None:
            raise ValueError(f"{ctx.where}: candidate {row['candidate_id']} has no "
                             f"{step.score.label()} score to weight by")
        if step.clip_min is not None:
            value = max(value, step.clip_min)
        if step.clip_max is not None:
            value = min(value, step.clip_max)
        raw[row["candidate_id"]] = value
    if step.normalise == "none" or not raw:
        return raw
    groups = [rs for rs in kept.values() if rs] if step.normalise == "prompt_mean" else [rows]
    out = {}
    for group in groups:
        mean = sum(raw[r["candidate_id"]] for r in group) / len(group)
        if not mean > 0:
            scope = ("kept set" if step.normalise == "mean"
                     else f"prompt {group[0]['prompt_id']}")
            raise ValueError(f"{ctx.where}: cannot normalise weights, the {scope} mean weight is "
                             f"{mean} (clip_min >= 0 with positive scores avoids this)")
        out.update({r["candidate_id"]: raw[r["candidate_id"]] / mean for r in group})
    return out


def _rows_of(frame: pa.Table | Sequence[Mapping[str, Any]] | Any) -> tuple[list[Row], set[str]]:
    if isinstance(frame, pa.Table):
        return frame.to_pylist(), set(frame.column_names)
    if hasattr(frame, "to_dict") and hasattr(frame, "columns"):  # a pandas DataFrame
        table = pa.Table.from_pandas(frame, preserve_index=False)
        return table.to_pylist(), set(table.column_names)
    rows = [dict(r) for r in frame]
    columns = set(rows[0]) if rows else set(BASE_COLUMNS)
    for row in rows:
        if set(row) != columns:
            raise ValueError(f"frame rows disagree on columns: {sorted(set(row) ^ columns)}")
    return rows, columns


def apply_policy(frame: pa.Table | Sequence[Mapping[str, Any]],
                 policy: SelectionPolicy) -> list[Row]:
    """The selection rows (schemas/selections.py columns) that `policy` keeps from `frame`.

    `frame` is what `scored_candidates` returns (an Arrow table, a pandas frame or a list of row
    dicts with those columns). Rows come ordered by prompt_id then rank.
    """
    rows, columns = _rows_of(frame)
    for column in BASE_COLUMNS:
        if column not in columns:
            raise ValueError(f"frame has no column {column!r}")
    seen: set[str] = set()
    by_prompt: dict[str, list[Row]] = {}
    for row in rows:
        cid = row["candidate_id"]
        if cid in seen:
            raise ValueError(f"candidate {cid} appears more than once in the frame")
        seen.add(cid)
        by_prompt.setdefault(row["prompt_id"], []).append(row)
    for prompt_rows in by_prompt.values():
        prompt_rows.sort(key=_order_key)
    ctx = _Context(columns=columns, by_prompt=by_prompt)
    kept: Kept = {p: list(rs) for p, rs in sorted(by_prompt.items())}
    weighting: PrlWeights | None = None
    weight_where = ""
    for index, step in enumerate(policy.steps):
        ctx.where = f"policy {policy.name!r} step {index} ({step.kind})"
        kept = STEPS[step.kind](step, ctx, kept)
        if isinstance(step, PrlWeights):
            weighting, weight_where = step, ctx.where
    ctx.where = weight_where
    weights = _weights(weighting, ctx, kept)
    digest = policy_hash(policy)
    return [
        {
            "candidate_id": row["candidate_id"],
            "prompt_id": prompt,
            "iteration": int(row["iteration"]),
            "policy_name": policy.name,
            "policy_hash": digest,
            "rank": rank,
            "weight": float(weights[row["candidate_id"]]),
        }
        for prompt, prompt_rows in kept.items()
        for rank, row in enumerate(prompt_rows)
    ]


# -- against the lake --------------------------------------------------------------------------
@dataclass(frozen=True)
class SelectionResult:
    """What one `select` call did: counts, and the shard it wrote (None when nothing was kept)."""

    iteration: int
    policy_name: str
    policy_hash: str
    candidates: int
    prompts: int
    kept: int
    prompts_kept: int
    path: Path | None


def selection_shard(policy: SelectionPolicy, candidates: dict[str, str] | None = None) -> str:
    """The shard name of a policy's selections: one per (iteration, policy hash, candidate set)."""
    if not candidates:
        return f"policy-{policy_hash(policy)}"
    return f"policy-{policy_hash(policy)}-{content_hash('candidates', candidates)}"


def candidate_filter(model_id: str | None, sampling_hash: str | None) -> dict[str, str]:
    """Column values that pick one round's candidates out of a shared lake (None: no filter)."""
    return {k: v for k, v in (("model_id", model_id), ("sampling_hash", sampling_hash)) if v is not None}


# Bumped when a step's semantics change (2: weighted majority votes with the bounded ORM weight),
# so that a selection made under the old rules is made again.
SELECTION_RULES_VERSION = 2
# Frame columns that are the candidate's immutable content (its id already names them).
_CONTENT_COLUMNS = ("text", "steps")


def selection_inputs_hash(frame: pa.Table, policy: SelectionPolicy) -> str:
    """Id of what a selection is computed from: the policy and every candidate's id, prompt
    reference and scores (version, value, label, answer, steps) in the frame."""
    columns = [c for c in frame.column_names if c not in _CONTENT_COLUMNS]
    return content_hash("selection-inputs", SELECTION_RULES_VERSION, policy_hash(policy),
                        frame.select(columns).to_pylist())


def _existing_selection(lake: Lake, iteration: int, policy: SelectionPolicy, shard: str,
                        inputs_hash: str, frame: pa.Table) -> SelectionResult | None:
    """The selection already in the lake for exactly these inputs, or None (absent or stale)."""
    path = lake.partition_dir("selections", iteration) / f"{shard}.parquet"
    if not path.is_file() or lake.file_metadata(path).get("inputs_hash") != inputs_hash:
        return None
    kept = pa.parquet.read_table(path, columns=["prompt_id"]).column("prompt_id").to_pylist()
    return SelectionResult(iteration=int(iteration), policy_name=policy.name, policy_hash=policy_hash(policy),
                           candidates=frame.num_rows, prompts=len(set(frame.column("prompt_id").to_pylist())),
                           kept=len(kept), prompts_kept=len(set(kept)), path=path)


def select(lake: Lake, iteration: int, policy: SelectionPolicy,
           model_id: str | None = None, sampling_hash: str | None = None,
           reuse: bool = False) -> SelectionResult:
    """Apply `policy` to the iteration's scored candidates and write the kept rows to the lake.

    Rerunning the same policy replaces its shard (no duplicate rows); a run that keeps nothing
    removes a shard an earlier run of the same policy left. No candidates is an error. With
    `reuse`, the selection already in the lake is returned as it is when it was computed from the
    same inputs (`selection_inputs_hash`: candidates, references and scores); new candidates or
    changed scores always select again.
    """
    frame = scored_candidates(lake, iteration, model_id=model_id, sampling_hash=sampling_hash)
    if frame.num_rows == 0:
        raise ValueError(f"no candidates in iteration {iteration} to select from")
    shard = selection_shard(policy, candidate_filter(model_id, sampling_hash))
    inputs_hash = selection_inputs_hash(frame, policy)
    if reuse:
        existing = _existing_selection(lake, iteration, policy, shard, inputs_hash, frame)
        if existing is not None:
            return existing
    rows = apply_policy(frame, policy)
    digest = policy_hash(policy)
    path: Path | None
    if rows:
        path = lake.write("selections", rows, int(iteration), shard=shard, metadata={
            "policy_name": policy.name, "policy_hash": digest,
            "policy": canonical_json(canonical(policy)), "inputs_hash": inputs_hash,
        })
    else:
        path = None
        (lake.partition_dir("selections", iteration) / f"{shard}.parquet").unlink(missing_ok=True)
    return SelectionResult(
        iteration=int(iteration), policy_name=policy.name, policy_hash=digest,
        candidates=frame.num_rows, prompts=len(set(frame.column("prompt_id").to_pylist())),
        kept=len(rows), prompts_kept=len({r["prompt_id"] for r in rows}), path=path,
    )
