"""The judge as a scoring stage: rank each prompt's candidates with a pairwise-judge tournament.

Every judgment is a row in comparisons; every candidate gets a scores row (scorer `judge` by
default; value = knockout round reached or ELO rating).

Versions. The judge_version stored with both kinds of row is the caller's `judge_version` (the
judge model's id) joined to the judge's own settings version (`tasks.scoring.judge.stored_judge_version`:
prompt template, sampling, attempts, format), and the scores rows' scorer_version adds the
method, k and the tournament's parameters with its seed (`tasks.scoring.tournament.scorer_version`).

Resume. Prompts whose candidates all have that scorer's row from this very tournament are skipped;
a row of that scorer from another tournament (judge model or settings, method, k or seed) is an
error naming the candidate, never a silent skip, so a knockout and an ELO ranking need two scorer
names. A prompt with only some of its candidates ranked is an error too (its group changed: the
old ranks were made against other competitors, and re-ranking would give a candidate two rows).

Stored judgments. Judgments already in the comparisons table under the same key (same prompt,
pair, judge, judge version, method, k, seed and vote) are replayed from the lake, not asked
again, and not written again: a crash between the comparisons write and the scores write, or the
same tournament ranked under a second scorer name, costs no judge call and adds no duplicate row.
Comparisons shards are named by the keys of their rows (the lake's default), scores shards by the
chunk of prompts; the rows of a chunk are written together, comparisons first.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Sequence

from tasks.lake import ids
from tasks.lake.sql import connect
from tasks.lake.store import Lake
from tasks.runtime.progress import progress_bar
from tasks.scoring.judge import Judge, JudgeError, JudgeRequest, JudgeResult, stored_judge_version
from tasks.scoring.tournament import comparison_rows, judge_score_rows, knockout, round_robin_elo, vote_seed

logger = logging.getLogger("flywheel.judge_stage")
METHODS = {"knockout": knockout, "elo": round_robin_elo}

StoredKey = tuple[str, str, int]  # (first_id, second_id, engine seed of the vote)


@dataclass
class JudgeReport:
    """What one judge stage did."""

    prompts: int
    prompts_skipped: int
    comparisons: int
    unparseable: int
    seconds: float
    replayed: int = 0  # judgments answered from comparisons rows already in the lake


def judge_candidates(lake: Lake, judge: Judge, candidates: Sequence[dict], iteration: int, *,
                     method: str = "knockout", votes_k: int = 1, seed: int = 0, judge_name: str = "judge",
                     judge_version: str = "1", scorer: str = "judge", prompts_per_shard: int = 64,
                     ) -> JudgeReport:
    """Run a `method` tournament over each prompt's candidates and write comparisons and scores.

    `judge_version` names the judge model (e.g. its model id); the judge's own settings version
    is appended to it in every stored row.
    """
    if method not in METHODS:
        raise ValueError(f"unknown tournament method {method!r} (methods: {', '.join(METHODS)})")
    started = time.perf_counter()
    version = stored_judge_version(judge, judge_version)
    groups: dict[str, list[dict]] = {}
    for c in sorted(candidates, key=lambda c: (c["prompt_id"], c["sample_index"])):
        groups.setdefault(c["prompt_id"], []).append(c)
    done = _already_ranked(lake, groups, iteration, scorer, judge_name, version, method, votes_k, seed)
    todo = [p for p, group in groups.items() if not all(c["candidate_id"] in done for c in group)]
    stored = _stored_judgments(lake, iteration, judge_name, version, method, votes_k, seed, todo)
    comparisons = unparseable = replayed = 0
    with progress_bar(f"judge {method}", len(todo), "prompt") as bar:
        for start in range(0, len(todo), prompts_per_shard):
            chunk = todo[start:start + prompts_per_shard]
            comparison_batch: list[dict] = []
            score_batch: list[dict] = []
            for prompt_id in chunk:
                group = groups[prompt_id]
                known = stored.get(prompt_id, {})
                replay = _ReplayJudge(judge, known)
                result = _tournament(method, prompt_id, group, replay, votes_k, seed)
                replayed += replay.replayed
                comparison_batch += [row for row in comparison_rows(result, iteration, judge_name, version)
                                     if _stored_key(row) not in known]
                score_batch += judge_score_rows(result, iteration, judge_name, version, scorer)
                bar.to(bar.done + 1)
            if comparison_batch:
                lake.write("comparisons", comparison_batch, iteration=iteration)
            shard = ids.content_hash("judge-chunk", scorer, method, votes_k, seed, judge_name, version, chunk)
            lake.write("scores", score_batch, iteration=iteration, shard=shard,
                       metadata={"scorer": scorer, "scorer_version": score_batch[0]["scorer_version"]})
            comparisons += len(comparison_batch)
            unparseable += sum(1 for r in comparison_batch if r["verdict"] == "unparseable")
            logger.info("judge: %d/%d prompts", min(start + prompts_per_shard, len(todo)), len(todo))
    return JudgeReport(prompts=len(groups), prompts_skipped=len(groups) - len(todo), comparisons=comparisons,
                       unparseable=unparseable, seconds=time.perf_counter() - started, replayed=replayed)


def _tournament(method: str, prompt_id: str, group: Sequence[dict], judge: Judge, votes_k: int,
                seed: int) -> Any:
    texts = {c["candidate_id"]: c["text"] for c in group}
    return METHODS[method](prompt_id, [c["candidate_id"] for c in group], texts, group[0]["problem"], judge,
                           votes_k=votes_k, seed=seed)


def same_tournament(version: str, judge_name: str, judge_version: str, method: str, votes_k: int,
                    seed: int) -> bool:
    """Whether a judge scores row's scorer_version (`tasks.scoring.tournament.scorer_version`:
    judge@version/method/k=K/params) comes from this judge (name and stored version), method,
    k and seed."""
    head = f"{judge_name}@{judge_version}/{method}/k={votes_k}/"
    return version.startswith(head) and f"seed={seed}" in version[len(head):].split("/")


def _already_ranked(lake: Lake, groups: Mapping[str, Sequence[dict]], iteration: int, scorer: str,
                    judge_name: str, judge_version: str, method: str, votes_k: int, seed: int) -> set[str]:
    """Candidates that already have this scorer's row from this tournament; another tournament's
    row, or a prompt with only some of its candidates ranked, is an error."""
    wanted = {c["candidate_id"] for group in groups.values() for c in group}
    versions = {cid: version for cid, name, version in
                lake.existing_keys("scores", iteration, ["candidate_id", "scorer", "scorer_version"])
                if name == scorer and cid in wanted}
    stale = sorted(cid for cid, version in versions.items()
                   if not same_tournament(version, judge_name, judge_version, method, votes_k, seed))
    if stale:
        raise ValueError(f"candidate {stale[0]} already has a {scorer!r} score from another tournament "
                         f"({versions[stale[0]]!r}), not {method} with k={votes_k}, seed={seed} by "
                         f"{judge_name}@{judge_version}: use another scorer name, iteration or lake")
    for prompt_id, group in groups.items():
        ranked = [c["candidate_id"] for c in group if c["candidate_id"] in versions]
        if ranked and len(ranked) < len(group):
            missing = next(c["candidate_id"] for c in group if c["candidate_id"] not in versions)
            raise ValueError(f"prompt {prompt_id}: {len(ranked)} of its {len(group)} candidates already have a "
                             f"{scorer!r} score but candidate {missing} has none: the tournament's group changed; "
                             f"use another scorer name, iteration or lake")
    return set(versions)


def _stored_key(row: Mapping[str, Any]) -> StoredKey:
    """The replay key of a comparisons row: who was shown first and second, and the vote's engine seed."""
    second = row["b_id"] if row["first_id"] == row["a_id"] else row["a_id"]
    return (row["first_id"], second,
            vote_seed(row["prompt_id"], row["a_id"], row["b_id"], int(row["vote"]), int(row["seed"])))


def _stored_judgments(lake: Lake, iteration: int, judge_name: str, judge_version: str, method: str,
                      votes_k: int, seed: int, prompt_ids: Sequence[str]) -> dict[str, dict[StoredKey, dict]]:
    """This tournament's comparisons rows already in the lake, by prompt and replay key."""
    if not prompt_ids or not lake.shards("comparisons", iteration):
        return {}
    rows = connect(lake).execute(
        "SELECT * FROM comparisons WHERE iteration = ? AND judge = ? AND judge_version = ? AND tournament = ? "
        "AND prompt_id IN (SELECT unnest(?::VARCHAR[]))",
        [iteration, judge_name, judge_version, method, list(prompt_ids)]).to_arrow_table().to_pylist()
    stored: dict[str, dict[StoredKey, dict]] = {}
    for row in rows:  # shards of an older schema lack votes_k and seed: never this tournament's
        if row.get("votes_k") == votes_k and row.get("seed") == seed:
            stored.setdefault(row["prompt_id"], {})[_stored_key(row)] = row
    return stored


class _ReplayJudge:
    """Answers the judgments found in `stored` from their rows; asks `inner` for the others, in one call."""

    def __init__(self, inner: Judge, stored: Mapping[StoredKey, dict]) -> None:
        self.inner, self.stored = inner, stored
        self.replayed = 0

    def judge_batch(self, pairs: Sequence[JudgeRequest], vote_seeds: Sequence[int]) -> list[JudgeResult]:
        """Stored verdicts for stored judgments, the inner judge's for the rest, in request order."""
        if len(vote_seeds) != len(pairs):
            raise JudgeError(f"got {len(vote_seeds)} vote seeds for {len(pairs)} judge requests")
        results: list[JudgeResult | None] = [None] * len(pairs)
        ask = []
        for index, (pair, seed) in enumerate(zip(pairs, vote_seeds)):
            row = self.stored.get((str(pair.first_id), str(pair.second_id), int(seed)))
            if row is None:
                ask.append(index)
                continue
            verdict = None if row["winner_id"] is None else (1 if row["winner_id"] == pair.first_id else 2)
            results[index] = JudgeResult(verdict, row["reasoning"] or "", int(row["attempts"]))
        self.replayed += len(pairs) - len(ask)
        if ask:
            answered = self.inner.judge_batch([pairs[i] for i in ask], [vote_seeds[i] for i in ask])
            if len(answered) != len(ask):
                raise JudgeError(f"judge returned {len(answered)} results for {len(ask)} requests")
            for index, result in zip(ask, answered):
                results[index] = result
        return [r for r in results if r is not None]
