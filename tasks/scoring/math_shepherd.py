"""Math-Shepherd step labels: how often the policy reaches the reference answer from each step.

For a candidate with steps s_1..s_T, the prefix ending at step t (t < T) is fed back to the
generation backend after the prompt, k completions are sampled from there, and each rollout
(prefix + completion) goes through the rule verifier. Step t's soft label is the share of rollouts
that reach the reference answer; its hard label is whether any does (soft > 0). The last step is
labelled by the candidate's own outcome (1.0 correct, else 0.0): there is nothing left to roll out.

Rows go to the scores table as scorer `math_shepherd`: step_scores = soft labels, value null,
detail = the rollout count. The version names the rollout policy's model id, the rollout sampling
(n, temperature, top_p, max_tokens, seed), the prompt format, the step separator and the
verifier's mode, extractors and timeout. Unparseable or timed-out rollouts count as not reaching the answer;
a candidate whose own outcome is unparseable or timed out gets no row (an exception is never a
label).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

from schemas.generation import PromptFormat, SamplingConfig
from tasks.generation.generate import GenerationBackend, check_backend_prompts_fit, format_prompt, split_steps
from tasks.lake import ids
from tasks.lake.sql import connect
from tasks.lake.store import Lake
from tasks.scoring.score import write_score_chunk
from tasks.scoring.verify import CORRECT, DEFAULT_EXTRACTORS, INCORRECT, Verifier, VerifyItem

SCORER = "math_shepherd"


def rollout_prefixes(text: str, step_separator: str = "\n") -> list[str]:
    """The response prefixes to roll out from: through step t plus the separator, for t < T."""
    steps = split_steps(text, step_separator)
    return [text[:end] + step_separator for _, end in steps[:-1]]


def rollout_seed(sampling_seed: int, candidate_id: str, step: int) -> int:
    """The engine seed of one step's rollouts (independent of batching and order)."""
    return int(ids.content_hash("math-shepherd", sampling_seed, candidate_id, step), 16) % (2**31 - 1)


def soft_labels(outcome_correct: bool, rollouts_correct: Sequence[Sequence[bool]]) -> list[float]:
    """Per-step soft labels: each rolled-out step's share of correct rollouts, then the outcome."""
    labels = [sum(r) / len(r) for r in rollouts_correct]
    return labels + [1.0 if outcome_correct else 0.0]


class MathShepherdScorer:
    """Scorer `math_shepherd`: Math-Shepherd soft step labels through a generation backend."""

    name = SCORER

    def __init__(self, backend: GenerationBackend, sampling: SamplingConfig, *, model_id: str,
                 prompt_format: PromptFormat | None = None, step_separator: str = "\n",
                 verifier_mode: str = "exact", timeout_s: float = 5.0, workers: int = 2,
                 name: str = SCORER) -> None:
        self.name = name
        self.backend, self.sampling = backend, sampling.model_copy(update={"logprobs": False})
        self.format = prompt_format or PromptFormat()
        self.step_separator = step_separator
        self.version = "2:" + ids.content_hash("math-shepherd", model_id, self.sampling.model_dump(),
                                               self.format.model_dump(), step_separator, verifier_mode,
                                               list(DEFAULT_EXTRACTORS), float(timeout_s))
        self._verifier = Verifier(verifier_mode, DEFAULT_EXTRACTORS, timeout_s=timeout_s, workers=workers)
        self.rollouts = 0  # completions sampled so far

    def score(self, candidates: Sequence[dict]) -> list[dict]:
        """One row per candidate with a correct or incorrect outcome: step_scores = soft labels."""
        from tasks.scoring.scorer import score_row

        labelled = [c for c in candidates if c["reference_answer"] not in (None, "")]
        if not labelled:
            return []
        outcomes = self._verifier.verify([VerifyItem(c["text"], c["reference_answer"]) for c in labelled])
        labelled = [(c, v.label == CORRECT) for c, v in zip(labelled, outcomes) if v.label in (CORRECT, INCORRECT)]
        prompts, seeds, owners, names = [], [], [], []
        tokenizer = getattr(self.backend, "tokenizer", None) if self.format.kind == "chat" else None
        for index, (c, _) in enumerate(labelled):
            head = format_prompt(c["problem"], self.format, tokenizer)
            for step, prefix in enumerate(rollout_prefixes(c["text"], self.step_separator)):
                prompts.append(head + prefix)
                seeds.append(rollout_seed(self.sampling.seed, c["candidate_id"], step))
                owners.append((index, prefix))
                names.append(f"the rollout prompt of candidate {c['candidate_id']} after step {step + 1}")
        check_backend_prompts_fit(self.backend, dict(zip(names, prompts)), self.sampling.max_tokens)
        completions = self.backend.generate(prompts, self.sampling, seeds) if prompts else []
        if len(completions) != len(prompts):
            raise RuntimeError(f"backend returned {len(completions)} results for {len(prompts)} rollout prompts")
        items, slots = [], []
        for (index, prefix), outs in zip(owners, completions):
            if len(outs) != self.sampling.n:
                raise RuntimeError(f"backend returned {len(outs)} rollouts, expected {self.sampling.n}")
            slots.append(index)
            items += [VerifyItem(prefix + o.text, labelled[index][0]["reference_answer"]) for o in outs]
        self.rollouts += len(items)
        verdicts = self._verifier.verify(items) if items else []
        per_step: list[list[list[bool]]] = [[] for _ in labelled]
        for position, index in enumerate(slots):
            chunk = verdicts[position * self.sampling.n:(position + 1) * self.sampling.n]
            per_step[index].append([v.label == CORRECT for v in chunk])
        detail = json.dumps({"rollouts_per_step": self.sampling.n})
        return [score_row(c, self, value=None, detail=detail,
                          step_scores=soft_labels(correct, per_step[i]) if split_steps(c["text"], self.step_separator)
                          else [])
                for i, (c, correct) in enumerate(labelled)]

    def close(self) -> None:
        """Stop the verifier's worker pool (the backend belongs to the caller)."""
        self._verifier.close()


@dataclass
class LabelReport:
    """What lazy labelling did: candidates labelled now, already labelled, waves, rollouts."""

    labelled: int = 0
    already: int = 0
    waves: int = 0
    rollouts: int = 0
    prompts_enough: int = 0  # prompts that reached `enough` candidates with every step above 0


def every_step_reaches(step_scores: Sequence[float] | None, above: float = 0.0) -> bool:
    """True when every step's Math-Shepherd label is above `above` (0: some rollout from each step
    reached the reference)."""
    return bool(step_scores) and all(s > above for s in step_scores)


def label_lazily(lake: Lake, scorer: "MathShepherdScorer", candidates: Sequence[dict], correct: set[str],
                 iteration: int, enough: int, above: float = 0.0) -> LabelReport:
    """Math-Shepherd labels for the answer-correct candidates (ids in `correct`), lazily.

    Wave w labels, for every prompt still short of `enough` candidates whose every step is above
    `above`,
    its next unlabelled answer-correct candidate in sample order; waves repeat until no prompt needs
    one. Labels already in the lake (same scorer version) count and are not redone, so a resumed
    or repeated run labels the same candidates.
    """
    groups: dict[str, list[dict]] = {}
    for c in sorted(candidates, key=lambda c: (c["prompt_id"], c["sample_index"])):
        if c["candidate_id"] in correct:
            groups.setdefault(c["prompt_id"], []).append(c)
    labels = stored_labels(lake, iteration, scorer.name, scorer.version)
    report = LabelReport(already=sum(c["candidate_id"] in labels for g in groups.values() for c in g))
    while True:
        wave = []
        for group in groups.values():
            if sum(every_step_reaches(labels.get(c["candidate_id"]), above) for c in group) >= enough:
                continue
            todo = [c for c in group if c["candidate_id"] not in labels]
            if todo:
                wave.append(todo[0])
        if not wave:
            break
        before = scorer.rollouts
        rows = scorer.score(wave)
        if rows:
            write_score_chunk(lake, scorer, wave, rows, iteration)
        for c in wave:  # a candidate the scorer gives no row (its outcome unparseable) is not retried
            labels[c["candidate_id"]] = None
        labels.update({row["candidate_id"]: row["step_scores"] for row in rows})
        report.labelled += len(rows)
        report.waves += 1
        report.rollouts += scorer.rollouts - before
    report.prompts_enough = sum(
        sum(every_step_reaches(labels.get(c["candidate_id"]), above) for c in group) >= enough for group in groups.values())
    return report


def stored_labels(lake: Lake, iteration: int, name: str, version: str) -> dict[str, list[float] | None]:
    """Step labels this scorer version already wrote in the iteration, by candidate id."""
    if not lake.shards("scores", iteration):
        return {}
    rows = connect(lake).execute(
        "SELECT candidate_id, step_scores FROM scores WHERE iteration = ? AND scorer = ? AND scorer_version = ?",
        [iteration, name, version]).fetchall()
    return {cid: steps for cid, steps in rows}
