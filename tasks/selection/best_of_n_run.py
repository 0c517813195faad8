"""Reward-guided inference (best-of-N), stage by stage: plan which methods can run, sample N per
prompt, score with the reward models the methods need (and the verifier where references exist,
for reporting only), rank with judge tournaments, pick one candidate per prompt by every method,
and render the report. `flows/best_of_n.py` wraps these in Prefect tasks and composes them."""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from schemas.best_of_n import METHOD_NAMES, BestOfNConfig
from tasks.evaluation.evaluate import score_map
from tasks.evaluation.metrics import avg_at_n, pass_at_n
from tasks.evaluation.report import reports_dir_for
from tasks.generation.generate import (GenerationBackend, LazyBackend, check_model_folder, generate_candidates,
                                       generation_hash, model_id_for)
from tasks.lake import ids
from tasks.lake.sql import connect
from tasks.lake.store import Lake
from tasks.runtime.logs import run_logger
from tasks.scoring.judge import GenerativeJudge, JudgeRequest, judge_from_settings
from tasks.scoring.judge_stage import judge_candidates
from tasks.scoring.reward_model import ORM_KIND, PRM_KIND, ORMScorer, PRMScorer, check_reward_model_folder
from tasks.scoring.score import VerifierScorer, load_candidates, score_candidates
from tasks.scoring.verify import CORRECT, extract_answer
from tasks.selection.best_of_n import (
    JUDGE_SCORERS, METHOD_NEEDS, CountingBackend, EngineCost, PromptCostJudge, SamplingCost,
    Signals, method_work, pick_all, render_table, summarise_picks,
)

JUDGE_NAME = "judge"


def _log() -> Any:
    return run_logger("flywheel.best_of_n")


@dataclass(frozen=True)
class BestOfNRun:
    """What every stage of a best-of-N run needs, built once: the config, the lake, the policy and
    judge folders with their ids, and the sampling hash that names the run's candidates."""

    config: BestOfNConfig
    lake: Lake
    policy_path: str
    policy_id: str
    judge_path: str
    judge_id: str
    sampling_hash: str

    @classmethod
    def start(cls, config: BestOfNConfig) -> "BestOfNRun":
        """The run's context; a policy or judge folder that is not a model is an error."""
        policy_path = str(check_model_folder(config.policy_model))
        judge_path = str(check_model_folder(config.judge.model)) if config.judge.model else policy_path
        return cls(config, Lake(config.lake), policy_path, model_id_for(policy_path), judge_path,
                   model_id_for(judge_path), generation_hash(config.sampling, config.format, "\n", config.engine))


# -- plan -----------------------------------------------------------------------------------------
def _reward_model_gap(path: str | None, kind: str, key: str) -> str | None:
    """Why a reward model cannot be used (None when it can); a folder that is not one is an error."""
    if path is None:
        return f"no {key} given"
    if not Path(path).expanduser().exists():
        return f"{key} folder {path} not found (train one with `flywheel reward-models`)"
    check_reward_model_folder(path, kind)
    return None


def plan_methods(config: BestOfNConfig) -> tuple[list[str], dict[str, str]]:
    """The methods to run and, for each one left out, why (config.methods: missing models are errors)."""
    gaps = {"orm": _reward_model_gap(config.orm_model, ORM_KIND, "orm_model"),
            "prm": _reward_model_gap(config.prm_model, PRM_KIND, "prm_model"), "judge": None, None: None}
    wanted = config.methods or METHOD_NAMES
    run, skipped = [], {}
    for method in METHOD_NAMES:
        if method not in wanted:
            continue
        gap = gaps[METHOD_NEEDS[method]]
        if gap is None:
            run.append(method)
        elif config.methods is not None:
            raise ValueError(f"method {method!r} cannot run: {gap}")
        else:
            skipped[method] = gap
    return run, skipped


# -- stages ---------------------------------------------------------------------------------------
def run_candidates(run: BestOfNRun, prompts: list[dict]) -> list[dict]:
    """The run's candidates joined with their prompts: exactly n for every prompt, else an error."""
    config = run.config
    wanted = {p["prompt_id"] for p in prompts}
    rows = [c for c in load_candidates(run.lake, config.iteration, model_id=run.policy_id,
                                       prompt_split=config.split, sampling_hash=run.sampling_hash)
            if c["prompt_id"] in wanted]
    counts = Counter(c["prompt_id"] for c in rows)
    for prompt in prompts:
        if counts[prompt["prompt_id"]] != config.sampling.n:
            raise ValueError(f"prompt {prompt['prompt_id']}: {counts[prompt['prompt_id']]} candidates in the "
                             f"lake, expected n={config.sampling.n}")
    return rows


def sample(run: BestOfNRun, engine: LazyBackend, prompts: list[dict]) -> SamplingCost:
    """Sample n candidates per prompt from the policy (resuming); the shared sampling cost."""
    config = run.config
    report = generate_candidates(run.lake, engine, prompts, model_id=run.policy_id, iteration=config.iteration,
                                 sampling=config.sampling, fmt=config.format, chunk_size=config.chunk_size)
    _log().info("sample: %d prompts, %d candidates written, %d/%d chunks already done, %.1f s", report.prompts,
                report.candidates_written, report.chunks_skipped, report.chunks_total, report.seconds)
    tokens = sum(len(c["token_ids"] or []) for c in run_candidates(run, prompts))
    return SamplingCost(prompts=len(prompts), n=config.sampling.n, engine_calls=report.chunks_total,
                        generated_tokens=tokens)


def score(run: BestOfNRun, candidates: list[dict], methods: list[str]) -> dict[str, int]:
    """Score the candidates with the reward models the methods need, and with the verifier where a
    reference exists (resuming); candidates scored per scorer."""
    config = run.config
    with_reference = [c for c in candidates if c["reference_answer"] not in (None, "")]
    needs = {METHOD_NEEDS[m] for m in methods}
    jobs: list[tuple[Any, list[dict]]] = []
    if with_reference:
        jobs.append((VerifierScorer(config.verifier_mode, config.extractors), with_reference))
    if "orm" in needs:
        jobs.append((ORMScorer(config.orm_model, prompt_format=config.format, batch_size=config.rm_batch_size),
                     candidates))
    if "prm" in needs:
        jobs.append((PRMScorer(config.prm_model, prompt_format=config.format, batch_size=config.rm_batch_size),
                     candidates))
    scored = {}
    for scorer, subset in jobs:
        try:
            report = score_candidates(run.lake, scorer, subset, config.iteration)
        finally:
            scorer.close()
        _log().info("score %s: %d scored, %d already scored, %.1f s", scorer.name, report.scored, report.skipped,
                    report.seconds)
        scored[scorer.name] = report.scored
    return scored


def make_judge(config: BestOfNConfig, backend: GenerationBackend) -> GenerativeJudge:
    """The generative judge the config describes, over `backend`."""
    return judge_from_settings(config.judge, backend)


def judge_context_gap(config: BestOfNConfig, engine: GenerationBackend, candidates: list[dict]) -> str | None:
    """Why the judge cannot compare these candidates (a prompt of some pair, in either order, does
    not fit the judge model's context with max_tokens), or None. Starts no engine."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for candidate in candidates:
        groups[candidate["prompt_id"]].append(candidate)
    pairs = [JudgeRequest(query=a["problem"], first_text=a["text"], second_text=b["text"],
                          first_id=a["candidate_id"], second_id=b["candidate_id"])
             for group in groups.values() for a in group for b in group if a is not b]
    return make_judge(config, engine).context_overflow(pairs)


def judge(run: BestOfNRun, engine: LazyBackend, candidates: list[dict], method: str) -> dict[str, EngineCost]:
    """Rank every prompt's candidates with one judge tournament (resuming); engine cost per prompt judged."""
    config = run.config
    settings = config.judge
    counter = CountingBackend(engine)
    judge = PromptCostJudge(make_judge(config, counter), counter,
                            {c["candidate_id"]: c["prompt_id"] for c in candidates})
    report = judge_candidates(run.lake, judge, candidates, config.iteration, method=method,
                              votes_k=settings.votes, seed=settings.seed, judge_name=JUDGE_NAME,
                              judge_version=run.judge_id, scorer=JUDGE_SCORERS[method])
    _log().info("judge %s: %d prompts (%d already ranked), %d comparisons, %d unparseable, %d engine calls, "
                "%.1f s", method, report.prompts, report.prompts_skipped, report.comparisons, report.unparseable,
                counter.calls, report.seconds)
    return judge.costs


# -- picks ----------------------------------------------------------------------------------------
def final_answer(text: str, extractors: tuple[str, ...]) -> str | None:
    """A candidate's final answer for voting: the rule extractor's, None when there is none (or blank)."""
    answer = extract_answer(text, extractors)
    return answer if answer is not None and answer.strip() else None


def load_signals(run: BestOfNRun, candidates: list[dict], methods: list[str]) -> Signals:
    """Answers, ORM values, PRM step scores and judge scores of the candidates, by candidate_id."""
    config, lake, it = run.config, run.lake, run.config.iteration
    needs = {METHOD_NEEDS[m] for m in methods}
    orm = {cid: r["value"] for cid, r in score_map(lake, it, "orm").items()} if "orm" in needs else {}
    prm = {cid: r["step_scores"] for cid, r in score_map(lake, it, "prm").items()} if "prm" in needs else {}
    judge = {m: {cid: r["value"] for cid, r in score_map(lake, it, JUDGE_SCORERS[m]).items()}
             for m in methods if METHOD_NEEDS[m] == "judge"}
    answers = {c["candidate_id"]: final_answer(c["text"], config.extractors) for c in candidates}
    return Signals(answers=answers, orm=orm, prm=prm, judge=judge)


def method_scorer(method: str) -> str | None:
    """The scores.scorer a method reads (None: plain majority reads only answers)."""
    needs = METHOD_NEEDS[method]
    return JUDGE_SCORERS[method] if needs == "judge" else needs


def scorer_versions(lake: Lake, iteration: int, scorer: str) -> dict[str, str]:
    """scorer_version of one scorer's rows in one iteration, by candidate_id."""
    return dict(connect(lake).execute(
        "SELECT candidate_id, scorer_version FROM scores WHERE iteration = ? AND scorer = ?",
        [iteration, scorer]).fetchall())


def earlier_judge_costs(run: BestOfNRun) -> dict[tuple[str, str], EngineCost]:
    """Judge costs this run's earlier picks recorded, by (prompt_id, method): a resumed tournament's cost."""
    rows = connect(run.lake).execute(
        "SELECT prompt_id, method, extra_engine_calls, extra_generated_tokens FROM picks WHERE run_id = ? "
        "AND model_id = ? AND sampling_hash = ? AND extra_engine_calls IS NOT NULL "
        "AND extra_generated_tokens IS NOT NULL", [run.config.run_id, run.policy_id, run.sampling_hash]).fetchall()
    return {(p, m): EngineCost(int(calls), int(tokens)) for p, m, calls, tokens in rows}


def _engine_cost(method: str, prompt_id: str, measured: dict[str, dict[str, EngineCost]],
                 earlier: dict[tuple[str, str], EngineCost]) -> EngineCost | None:
    """The judge's engine cost of one prompt (zero for methods without a judge; None: unknown)."""
    if METHOD_NEEDS[method] != "judge":
        return EngineCost()
    return measured.get(method, {}).get(prompt_id) or earlier.get((prompt_id, method))


def pick(run: BestOfNRun, candidates: list[dict], methods: list[str],
              judge_costs: dict[str, dict[str, EngineCost]]) -> list[dict]:
    """One pick per prompt and method, written to the picks table (one shard per method); the rows."""
    config, lake, policy_id = run.config, run.lake, run.policy_id
    it, n = config.iteration, config.sampling.n
    signals = load_signals(run, candidates, methods)
    verdicts = score_map(lake, it, "verifier")
    references = {c["prompt_id"]: c["reference_answer"] not in (None, "") for c in candidates}
    earlier = earlier_judge_costs(run)
    s_hash = run.sampling_hash
    all_rows = []
    for method in methods:
        scorer = method_scorer(method)
        versions = scorer_versions(lake, it, scorer) if scorer else {}
        rows = []
        for pick in pick_all(method, candidates, signals):
            cost = _engine_cost(method, pick.prompt_id, judge_costs, earlier)
            correct = None
            if references[pick.prompt_id]:
                if pick.candidate_id not in verdicts:
                    raise ValueError(f"candidate {pick.candidate_id} has no verifier score")
                correct = verdicts[pick.candidate_id]["label"] == CORRECT
            rows.append({
                "run_id": config.run_id, "iteration": it, "prompt_id": pick.prompt_id, "method": method,
                "model_id": policy_id, "sampling_hash": s_hash, "n": n, "candidate_id": pick.candidate_id,
                "sample_index": pick.sample_index, "answer": pick.answer, "score": pick.score, "scorer": scorer,
                "scorer_version": versions.get(pick.candidate_id) if scorer else None, "correct": correct,
                **method_work(method, n, config.judge.votes),
                "extra_engine_calls": None if cost is None else cost.engine_calls,
                "extra_generated_tokens": None if cost is None else cost.generated_tokens,
            })
        shard = ids.content_hash("picks", config.run_id, policy_id, s_hash, method)
        lake.write("picks", rows, iteration=it, shard=shard,
                   metadata={"run_id": config.run_id, "method": method, "model_id": policy_id})
        all_rows += rows
    return all_rows


# -- report ---------------------------------------------------------------------------------------
def oracle_lines(candidates: list[dict], n: int, lake: Lake, iteration: int) -> list[str]:
    """pass@n and avg@n of the prompts with references: the ceiling and a random pick, for scale."""
    verdicts = score_map(lake, iteration, "verifier")
    correct: dict[str, int] = {}
    for c in candidates:
        if c["reference_answer"] not in (None, ""):
            correct[c["prompt_id"]] = correct.get(c["prompt_id"], 0) + (verdicts[c["candidate_id"]]["label"] == CORRECT)
    if not correct:
        return ["No prompt of this split has a reference answer: picks are written, accuracy is not measured."]
    counts = list(correct.values())
    return [f"For scale, over the same {len(counts)} prompts (these use the reference): pass@{n} (a pick that "
            f"always finds a correct sample) {pass_at_n(counts, n):.3f}; avg@{n} (a random pick, expected) "
            f"{avg_at_n(counts, n):.3f}."]


def render_report(run: BestOfNRun, table: str, skipped: dict[str, str], context: list[str]) -> str:
    """The markdown report: settings, the table, what was skipped and why."""
    config, policy_id, s = run.config, run.policy_id, run.config.sampling
    lines = [f"# Best-of-{s.n}: {config.run_id}", "",
             f"Policy `{policy_id}` on the `{config.split}` split; {s.n} samples per prompt at T={s.temperature}, "
             f"up to {s.max_tokens} tokens. Judge: {config.judge.model or 'the policy'}, "
             f"{config.judge.votes} vote(s) per pair, {config.judge.attempts} attempt(s) per judgment.", "",
             table, "",
             "Accuracy: share of prompts whose pick the rule verifier finds correct, with a bootstrap 95% CI over "
             "prompts. Method rows show cost on top of the shared sampling row: engine calls are batched "
             "generate calls; RM passes are candidates a reward model read (the four PRM aggregations share one "
             "PRM pass, weighted majority shares the ORM's); judge comparisons are pairwise judgments.", ""]
    lines += context + [""]
    if skipped:
        lines += ["Skipped:", ""] + [f"- {m}: {why}" for m, why in skipped.items()] + [""]
    return "\n".join(lines)


def write_report(run: BestOfNRun, candidates: list[dict], methods: list[str], skipped: dict[str, str],
                 sampling: SamplingCost, rows: list[dict]) -> dict:
    """Write data/reports/<run>/best_of_n.{md,json}: each method's accuracy beside its cost; the
    JSON's content."""
    config = run.config
    summaries = summarise_picks(rows)
    table = render_table(sampling, summaries)
    markdown = render_report(run, table, skipped,
                             oracle_lines(candidates, config.sampling.n, run.lake, config.iteration))
    out_dir = reports_dir_for(config.lake) / config.run_id
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "best_of_n.md").write_text(markdown)
    result = {"config": config.model_dump(), "policy_id": run.policy_id, "methods": methods, "skipped": skipped,
              "sampling": asdict(sampling), "summary": [asdict(s) for s in summaries], "picks": len(rows),
              "table": table, "report": str(out_dir / "best_of_n.md")}
    (out_dir / "best_of_n.json").write_text(json.dumps(result, indent=2, default=str))
    return result
