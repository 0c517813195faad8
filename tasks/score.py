"""One scorer interface: candidates (joined with their prompts) in, rows of the scores table out.

Every row carries the scorer's name and version. Scorers sit in a registry (`SCORERS`) the way
generation backends and selection steps do; `score_candidates` runs one over an iteration,
resuming: candidates that already have a row for that scorer are skipped.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

from schemas import table_spec
from tasks import ids
from tasks.lake import Lake
from tasks.progress import progress_bar
from tasks.reward_model import ORMScorer, PRMScorer
from tasks.sql import connect
from tasks.step_verify import all_steps_correct, step_labels
from tasks.verify import CORRECT, INCORRECT, Verifier, VerifyItem, extract_answer

logger = logging.getLogger("flywheel.score")
SCORES = table_spec("scores")

# The columns a scorer receives per candidate (candidates joined with prompts by prompt_id).
CANDIDATE_COLUMNS = ("candidate_id", "prompt_id", "iteration", "sample_index", "text", "steps",
                     "token_ids", "token_logprobs", "step_token_ends", "problem", "reference_answer")


class Scorer(Protocol):
    """Scores a batch of candidates; returns one scores row per candidate it could score."""

    name: str
    version: str

    def score(self, candidates: Sequence[dict]) -> list[dict]: ...


def score_row(candidate: dict, scorer: "Scorer", *, value: float | None, label: str | None = None,
              extracted_answer: str | None = None, step_scores: list[float] | None = None,
              detail: str | None = None) -> dict:
    """A row of the scores table for one candidate."""
    return {
        "candidate_id": candidate["candidate_id"], "prompt_id": candidate["prompt_id"],
        "iteration": candidate["iteration"], "scorer": scorer.name, "scorer_version": scorer.version,
        "value": value, "label": label, "extracted_answer": extracted_answer,
        "step_scores": step_scores, "detail": detail,
    }


class VerifierScorer:
    """The rule-based verifier: final answer vs reference, in a process pool with a hard timeout.

    A prompt without a reference gets a row with the extracted answer and no value or label
    (the input majority-vote pseudo-labelling needs).
    """

    name = "verifier"

    def __init__(self, mode: str = "exact", extractors: Sequence[str] = ("hash", "boxed", "answer_is"),
                 timeout_s: float = 5.0, workers: int = 2) -> None:
        self.mode, self.extractors, self.timeout_s, self.workers = mode, tuple(extractors), timeout_s, workers
        self.version = f"1:{mode}:{','.join(self.extractors)}"
        self._verifier: Verifier | None = None

    def score(self, candidates: Sequence[dict]) -> list[dict]:
        """Verify every candidate with a reference; extract only for those without."""
        with_ref = [c for c in candidates if c["reference_answer"] not in (None, "")]
        rows = [score_row(c, self, value=None, extracted_answer=extract_answer(c["text"], self.extractors),
                          detail="no reference answer")
                for c in candidates if c["reference_answer"] in (None, "")]
        if with_ref:
            if self._verifier is None:
                self._verifier = Verifier(self.mode, self.extractors, self.timeout_s, self.workers)
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
    """PRL process values: outcome advantage minus β·KL-to-reference, per step (DESIGN.md).

    Outcome rewards are the verifier's values already in the lake; the reference policy (the base
    model) scores each candidate's sampled tokens. Candidates must arrive grouped by prompt.
    """

    name = "prl"

    def __init__(self, lake: Lake, iteration: int, reference_path: str, eta: float = 1.0,
                 prompt_format: Any = None, batch_size: int = 64) -> None:
        from schemas.generation import PromptFormat

        self.lake, self.iteration, self.reference_path, self.eta = lake, iteration, reference_path, eta
        self.format = prompt_format or PromptFormat()
        self.batch_size = batch_size
        self.version = f"1:eta={eta}"
        self._reference: tuple[Any, Any] | None = None

    def score(self, candidates: Sequence[dict]) -> list[dict]:
        """One row per candidate with a verifier value: step_scores = process values, value = A."""
        from tasks.generate import format_prompt
        from tasks.prl import prl_score_rows
        from tasks.ref_logprobs import candidate_logprobs, load_reference

        rewards = dict(connect(self.lake).execute(
            "SELECT candidate_id, value FROM scores WHERE scorer = 'verifier' AND iteration = ?",
            [self.iteration]).fetchall())
        missing = [c["candidate_id"] for c in candidates if c["candidate_id"] not in rewards]
        if missing:
            raise ValueError(f"PRL needs verifier scores first: candidate {missing[0]} has none")
        if self._reference is None:
            self._reference = load_reference(self.reference_path)
        model, tokenizer = self._reference
        scored = [c for c in candidates if rewards[c["candidate_id"]] is not None]
        prompts = {c["prompt_id"]: format_prompt(c["problem"], self.format, tokenizer) for c in scored}
        reference = candidate_logprobs(model, tokenizer, scored, prompts, batch_size=self.batch_size)
        return prl_score_rows(candidates, {c["candidate_id"]: rewards[c["candidate_id"]] for c in candidates},
                              reference, self.eta, self.iteration, self.version)

    def close(self) -> None:
        """Free the reference model."""
        self._reference = None


SCORERS: dict[str, Callable[..., Any]] = {
    "verifier": VerifierScorer,
    "step_verifier": StepVerifierScorer,
    "prl": PRLScorer,
    "orm": ORMScorer,
    "prm": PRMScorer,
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


def _write_score_chunk(lake: Lake, scorer: Any, chunk: Sequence[dict], rows: list[dict], iteration: int,
                       labels: dict[str, int]) -> None:
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


def score_candidates(lake: Lake, scorer: Any, candidates: Sequence[dict], iteration: int,
                     chunk_size: int = 4096) -> ScoreReport:
    """Score candidates not yet scored by `scorer` and write their rows in shards per chunk."""
    started = time.perf_counter()
    versions = {cid: version for cid, name, version in
                lake.existing_keys("scores", iteration, ["candidate_id", "scorer", "scorer_version"])
                if name == scorer.name}
    wanted = {c["candidate_id"] for c in candidates}
    stale = sorted(cid for cid, version in versions.items() if cid in wanted and version != scorer.version)
    if stale:
        raise ValueError(f"candidate {stale[0]} already has a {scorer.name!r} score of version "
                         f"{versions[stale[0]]!r}, not {scorer.version!r}: score into a new iteration "
                         f"or lake, or remove the old rows")
    done = set(versions)
    todo = [c for c in candidates if c["candidate_id"] not in done]
    labels: dict[str, int] = {}
    scored = seen = 0
    with progress_bar(f"score {scorer.name}", len(todo), "candidate") as bar:
        for chunk in prompt_chunks(todo, chunk_size):
            rows = scorer.score(chunk)
            seen += len(chunk)
            bar.to(seen)
            if rows:
                _write_score_chunk(lake, scorer, chunk, rows, iteration, labels)
                scored += len(rows)
    report = ScoreReport(scorer=scorer.name, candidates=len(candidates), scored=scored,
                         skipped=len(candidates) - len(todo), labels=labels,
                         seconds=time.perf_counter() - started)
    logger.info("scorer %s: %s", scorer.name, json.dumps(report.__dict__))
    return report
