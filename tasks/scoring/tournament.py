"""Ranking one prompt's candidates with a pairwise judge: knockout or round-robin ELO, voting@k.

Shared rules (both methods):
- `candidate_ids` are given in sample order (sample_index ascending); "earlier" means earlier in
  that list. Texts are joined by id (`texts[candidate_id]`), never by position.
- A pair is stored in canonical order a_id < b_id. voting@k: vote v of a pair shows a_id first when
  v is even and b_id first when v is odd, to cancel position bias.
- Each judgment's engine seed is derived from (prompt_id, a_id, b_id, vote, seed), so it does not
  depend on batching or on the order of the candidates. Its comparisons row (`comparison_rows`)
  carries the judge and its version, the method, k (`votes_k`), the seed and the vote: the
  comparisons key, so two tournaments that differ in any of them never share a row's key.
- A pair's match is decided by the majority of its parseable votes; a tie (even k, unparseable
  votes, or no parseable vote) goes to the candidate earlier in `candidate_ids` and is recorded as
  `tie_broken` on the match.

Knockout: each round pairs the surviving candidates at random (a `random.Random` seeded from
(prompt_id, seed) shuffles them; consecutive ones meet; the last one of an odd count gets a bye),
and all pairs × k votes of the round go to the judge in ONE `judge_batch` call. Winners advance:
n − 1 matches, (n − 1)·k judgments, ⌈log2 n⌉ rounds (rounds are numbered from 1). A candidate's
score is the round it reached: the last round it took part in (a bye counts), and rounds + 1 for
the winner; with one candidate there are no rounds and it scores 1.

Round-robin ELO: all n(n−1)/2 pairs × k votes in ONE `judge_batch` call (round 1). Ratings start
at ELO_INITIAL (1000); a parseable vote won by w over l moves K·(1 − E_w) from l to w, with
K = ELO_K (32) and E_w = 1 / (1 + 10^((R_l − R_w) / ELO_SCALE)) (base 10, scale 400). Unparseable
votes do not update. The rule is applied `passes` times (default 1) with one of two updates:
- "batch" (default): each pass computes every vote's expected score from the ratings at the start
  of the pass and applies all changes at once, so ratings do not depend on the order of the
  votes or of the candidates. One pass from equal ratings gives initial + K/2 · (wins − losses),
  so a candidate that wins more votes always rates higher (every candidate plays (n−1)·k votes).
- "sequential": classic online ELO over the votes in a fixed order (pairs in
  `itertools.combinations(candidate_ids, 2)` order, votes in order). Late votes weigh more, so
  it can rank a candidate with fewer wins above one with more (seen with the oracle judge).
The winner has the highest rating; equal ratings go to the candidate earlier in `candidate_ids`.
A candidate's score is its rating.
"""
from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from schemas import table_spec
from tasks.lake import ids
from tasks.scoring.judge import Judge, JudgeRequest, JudgeResult

COMPARISONS = table_spec("comparisons")
SCORES = table_spec("scores")
METHODS = ("knockout", "elo")
ELO_INITIAL = 1000.0
ELO_K = 32.0
ELO_SCALE = 400.0
ELO_UPDATES = ("batch", "sequential")


class TournamentError(ValueError):
    """Bad tournament input, or a judge that answered something other than what was asked."""


@dataclass(frozen=True)
class Judgment:
    """One vote on one pair: who was shown first, the judge's positional verdict, the winner."""

    round: int
    a_id: str
    b_id: str
    vote: int
    first_id: str
    verdict: Literal[1, 2] | None
    winner_id: str | None
    reasoning: str
    attempts: int


@dataclass(frozen=True)
class Match:
    """One pair's k votes tallied: the majority winner, and whether the tie rule decided it."""

    round: int
    a_id: str
    b_id: str
    votes_a: int
    votes_b: int
    unparseable: int
    winner_id: str
    tie_broken: bool


@dataclass(frozen=True)
class TournamentResult:
    """Everything a tournament did: its judgments, matches, winner and a score per candidate.

    `scores` is the ELO rating (method 'elo') or the round reached (method 'knockout').
    `byes` lists (round, candidate_id) of every knockout bye. `judge_calls` counts judge_batch calls.
    """

    prompt_id: str
    method: str
    candidate_ids: tuple[str, ...]
    votes_k: int
    params: dict[str, float | int | str]
    judgments: tuple[Judgment, ...]
    matches: tuple[Match, ...]
    winner_id: str
    rounds: int
    judge_calls: int
    scores: dict[str, float]
    byes: tuple[tuple[int, str], ...] = field(default=())


# -- counts and checks ----------------------------------------------------------------------------
def comparisons_needed(n: int, k: int, method: str) -> int:
    """Judgments a tournament over n candidates with k votes per pair makes (knockout or elo)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise TournamentError(f"n must be an integer >= 1, got {n!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise TournamentError(f"k must be an integer >= 1, got {k!r}")
    if method == "knockout":
        return (n - 1) * k
    if method == "elo":
        return n * (n - 1) // 2 * k
    raise TournamentError(f"unknown tournament method {method!r} (use {' or '.join(METHODS)})")


def knockout_rounds(n: int) -> int:
    """Rounds of a knockout over n candidates: ⌈log2 n⌉."""
    comparisons_needed(n, 1, "knockout")
    return (n - 1).bit_length()


def _check_inputs(candidate_ids: Sequence[str], texts: Mapping[str, str], query: str,
                  votes_k: int) -> tuple[str, ...]:
    if isinstance(candidate_ids, str) or not isinstance(candidate_ids, Sequence):
        raise TournamentError("candidate_ids must be a sequence of candidate id strings")
    if not candidate_ids:
        raise TournamentError("a tournament needs at least one candidate")
    seen: set[str] = set()
    for candidate_id in candidate_ids:
        if not isinstance(candidate_id, str) or not candidate_id:
            raise TournamentError(f"candidate id {candidate_id!r} is not a non-empty string")
        if candidate_id in seen:
            raise TournamentError(f"duplicate candidate id {candidate_id!r}")
        seen.add(candidate_id)
        if not isinstance(texts.get(candidate_id), str):
            raise TournamentError(f"no text for candidate {candidate_id!r}")
    if not isinstance(query, str):
        raise TournamentError(f"query must be a string, got {type(query).__name__}")
    if isinstance(votes_k, bool) or not isinstance(votes_k, int) or votes_k < 1:
        raise TournamentError(f"votes_k must be an integer >= 1, got {votes_k!r}")
    return tuple(candidate_ids)


def vote_seed(prompt_id: str, a_id: str, b_id: str, vote: int, seed: int) -> int:
    """The engine seed of one vote on one pair (independent of batching and candidate order)."""
    return int(ids.content_hash("judge-vote", prompt_id, a_id, b_id, vote, seed), 16) % (2**31 - 1)


# -- one batched round ----------------------------------------------------------------------------
def _judge_round(prompt_id: str, round_number: int, pairs: Sequence[tuple[str, str]],
                 texts: Mapping[str, str], query: str, judge: Judge, votes_k: int,
                 seed: int, order: Mapping[str, int]) -> tuple[list[Judgment], list[Match]]:
    """All pairs × k votes of one round in one judge_batch call; judgments and tallied matches."""
    requests, seeds, keys = [], [], []
    for x, y in pairs:
        a_id, b_id = min(x, y), max(x, y)
        for vote in range(votes_k):
            first, second = (a_id, b_id) if vote % 2 == 0 else (b_id, a_id)
            requests.append(JudgeRequest(query, texts[first], texts[second], first, second))
            seeds.append(vote_seed(prompt_id, a_id, b_id, vote, seed))
            keys.append((a_id, b_id, vote, first, second))
    results = judge.judge_batch(requests, seeds) if requests else []
    if len(results) != len(requests):
        raise TournamentError(f"judge returned {len(results)} results for {len(requests)} requests")
    judgments = []
    for (a_id, b_id, vote, first, second), result in zip(keys, results):
        if not isinstance(result, JudgeResult) or result.verdict not in (1, 2, None):
            raise TournamentError(f"judge returned {result!r}; expected a JudgeResult with verdict 1, 2 or None")
        winner = None if result.verdict is None else (first if result.verdict == 1 else second)
        judgments.append(Judgment(round_number, a_id, b_id, vote, first, result.verdict, winner,
                                  result.reasoning, result.attempts))
    matches = []
    for index in range(len(pairs)):
        votes = judgments[index * votes_k:(index + 1) * votes_k]
        a_id, b_id = votes[0].a_id, votes[0].b_id
        votes_a = sum(1 for j in votes if j.winner_id == a_id)
        votes_b = sum(1 for j in votes if j.winner_id == b_id)
        tie = votes_a == votes_b
        if tie:
            winner = a_id if order[a_id] < order[b_id] else b_id
        else:
            winner = a_id if votes_a > votes_b else b_id
        matches.append(Match(round_number, a_id, b_id, votes_a, votes_b,
                             votes_k - votes_a - votes_b, winner, tie))
    return judgments, matches


# -- knockout -------------------------------------------------------------------------------------
def knockout(prompt_id: str, candidate_ids: Sequence[str], texts: Mapping[str, str], query: str,
             judge: Judge, votes_k: int = 1, seed: int = 0) -> TournamentResult:
    """A seeded single-elimination tournament; each round is one batched judge call."""
    order_ids = _check_inputs(candidate_ids, texts, query, votes_k)
    order = {c: i for i, c in enumerate(order_ids)}
    rng = random.Random(int(ids.content_hash("knockout", prompt_id, seed), 16))
    alive = list(order_ids)
    reached = {c: 1 for c in order_ids}
    judgments: list[Judgment] = []
    matches: list[Match] = []
    byes: list[tuple[int, str]] = []
    rounds = calls = 0
    while len(alive) > 1:
        rounds += 1
        drawn = list(alive)
        rng.shuffle(drawn)
        pairs = [(drawn[i], drawn[i + 1]) for i in range(0, len(drawn) - 1, 2)]
        if len(drawn) % 2:
            byes.append((rounds, drawn[-1]))
        round_judgments, round_matches = _judge_round(prompt_id, rounds, pairs, texts, query, judge,
                                                      votes_k, seed, order)
        calls += 1
        judgments += round_judgments
        matches += round_matches
        alive = [m.winner_id for m in round_matches] + ([drawn[-1]] if len(drawn) % 2 else [])
        for candidate_id in alive:
            reached[candidate_id] = rounds + 1
    return TournamentResult(
        prompt_id=prompt_id, method="knockout", candidate_ids=order_ids, votes_k=votes_k,
        params={"seed": seed}, judgments=tuple(judgments), matches=tuple(matches),
        winner_id=alive[0], rounds=rounds, judge_calls=calls,
        scores={c: float(reached[c]) for c in order_ids}, byes=tuple(byes),
    )


# -- round-robin ELO ------------------------------------------------------------------------------
def elo_ratings(candidate_ids: Sequence[str], outcomes: Sequence[tuple[str, str]], *,
                initial: float = ELO_INITIAL, k_factor: float = ELO_K, scale: float = ELO_SCALE,
                passes: int = 1, update: str = "batch") -> dict[str, float]:
    """ELO ratings from (winner_id, loser_id) outcomes, `passes` times, batch or sequential updates."""
    for name, value in (("initial", initial), ("k_factor", k_factor), ("scale", scale)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise TournamentError(f"ELO {name} must be a finite number, got {value!r}")
    if k_factor <= 0 or scale <= 0:
        raise TournamentError(f"ELO k_factor and scale must be positive, got {k_factor} and {scale}")
    if isinstance(passes, bool) or not isinstance(passes, int) or passes < 1:
        raise TournamentError(f"ELO passes must be an integer >= 1, got {passes!r}")
    if update not in ELO_UPDATES:
        raise TournamentError(f"unknown ELO update {update!r} (use {' or '.join(ELO_UPDATES)})")
    ratings = {c: float(initial) for c in candidate_ids}
    for winner, loser in outcomes:
        if winner not in ratings or loser not in ratings or winner == loser:
            raise TournamentError(f"ELO outcome ({winner!r}, {loser!r}) is not a pair of distinct candidates")

    def gain(current: Mapping[str, float], winner: str, loser: str) -> float:
        expected = 1.0 / (1.0 + 10.0 ** ((current[loser] - current[winner]) / scale))
        return k_factor * (1.0 - expected)

    for _ in range(passes):
        if update == "sequential":
            for winner, loser in outcomes:
                delta = gain(ratings, winner, loser)
                ratings[winner] += delta
                ratings[loser] -= delta
            continue
        start = dict(ratings)
        for winner, loser in outcomes:
            delta = gain(start, winner, loser)
            ratings[winner] += delta
            ratings[loser] -= delta
    return ratings


def round_robin_elo(prompt_id: str, candidate_ids: Sequence[str], texts: Mapping[str, str],
                    query: str, judge: Judge, votes_k: int = 1, seed: int = 0, *,
                    initial: float = ELO_INITIAL, k_factor: float = ELO_K,
                    scale: float = ELO_SCALE, passes: int = 1,
                    update: str = "batch") -> TournamentResult:
    """Every pair judged k times in one batched call; candidates ranked by ELO rating."""
    order_ids = _check_inputs(candidate_ids, texts, query, votes_k)
    order = {c: i for i, c in enumerate(order_ids)}
    pairs = list(itertools.combinations(order_ids, 2))
    judgments, matches = _judge_round(prompt_id, 1, pairs, texts, query, judge, votes_k, seed, order)
    outcomes = []
    for j in judgments:
        if j.winner_id is not None:
            outcomes.append((j.winner_id, j.b_id if j.winner_id == j.a_id else j.a_id))
    ratings = elo_ratings(order_ids, outcomes, initial=initial, k_factor=k_factor, scale=scale,
                          passes=passes, update=update)
    winner = max(order_ids, key=lambda c: (ratings[c], -order[c]))
    return TournamentResult(
        prompt_id=prompt_id, method="elo", candidate_ids=order_ids, votes_k=votes_k,
        params={"seed": seed, "initial": initial, "k_factor": k_factor, "scale": scale,
                "passes": passes, "update": update},
        judgments=tuple(judgments), matches=tuple(matches), winner_id=winner,
        rounds=1 if pairs else 0, judge_calls=1 if pairs else 0, scores=ratings,
    )


# -- lake rows ------------------------------------------------------------------------------------
def _check_names(judge_name: str, judge_version: str) -> None:
    for what, value in (("judge_name", judge_name), ("judge_version", judge_version)):
        if not isinstance(value, str) or not value:
            raise TournamentError(f"{what} must be a non-empty string, got {value!r}")


def tournament_seed(result: TournamentResult) -> int:
    """The seed a tournament's vote seeds (and knockout draw) were derived from."""
    seed = result.params.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TournamentError(f"tournament params hold no integer seed: {result.params!r}")
    return seed


def comparison_rows(result: TournamentResult, iteration: int, judge_name: str,
                    judge_version: str) -> list[dict]:
    """Rows of the comparisons table: one per judgment of the tournament.

    Each row carries what makes its judgment (schemas/comparisons.py): the judge and its version,
    the method, k (`votes_k`), the tournament `seed` and the vote number.
    """
    _check_names(judge_name, judge_version)
    seed = tournament_seed(result)
    rows = []
    for j in result.judgments:
        verdict = "unparseable" if j.winner_id is None else ("a" if j.winner_id == j.a_id else "b")
        row = {
            "prompt_id": result.prompt_id, "iteration": iteration, "a_id": j.a_id, "b_id": j.b_id,
            "judge": judge_name, "judge_version": judge_version, "vote": j.vote,
            "votes_k": result.votes_k, "seed": seed,
            "tournament": result.method, "round": j.round, "first_id": j.first_id,
            "verdict": verdict, "winner_id": j.winner_id, "reasoning": j.reasoning,
            "attempts": j.attempts,
        }
        rows.append(row)
    if rows and set(rows[0]) != set(COMPARISONS.columns):
        raise TournamentError("comparison rows do not match schemas/comparisons.py")  # pragma: no cover
    return rows


def scorer_version(result: TournamentResult, judge_name: str, judge_version: str) -> str:
    """The scores table's scorer_version of a tournament: judge, method, k and method parameters."""
    _check_names(judge_name, judge_version)
    params = "/".join(f"{key}={value}" for key, value in sorted(result.params.items()))
    return f"{judge_name}@{judge_version}/{result.method}/k={result.votes_k}/{params}"


def judge_score_rows(result: TournamentResult, iteration: int, judge_name: str,
                     judge_version: str, scorer: str = "judge") -> list[dict]:
    """Rows of the scores table: one per candidate, value = ELO rating or knockout round reached.

    `detail` is JSON with the method, the candidate's wins and losses over parseable votes,
    unparseable votes, byes (knockout) and whether it won the tournament.
    """
    version = scorer_version(result, judge_name, judge_version)
    if not isinstance(scorer, str) or not scorer:
        raise TournamentError(f"scorer must be a non-empty string, got {scorer!r}")
    rows = []
    for candidate_id in result.candidate_ids:
        mine = [j for j in result.judgments if candidate_id in (j.a_id, j.b_id)]
        detail = {
            "method": result.method,
            "wins": sum(1 for j in mine if j.winner_id == candidate_id),
            "losses": sum(1 for j in mine if j.winner_id not in (None, candidate_id)),
            "unparseable": sum(1 for j in mine if j.winner_id is None),
            "winner": candidate_id == result.winner_id,
        }
        if result.method == "knockout":
            detail["byes"] = sum(1 for _, c in result.byes if c == candidate_id)
        rows.append({
            "candidate_id": candidate_id, "prompt_id": result.prompt_id, "iteration": iteration,
            "scorer": scorer, "scorer_version": version, "value": float(result.scores[candidate_id]),
            "label": None, "extracted_answer": None, "step_scores": None,
            "detail": json.dumps(detail, sort_keys=True),
        })
    return rows
