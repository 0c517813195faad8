"""Running scorers: the registry of scorers (`SCORERS`, `make_scorer`), the rule scorers (verifier,
step verifier, PRL), and `score_candidates`, which runs one scorer over an iteration into the
scores table. The interface itself is `tasks.scoring.scorer`.

Every row carries the scorer's name and version. Scorers sit in a registry (`SCORERS`) the way
generation backends and selection steps do; `score_candidates` runs one over an iteration,
resuming: candidates that already have a row for that scorer are skipped.

Names and versions. The scores key is (candidate_id, scorer): a scorer's name stays its name
whatever its settings, so `select`, evaluation and best-of-N keep joining scores by name, and one
candidate holds at most one row per name. `scorer_version` names everything else that changes
the scorer's values for a candidate (the candidate's own text, prompt and reference are already
named by its id):
- verifier: comparison mode, extractors and the per-item timeout (it decides which items come out
  'timeout');
- step_verifier: nothing but its rules (a constant);
- orm / prm (`tasks.scoring.reward_model`): the model's id, the prompt format and, for the PRM, the step
  separator;
- math_shepherd (`tasks.scoring.math_shepherd`): the rollout policy's id, the rollout sampling, prompt
  format, step separator and the verifier's mode, extractors and timeout;
- confidence (`tasks.scoring.confidence`): nothing (the log-probabilities are the candidate's own);
- prl (`tasks.scoring.prl.prl_version`): the reference model's id, the prompt format, eta and the version
  of the verifier rows its outcome rewards come from;
- the judge stage writes its own rows (`tasks.scoring.judge_stage`).
A candidate that already has a row of the scorer's name but of another version is never reused:
`score_candidates` refuses by default (naming both versions), or with `replace_stale=True` drops
those rows and scores the candidates again, so the key still holds one row per candidate and
name. Scorers whose version depends on the lake (PRL: on its candidates' verifier rows) fix it in
`prepare(candidates)`, which `score_candidates` calls before comparing versions.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from schemas import table_spec
from schemas.loop import ScoringStage, extractor_specs
from tasks.lake import ids
from tasks.lake.sql import connect
from tasks.lake.store import Lake
from tasks.runtime.progress import progress_bar
from tasks.scoring.confidence import ConfidenceScorer
from tasks.scoring.reward_model import ORMScorer, PRMScorer
from tasks.scoring.scorer import CANDIDATE_COLUMNS, score_row
from tasks.scoring.step_verify import all_steps_correct, step_labels
from tasks.scoring.verify import (CORRECT, DEFAULT_EXTRACTORS, INCORRECT, MathSettings, Verifier, VerifyItem,
                          check_extractors, extract_answer, extractor_label)

logger = logging.getLogger("flywheel.score")
SCORES = table_spec("scores")
_LAKE_METADATA = ("schema_version", "table", "producer", "code_version")  # what Lake.write sets itself

def verifier_version(mode: str, extractors: Sequence[Any], timeout_s: float,
                     math_settings: MathSettings | None = None) -> str:
    """The verifier scorer's version: comparison mode, answer extractors, per-item timeout and, in
    math mode, math-verify's settings."""
    names = ",".join(extractor_label(e) for e in extractors)
    version = f"3:{mode}:{names}:timeout={float(timeout_s)!r}"
    if mode == "math":
        version += f":{(math_settings or MathSettings()).version()}"
    return version


class VerifierScorer:
    """The rule-based verifier: final answer vs reference, in a process pool with a hard timeout.

    A prompt without a reference gets a row with the extracted answer and no value or label
    (the input majority-vote pseudo-labelling needs).
    """

    name = "verifier"

    def __init__(self, mode: str = "exact", extractors: Sequence[Any] = DEFAULT_EXTRACTORS,
                 timeout_s: float = 5.0, workers: int = 2, math_settings: MathSettings | None = None) -> None:
        self.mode, self.extractors, self.timeout_s, self.workers = mode, check_extractors(extractors), timeout_s, workers
        self.math_settings = math_settings or MathSettings()
        self.version = verifier_version(mode, self.extractors, timeout_s, self.math_settings)
        self._verifier: Verifier | None = None

    def score(self, candidates: Sequence[dict]) -> list[dict]:
        """Verify every candidate with a reference; extract only for those without."""
        with_ref = [c for c in candidates if c["reference_answer"] not in (None, "")]
        rows = [score_row(c, self, value=None, extracted_answer=extract_answer(c["text"], self.extractors),
                          detail="no reference answer")
                for c in candidates if c["reference_answer"] in (None, "")]
        if with_ref:
            if self._verifier is None:
                self._verifier = Verifier(self.mode, self.extractors, self.timeout_s, self.workers,
                                          math_settings=self.math_settings)
            verdicts = self._verifier.verify([VerifyItem(c["text"], c["reference_answer"]) for c in with_ref])
            rows += [score_row(c, self, value=v.value, label=v.label, extracted_answer=v.extracted_answer,
                               detail=v.detail) for c, v in zip(with_ref, verdicts)]
        return rows

    def close(self) -> None:
        """Stop the worker pool."""
        if self._verifier is not None:
            self._verifier.close()
            self._verifier = None


class StepVerifierScorer:
    """The demo task's process-level rule verifier: every step's arithmetic, as true step labels."""

    name = "step_verifier"
    version = "1"

    def score(self, candidates: Sequence[dict]) -> list[dict]:
        """Per-step labels; value 1.0 iff every step is correct and the solution complete."""
        rows = []
        for c in candidates:
            if c["reference_answer"] in (None, ""):
                continue
            steps = list(c["steps"])
            labels = step_labels(c["problem"], steps, c["reference_answer"])
            good = all_steps_correct(c["problem"], steps, c["reference_answer"])
            rows.append(score_row(c, self, value=1.0 if good else 0.0, label=CORRECT if good else INCORRECT,
                                  step_scores=labels))
        return rows

    def close(self) -> None:
        """Nothing to release."""


class PRLScorer:
    """PRL process values: outcome advantage minus β·KL-to-reference, per step (the formula is in `tasks/scoring/prl.py`).

    Outcome rewards are the verifier's values already in the lake; the reference policy (the base
    model) scores each candidate's sampled tokens. Candidates must arrive grouped by prompt.
    The version (`tasks.scoring.prl.prl_version`) names the reference model's id, the prompt format, eta
    and the verifier version of the rewards: `outcome_version` when given, else the one version of
    the candidates' verifier rows, found by `prepare` (several versions are an error).
    """

    name = "prl"

    def __init__(self, lake: Lake, iteration: int, reference_path: str, eta: float = 1.0,
                 prompt_format: Any = None, batch_size: int = 64, outcome_version: str | None = None,
                 name: str = "prl") -> None:
        from schemas.generation import PromptFormat
        from tasks.scoring.prl import check_eta

        self.name = name
        self.lake, self.iteration, self.reference_path, self.eta = lake, iteration, reference_path, check_eta(eta)
        self.format = prompt_format or PromptFormat()
        self.batch_size = batch_size
        self._reference_id: str | None = None
        self.outcome_version = outcome_version  # the verifier version the rewards must have; None: found
        self._found_outcome: str | None = None
        self._reference: tuple[Any, Any] | None = None

    def _verifier_versions(self, candidate_ids: Sequence[str] | None) -> list[str]:
        if not self.lake.shards("scores", self.iteration):
            return []
        sql = ("SELECT DISTINCT scorer_version FROM scores WHERE scorer = 'verifier' AND iteration = ?"
               + ("" if candidate_ids is None else " AND candidate_id IN (SELECT unnest(?::VARCHAR[]))")
               + " ORDER BY 1")
        params: list[Any] = [self.iteration] + ([] if candidate_ids is None else [list(candidate_ids)])
        return [row[0] for row in connect(self.lake).execute(sql, params).fetchall()]

    def _find_outcome(self, candidate_ids: Sequence[str] | None) -> str:
        versions = self._verifier_versions(candidate_ids)
        if len(versions) > 1:
            raise ValueError(f"PRL reads one verifier version, but the candidates' verifier scores have "
                             f"{len(versions)}: {versions[0]!r} and {versions[1]!r}; pass outcome_version")
        return versions[0] if versions else "none"

    def prepare(self, candidates: Sequence[dict]) -> None:
        """Find the verifier version of these candidates' outcome rewards (it is part of the version)."""
        if self.outcome_version is None:
            self._found_outcome = self._find_outcome([c["candidate_id"] for c in candidates])

    @property
    def outcome(self) -> str:
        """The verifier version the outcome rewards are read from."""
        if self.outcome_version is not None:
            return self.outcome_version
        if self._found_outcome is None:
            self._found_outcome = self._find_outcome(None)
        return self._found_outcome

    @property
    def reference_id(self) -> str:
        """The reference model's id (`tasks.generation.generate.model_id_for` of its folder)."""
        if self._reference_id is None:
            from tasks.generation.generate import model_id_for

            self._reference_id = model_id_for(self.reference_path)
        return self._reference_id

    @property
    def version(self) -> str:
        """Reference model id, prompt format, eta and outcome verifier version, hashed."""
        from tasks.scoring.prl import prl_version

        return prl_version(self.reference_id, self.format.model_dump(), self.eta, self.outcome)

    def score(self, candidates: Sequence[dict]) -> list[dict]:
        """One row per candidate with a verifier value: step_scores = process values, value = A."""
        from tasks.generation.generate import format_prompt
        from tasks.generation.ref_logprobs import candidate_logprobs, load_reference
        from tasks.scoring.prl import prl_score_rows

        outcome, version = self.outcome, self.version
        rewards = dict(connect(self.lake).execute(
            "SELECT candidate_id, value FROM scores WHERE scorer = 'verifier' AND iteration = ? "
            "AND scorer_version = ?", [self.iteration, outcome]).fetchall())
        missing = [c["candidate_id"] for c in candidates if c["candidate_id"] not in rewards]
        if missing:
            raise ValueError(f"PRL needs verifier scores first: candidate {missing[0]} has none "
                             f"of version {outcome!r}")
        if self._reference is None:
            self._reference = load_reference(self.reference_path)
        model, tokenizer = self._reference
        scored = [c for c in candidates if rewards[c["candidate_id"]] is not None]
        prompts = {c["prompt_id"]: format_prompt(c["problem"], self.format, tokenizer) for c in scored}
        reference = candidate_logprobs(model, tokenizer, scored, prompts, batch_size=self.batch_size)
        return prl_score_rows(candidates, {c["candidate_id"]: rewards[c["candidate_id"]] for c in candidates},
                              reference, self.eta, self.iteration, version)

    def close(self) -> None:
        """Free the reference model."""
        self._reference = None



def verifier_for_stage(stage: ScoringStage) -> VerifierScorer:
    """The verifier scorer a scoring stage configures (mode, extractors, timeout, workers, math
    settings): what the loop, evaluation and `flywheel score` all use."""
    return VerifierScorer(stage.verifier_mode, extractor_specs(stage.extractors), stage.timeout_s, stage.workers,
                          MathSettings(**stage.math.model_dump()))


def rule_scorers(stage: ScoringStage) -> list[Any]:
    """The rule scorers every candidate of a round gets: the verifier, and the step verifier when
    the stage asks for it."""
    return [verifier_for_stage(stage), *([StepVerifierScorer()] if stage.step_verifier else [])]

SCORERS: dict[str, Callable[..., Any]] = {
    "verifier": VerifierScorer,
    "step_verifier": StepVerifierScorer,
    "prl": PRLScorer,
    "orm": ORMScorer,
    "prm": PRMScorer,
    "confidence": ConfidenceScorer,
}


def make_scorer(name: str, **options: Any) -> Any:
    """A scorer from the registry by name; unknown names are an error listing the known ones."""
    try:
        factory = SCORERS[name]
    except KeyError:
        raise ValueError(f"unknown scorer {name!r} (scorers: {', '.join(sorted(SCORERS))})") from None
    return factory(**options)


def load_candidates(lake: Lake, iteration: int, model_id: str | None = None,
                    prompt_split: str | None = None, sampling_hash: str | None = None,
                    prompt_ids: Sequence[str] | None = None) -> list[dict]:
    """An iteration's candidates joined with their prompts (problem, reference answer), by id,
    optionally only one model's, one split's, one sampling config's and some prompts'."""
    con = connect(lake)
    where = ["c.iteration = ?"]
    params: list[Any] = [iteration]
    if model_id is not None:
        where.append("c.model_id = ?")
        params.append(model_id)
    if prompt_split is not None:
        where.append("p.split = ?")
        params.append(prompt_split)
    if sampling_hash is not None:
        where.append("c.sampling_hash = ?")
        params.append(sampling_hash)
    if prompt_ids is not None:
        where.append("c.prompt_id IN (SELECT unnest(?::VARCHAR[]))")
        params.append(list(prompt_ids))
    cols = ", ".join(f"c.{c}" for c in CANDIDATE_COLUMNS[:-2]) + ", p.problem, p.reference_answer"
    sql = (f"SELECT {cols} FROM candidates c JOIN prompts p USING (prompt_id) "
           f"WHERE {' AND '.join(where)} ORDER BY c.prompt_id, c.sample_index")
    return con.execute(sql, params).to_arrow_table().to_pylist()


def prompt_chunks(candidates: Sequence[dict], chunk_size: int) -> list[list[dict]]:
    """Candidates in chunks of about `chunk_size` that never split one prompt's group."""
    groups: dict[str, list[dict]] = {}
    for c in candidates:
        groups.setdefault(c["prompt_id"], []).append(c)
    chunks: list[list[dict]] = [[]]
    for group in groups.values():
        if chunks[-1] and len(chunks[-1]) + len(group) > chunk_size:
            chunks.append([])
        chunks[-1].extend(group)
    return [c for c in chunks if c]


def write_score_chunk(lake: Lake, scorer: Any, chunk: Sequence[dict], rows: list[dict], iteration: int,
                      labels: dict[str, int] | None = None) -> None:
    """Write one chunk's score rows as a shard named by the scorer and the chunk's candidates,
    counting their labels into `labels`."""
    labels = {} if labels is None else labels
    for row in rows:
        labels[str(row["label"])] = labels.get(str(row["label"]), 0) + 1
    shard = ids.content_hash("scores-chunk", scorer.name, scorer.version, [c["candidate_id"] for c in chunk])
    lake.write("scores", rows, iteration=iteration, shard=shard,
               metadata={"scorer": scorer.name, "scorer_version": scorer.version})


@dataclass
class ScoreReport:
    """What one scoring stage did."""

    scorer: str
    candidates: int
    scored: int
    skipped: int
    labels: dict[str, int]
    seconds: float
    replaced: int = 0  # candidates whose rows of another version were dropped and scored again


def score_candidates(lake: Lake, scorer: Any, candidates: Sequence[dict], iteration: int,
                     chunk_size: int = 4096, replace_stale: bool = False) -> ScoreReport:
    """Score candidates not yet scored by `scorer` and write their rows in shards per chunk.

    A candidate whose row of this scorer's name has another scorer_version is an error, or, with
    `replace_stale`, has that row dropped and is scored again.
    """
    started = time.perf_counter()
    prepare = getattr(scorer, "prepare", None)
    if prepare is not None:
        prepare(candidates)
    version = scorer.version
    existing: dict[str, set[str]] = {}
    for cid, name, stored in lake.existing_keys("scores", iteration, ["candidate_id", "scorer", "scorer_version"]):
        if name == scorer.name:
            existing.setdefault(cid, set()).add(stored)
    wanted = {c["candidate_id"] for c in candidates}
    stale = sorted(cid for cid, stored in existing.items() if cid in wanted and stored != {version})
    if stale and not replace_stale:
        other = sorted(existing[stale[0]] - {version})[0]
        raise ValueError(f"candidate {stale[0]} already has a {scorer.name!r} score of version "
                         f"{other!r}, not {version!r}: score into a new iteration or lake, remove the "
                         f"old rows, or replace them (replace_stale=True)")
    if stale:
        dropped = drop_score_rows(lake, iteration, scorer.name, stale)
        logger.info("scorer %s: dropped %d rows of other versions", scorer.name, dropped)
    done = {cid for cid, stored in existing.items() if stored == {version}}
    todo = [c for c in candidates if c["candidate_id"] not in done]
    labels: dict[str, int] = {}
    scored = seen = 0
    with progress_bar(f"score {scorer.name}", len(todo), "candidate") as bar:
        for chunk in prompt_chunks(todo, chunk_size):
            rows = scorer.score(chunk)
            seen += len(chunk)
            bar.to(seen)
            if rows:
                write_score_chunk(lake, scorer, chunk, rows, iteration, labels)
                scored += len(rows)
    report = ScoreReport(scorer=scorer.name, candidates=len(candidates), scored=scored,
                         skipped=len(candidates) - len(todo), labels=labels,
                         seconds=time.perf_counter() - started, replaced=len(stale))
    logger.info("scorer %s: %s", scorer.name, json.dumps(report.__dict__))
    return report


def drop_score_rows(lake: Lake, iteration: int, scorer: str, candidate_ids: Sequence[str]) -> int:
    """Remove one scorer's rows of some candidates from an iteration's scores shards; the count.

    Each shard holding such rows is rewritten atomically without them (its file metadata kept), or
    deleted when nothing else is left in it.
    """
    drop = set(candidate_ids)
    removed = 0
    for path in lake.shards("scores", iteration):
        keys = pq.read_table(path, columns=["candidate_id", "scorer"])
        hit = [cid in drop and name == scorer for cid, name in
               zip(keys.column("candidate_id").to_pylist(), keys.column("scorer").to_pylist())]
        if not any(hit):
            continue
        table = pq.read_table(path).select(SCORES.columns)
        kept = table.filter(pa.array([not h for h in hit]))
        removed += table.num_rows - kept.num_rows
        if kept.num_rows:
            metadata = {k: v for k, v in lake.file_metadata(path).items() if k not in _LAKE_METADATA}
            lake.write("scores", kept, iteration=iteration, shard=path.stem, metadata=metadata)
        else:
            path.unlink()
    return removed
