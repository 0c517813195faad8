"""The judge as a scoring stage: rank each prompt's candidates with a pairwise-judge tournament.

Every judgment is a row in comparisons; every candidate gets a scores row (scorer `judge` by
default; value = knockout round reached or ELO rating). Prompts whose candidates all have that
scorer's row are skipped (resume); a row of that scorer from another tournament (judge, method, k
or seed) is an error naming the candidate, never a silent skip, so a knockout and an ELO ranking
need two scorer names. The rows of a chunk of prompts are written together, comparisons first, so
a crash between the two writes leaves comparisons whose scores are redone on rerun, with the same
ids (comparison shards are named by content and overwritten, never duplicated).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Sequence

from tasks import ids
from tasks.judge import Judge
from tasks.lake import Lake
from tasks.progress import progress_bar
from tasks.tournament import comparison_rows, judge_score_rows, knockout, round_robin_elo

logger = logging.getLogger("flywheel.judge_stage")
METHODS = {"knockout": knockout, "elo": round_robin_elo}


@dataclass
class JudgeReport:
    """What one judge stage did."""

    prompts: int
    prompts_skipped: int
    comparisons: int
    unparseable: int
    seconds: float


def judge_candidates(lake: Lake, judge: Judge, candidates: Sequence[dict], iteration: int, *,
                     method: str = "knockout", votes_k: int = 1, seed: int = 0, judge_name: str = "judge",
                     judge_version: str = "1", scorer: str = "judge", prompts_per_shard: int = 64,
                     ) -> JudgeReport:
    """Run a `method` tournament over each prompt's candidates and write comparisons and scores."""
    if method not in METHODS:
        raise ValueError(f"unknown tournament method {method!r} (methods: {', '.join(METHODS)})")
    started = time.perf_counter()
    done = _already_ranked(lake, candidates, iteration, scorer, judge_name, judge_version, method, votes_k, seed)
    groups: dict[str, list[dict]] = {}
    for c in sorted(candidates, key=lambda c: (c["prompt_id"], c["sample_index"])):
        groups.setdefault(c["prompt_id"], []).append(c)
    todo = [p for p, group in groups.items() if not all(c["candidate_id"] in done for c in group)]
    comparisons = unparseable = 0
    with progress_bar(f"judge {method}", len(todo), "prompt") as bar:
        for start in range(0, len(todo), prompts_per_shard):
            chunk = todo[start:start + prompts_per_shard]
            comparison_batch: list[dict] = []
            score_batch: list[dict] = []
            for prompt_id in chunk:
                group = groups[prompt_id]
                result = _tournament(method, prompt_id, group, judge, votes_k, seed)
                comparison_batch += comparison_rows(result, iteration, judge_name, judge_version)
                score_batch += judge_score_rows(result, iteration, judge_name, judge_version, scorer)
                bar.to(bar.done + 1)
            shard = ids.content_hash("judge-chunk", scorer, method, votes_k, seed, judge_name, judge_version, chunk)
            if comparison_batch:
                lake.write("comparisons", comparison_batch, iteration=iteration, shard=shard)
            lake.write("scores", score_batch, iteration=iteration, shard=shard,
                       metadata={"scorer": scorer, "scorer_version": score_batch[0]["scorer_version"]})
            comparisons += len(comparison_batch)
            unparseable += sum(1 for r in comparison_batch if r["verdict"] == "unparseable")
            logger.info("judge: %d/%d prompts", min(start + prompts_per_shard, len(todo)), len(todo))
    return JudgeReport(prompts=len(groups), prompts_skipped=len(groups) - len(todo), comparisons=comparisons,
                       unparseable=unparseable, seconds=time.perf_counter() - started)


def _tournament(method: str, prompt_id: str, group: Sequence[dict], judge: Judge, votes_k: int,
                seed: int) -> Any:
    texts = {c["candidate_id"]: c["text"] for c in group}
    return METHODS[method](prompt_id, [c["candidate_id"] for c in group], texts, group[0]["problem"], judge,
                           votes_k=votes_k, seed=seed)


def same_tournament(version: str, judge_name: str, judge_version: str, method: str, votes_k: int,
                    seed: int) -> bool:
    """Whether a judge scores row's scorer_version (`tasks.tournament.scorer_version`:
    judge@version/method/k=K/params) comes from this judge, method, k and seed."""
    parts = version.split("/")
    return (parts[:3] == [f"{judge_name}@{judge_version}", method, f"k={votes_k}"]
            and f"seed={seed}" in parts[3:])


def _already_ranked(lake: Lake, candidates: Sequence[dict], iteration: int, scorer: str, judge_name: str,
                    judge_version: str, method: str, votes_k: int, seed: int) -> set[str]:
    """Candidates that already have this scorer's row from this tournament; another tournament's is an error."""
    wanted = {c["candidate_id"] for c in candidates}
    versions = {cid: version for cid, name, version in
                lake.existing_keys("scores", iteration, ["candidate_id", "scorer", "scorer_version"])
                if name == scorer and cid in wanted}
    stale = sorted(cid for cid, version in versions.items()
                   if not same_tournament(version, judge_name, judge_version, method, votes_k, seed))
    if stale:
        raise ValueError(f"candidate {stale[0]} already has a {scorer!r} score from another tournament "
                         f"({versions[stale[0]]!r}), not {method} with k={votes_k}, seed={seed} by "
                         f"{judge_name}@{judge_version}: use another scorer name, iteration or lake")
    return set(versions)
