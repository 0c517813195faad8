"""Process Reward Learning (PRL): per-step process values from an outcome reward and a KL term.

With outcome reward r, current policy pi, reference pi_ref and beta = 1/eta, the value of the
prefix ending at step t (last token e_t) is

    v_t = A - beta * sum_{j >= e_t} (log pi(a_j) - log pi_ref(a_j))

where A = (r - mean_group) / (std_group + 1e-6) over the samples of one prompt (sample standard
deviation, n - 1; a group of one, or whose rewards are all equal, gets A = 0). The sum runs from
the step's last token, included, to the end of the response.

Candidates whose outcome reward is None (unparseable, timeout) are left out: they get no score
row and do not count in their prompt's group statistics (an exception is never a score).

The scorer version (`prl_version`) names everything besides the candidates themselves that changes
these values: the reference model's id (its log-probabilities), the prompt format (the text the
reference reads before the tokens), eta, and the verifier version of the outcome rewards. The step
ends and the policy's log-probabilities are the candidate's own (its id names the generation
settings, step separator included).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa

from tasks.lake import ids

SCORER = "prl"
PRL_VERSION = 2  # bump when the formula changes
EPSILON = 1e-6
_CANDIDATE_COLUMNS = ("candidate_id", "prompt_id", "token_ids", "token_logprobs", "step_token_ends")


def check_eta(eta: float) -> float:
    """eta as a float, or ValueError when it is not a finite number > 0."""
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not math.isfinite(eta) or eta <= 0:
        raise ValueError(f"eta must be a finite number > 0, got {eta!r}")
    return float(eta)


def prl_version(reference_model_id: str, prompt_format: Mapping[str, Any], eta: float,
                outcome_version: str) -> str:
    """The PRL scorer version: eta in clear, then a hash of the reference model id, the prompt
    format (as a dict), eta and the outcome rewards' verifier version."""
    eta = check_eta(eta)
    digest = ids.content_hash("prl", PRL_VERSION, reference_model_id, dict(prompt_format), eta,
                              outcome_version, EPSILON)
    return f"{PRL_VERSION}:eta={eta!r}:{digest}"


def _check_finite(values: Sequence[float], what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{what} must be a flat sequence of numbers")
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise ValueError(f"{what}[{int(bad[0])}] is not finite: {array[bad[0]]}")
    return array


def group_advantages(rewards: Sequence[float]) -> list[float]:
    """Group-normalised advantages (r - mean) / (sample std + 1e-6) of one prompt's rewards."""
    array = _check_finite(rewards, "rewards")
    if array.size <= 1 or np.all(array == array[0]):
        return [0.0] * int(array.size)
    std = float(np.std(array, ddof=1))
    return [float(x) for x in (array - array.mean()) / (std + EPSILON)]


def _check_inputs(policy_logprobs: Sequence[float], ref_logprobs: Sequence[float],
                  step_token_ends: Sequence[int], eta: float) -> tuple[np.ndarray, list[int]]:
    """Validate the PRL inputs; return the per-token log-ratio and the step ends as ints."""
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not math.isfinite(eta) or eta <= 0:
        raise ValueError(f"eta must be a finite number > 0, got {eta!r}")
    policy = _check_finite(policy_logprobs, "policy_logprobs")
    ref = _check_finite(ref_logprobs, "ref_logprobs")
    if policy.size != ref.size:
        raise ValueError(f"policy_logprobs has {policy.size} tokens but ref_logprobs has {ref.size}")
    ends: list[int] = []
    for index, end in enumerate(step_token_ends):
        if isinstance(end, bool) or not isinstance(end, (int, np.integer)):
            raise ValueError(f"step_token_ends[{index}] is not an integer: {end!r}")
        end = int(end)
        if not 0 <= end < policy.size:
            raise ValueError(f"step_token_ends[{index}] = {end} is outside the {policy.size} tokens")
        if ends and end <= ends[-1]:
            raise ValueError(f"step_token_ends is not strictly increasing at index {index}: "
                             f"{ends[-1]} then {end}")
        ends.append(end)
    return policy - ref, ends


def _check_advantage(advantage: float) -> float:
    if isinstance(advantage, bool) or not isinstance(advantage, (int, float, np.floating)) \
            or not math.isfinite(advantage):
        raise ValueError(f"advantage must be a finite number, got {advantage!r}")
    return float(advantage)


def process_values(advantage: float, policy_logprobs: Sequence[float], ref_logprobs: Sequence[float],
                   step_token_ends: Sequence[int], eta: float) -> list[float]:
    """The PRL process value v_t of every step (one value per entry of `step_token_ends`)."""
    adv = _check_advantage(advantage)
    ratio, ends = _check_inputs(policy_logprobs, ref_logprobs, step_token_ends, eta)
    suffix = np.cumsum(ratio[::-1])[::-1]  # suffix[j] = sum_{k >= j} ratio[k]
    return [adv - float(suffix[end]) / eta for end in ends]


def token_values(advantage: float, policy_logprobs: Sequence[float], ref_logprobs: Sequence[float],
                 step_token_ends: Sequence[int], eta: float) -> list[float]:
    """One PRL value per token: every token of step t carries v_t.

    Step t spans the tokens after step t-1's last token up to e_t; tokens after the last step's
    end (a trailing separator, EOS) carry the last step's value. A response needs at least one step.
    """
    values = process_values(advantage, policy_logprobs, ref_logprobs, step_token_ends, eta)
    if not values:
        raise ValueError("token_values needs at least one step (step_token_ends is empty)")
    result: list[float] = []
    for end, value in zip(step_token_ends, values):
        result.extend([value] * (int(end) + 1 - len(result)))
    result.extend([values[-1]] * (len(policy_logprobs) - len(result)))
    return result


def _candidate_dicts(candidates: pa.Table | Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    if isinstance(candidates, pa.Table):
        missing = [c for c in _CANDIDATE_COLUMNS if c not in candidates.column_names]
        if missing:
            raise ValueError(f"candidates table lacks column {missing[0]!r}")
        return candidates.select(list(_CANDIDATE_COLUMNS)).to_pylist()
    rows = list(candidates)
    for row in rows:
        missing = [c for c in _CANDIDATE_COLUMNS if c not in row and c != "token_ids"]
        if missing:
            raise ValueError(f"candidate {row.get('candidate_id')!r} lacks column {missing[0]!r}")
    return rows


def prl_score_rows(
    candidates: pa.Table | Sequence[Mapping[str, Any]],
    outcome: Mapping[str, float | None],
    ref_logprobs: Mapping[str, Sequence[float]],
    eta: float,
    iteration: int,
    scorer_version: str,
) -> list[dict]:
    """Rows of the scores table (scorer "prl") for candidates with an outcome reward.

    Groups are the candidates of one prompt_id that have a reward; each row's value is the
    candidate's advantage A and its step_scores are the process values. Candidates whose reward
    is None get no row; a candidate missing from `outcome`, or a scored one missing from
    `ref_logprobs` or lacking token_logprobs / step_token_ends, is an error.
    """
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not math.isfinite(eta) or eta <= 0:
        raise ValueError(f"eta must be a finite number > 0, got {eta!r}")
    rows = _candidate_dicts(candidates)
    groups: dict[str, list[tuple[Mapping[str, Any], float]]] = {}
    seen: set[str] = set()
    for row in rows:
        cid = row["candidate_id"]
        if cid in seen:
            raise ValueError(f"candidate {cid!r} appears twice")
        seen.add(cid)
        if cid not in outcome:
            raise ValueError(f"candidate {cid!r} has no entry in the outcome rewards")
        reward = outcome[cid]
        if reward is None:
            continue
        if isinstance(reward, bool) or not isinstance(reward, (int, float)) or not math.isfinite(reward):
            raise ValueError(f"candidate {cid!r}: outcome reward must be a finite number or None, "
                             f"got {reward!r}")
        groups.setdefault(row["prompt_id"], []).append((row, float(reward)))

    detail = ids.canonical_json({"eta": eta})
    result = []
    for prompt_id in sorted(groups):
        members = groups[prompt_id]
        advantages = group_advantages([reward for _, reward in members])
        for (row, _), advantage in zip(members, advantages):
            cid = row["candidate_id"]
            policy, ends = row.get("token_logprobs"), row.get("step_token_ends")
            if policy is None:
                raise ValueError(f"candidate {cid!r} has no token_logprobs (generate with logprobs)")
            if ends is None:
                raise ValueError(f"candidate {cid!r} has no step_token_ends")
            token_ids = row.get("token_ids")
            if token_ids is not None and len(token_ids) != len(policy):
                raise ValueError(f"candidate {cid!r}: {len(token_ids)} token_ids but "
                                 f"{len(policy)} token_logprobs")
            if cid not in ref_logprobs:
                raise ValueError(f"candidate {cid!r} has no reference log-probabilities")
            try:
                values = process_values(advantage, policy, ref_logprobs[cid], ends, eta)
            except ValueError as error:
                raise ValueError(f"candidate {cid!r}: {error}") from None
            result.append({
                "candidate_id": cid, "prompt_id": prompt_id, "iteration": int(iteration),
                "scorer": SCORER, "scorer_version": scorer_version, "value": advantage,
                "label": None, "extracted_answer": None, "step_scores": values, "detail": detail,
            })
    return result
