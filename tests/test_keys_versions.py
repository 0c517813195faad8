"""Keys and versions name everything that changes a row's value (issue #14, item 8).

Each test is a repro of one gap (a key that let two different rows share it, or a version that
let a changed input silently reuse old rows), written to fail on the code before the fix.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from schemas import table_spec
from schemas.generation import PromptFormat, SamplingConfig
from tasks.generation.generate import Completion
from tasks.lake.store import Lake
from tasks.scoring.judge import GenerativeJudge, OracleJudge
from tasks.scoring.judge_stage import judge_candidates

COMPARISONS_KEY = table_spec("comparisons").key


def group(prompt_id: str, n: int) -> list[dict]:
    """n candidates of one prompt, as the judge stage reads them."""
    return [{"candidate_id": f"{prompt_id}-c{i}", "prompt_id": prompt_id, "sample_index": i,
             "text": f"answer {i}", "problem": f"question {prompt_id}"} for i in range(n)]


def keys(rows: Sequence[dict], key: Sequence[str] = COMPARISONS_KEY) -> set[tuple]:
    return {tuple(row[k] for k in key) for row in rows}


class Backend:
    """A judge backend that always answers `\\boxed{1}` and counts its calls."""

    name = "scripted"

    def __init__(self) -> None:
        self.calls = 0

    def generate(self, prompts: Sequence[str], sampling: SamplingConfig,
                 seeds: Sequence[int]) -> list[list[Completion]]:
        self.calls += 1
        return [[Completion("Response 1 is better. \\boxed{1}", [], None, None, "stop")] for _ in prompts]

    def close(self) -> None:
        pass


# -- comparisons: seed, k and the judge's version are in the key -----------------------------------
def test_two_knockouts_with_different_seeds_keep_all_rows_under_distinct_keys(lake: Lake) -> None:
    candidates = [c for p in ("p1", "p2", "p3") for c in group(p, 2)]
    oracle = OracleJudge({c["candidate_id"]: True for c in candidates})
    for seed in (0, 1):
        report = judge_candidates(lake, oracle, candidates, 0, seed=seed, scorer=f"knockout_seed{seed}")
        assert report.comparisons == 3
    rows = lake.read("comparisons").to_pylist()
    assert len(rows) == 6  # nothing overwritten, nothing lost
    assert len(keys(rows)) == 6  # version 2's key gave these 6 rows 3 keys
    assert {r["seed"] for r in rows} == {0, 1}
    assert sorted((r["prompt_id"], r["seed"]) for r in rows) == sorted(
        (p, s) for p in ("p1", "p2", "p3") for s in (0, 1))


def test_knockouts_with_different_votes_k_have_distinct_keys(lake: Lake) -> None:
    candidates = group("p", 2)
    oracle = OracleJudge({c["candidate_id"]: True for c in candidates})
    judge_candidates(lake, oracle, candidates, 0, votes_k=1, scorer="k1")
    judge_candidates(lake, oracle, candidates, 0, votes_k=3, scorer="k3")
    rows = lake.read("comparisons").to_pylist()
    assert len(rows) == 1 + 3
    assert len(keys(rows)) == 4  # vote 0 of k=1 and vote 0 of k=3 used to share a key
    assert sorted(r["votes_k"] for r in rows) == [1, 3, 3, 3]


def test_a_judge_with_other_settings_is_another_judge_never_a_reuse(lake: Lake) -> None:
    """The judge model's id alone was the judge version: a new temperature, attempt budget or
    template silently reused the old rankings."""
    from tasks.scoring.judge import stored_judge_version

    candidates = group("p", 2)

    def judge(**changes: object) -> GenerativeJudge:
        settings = {"sampling": SamplingConfig(n=1, temperature=0.7, max_tokens=32), "max_attempts": 2, **changes}
        return GenerativeJudge(Backend(), **settings)  # type: ignore[arg-type]

    judge_candidates(lake, judge(), candidates, 0, judge_version="model-a", scorer="judge")
    again = judge_candidates(lake, judge(), candidates, 0, judge_version="model-a", scorer="judge")
    assert again.prompts_skipped == 1  # the very same judge: resumed
    for changed in (judge(sampling=SamplingConfig(n=1, temperature=0.2, max_tokens=32)), judge(max_attempts=3),
                    judge(fmt=PromptFormat(template="Judge this:\n{problem}"))):
        with pytest.raises(ValueError, match="already has a 'judge' score from another tournament"):
            judge_candidates(lake, changed, candidates, 0, judge_version="model-a", scorer="judge")
    other = judge(sampling=SamplingConfig(n=1, temperature=0.2, max_tokens=32))
    judge_candidates(lake, other, candidates, 0, judge_version="model-a", scorer="judge_cold")
    rows = lake.read("comparisons").to_pylist()
    assert len(rows) == 2 and len(keys(rows)) == 2
    assert {r["judge_version"] for r in rows} == {stored_judge_version(judge(), "model-a"),
                                                  stored_judge_version(other, "model-a")}
    assert all(r["judge_version"].startswith("model-a+") for r in rows)


def test_the_cost_counting_wrapper_keeps_the_judge_version() -> None:
    from tasks.scoring.judge import stored_judge_version
    from tasks.selection.best_of_n import CountingBackend, PromptCostJudge

    counter = CountingBackend(Backend())
    inner = GenerativeJudge(counter, SamplingConfig(n=1, temperature=0.7))
    wrapped = PromptCostJudge(inner, counter, {})
    assert wrapped.version == inner.version
    assert stored_judge_version(wrapped, "m") == stored_judge_version(inner, "m") != "m"


def test_the_same_tournament_under_a_second_scorer_name_replays_its_judgments(lake: Lake) -> None:
    """Its comparisons used to be judged and written again under the same keys."""
    candidates = [c for p in ("p1", "p2") for c in group(p, 4)]
    oracle = OracleJudge({c["candidate_id"]: c["sample_index"] % 2 == 1 for c in candidates})
    first = judge_candidates(lake, oracle, candidates, 0, scorer="judge_a")
    calls = oracle.calls
    second = judge_candidates(lake, oracle, candidates, 0, scorer="judge_b")
    assert oracle.calls == calls and second.replayed == first.comparisons == 6 and second.comparisons == 0
    rows = lake.read("comparisons").to_pylist()
    assert len(rows) == 6 and len(keys(rows)) == 6
    scores = lake.read("scores").to_pylist()
    by_scorer = {name: {r["candidate_id"]: r["value"] for r in scores if r["scorer"] == name}
                 for name in ("judge_a", "judge_b")}
    assert by_scorer["judge_a"] == by_scorer["judge_b"] and len(by_scorer["judge_a"]) == 8


def test_a_crash_between_comparisons_and_scores_costs_no_judge_call(lake: Lake) -> None:
    candidates = group("p", 4)
    oracle = OracleJudge({c["candidate_id"]: c["sample_index"] == 2 for c in candidates})
    judge_candidates(lake, oracle, candidates, 0)
    comparisons = lake.read("comparisons").to_pylist()
    scores = lake.read("scores").to_pylist()
    for shard in lake.shards("scores"):
        shard.unlink()  # as if the stage died after writing the comparisons
    calls = oracle.calls
    rerun = judge_candidates(lake, oracle, candidates, 0)
    assert oracle.calls == calls and rerun.replayed == 3 and rerun.comparisons == 0
    assert lake.read("comparisons").to_pylist() == comparisons
    assert sorted(lake.read("scores").to_pylist(), key=lambda r: r["candidate_id"]) == sorted(
        scores, key=lambda r: r["candidate_id"])


def test_a_prompt_whose_group_changed_is_refused_not_ranked_twice(lake: Lake) -> None:
    candidates = group("p", 5)
    oracle = OracleJudge({c["candidate_id"]: True for c in candidates})
    judge_candidates(lake, oracle, candidates[:4], 0)
    with pytest.raises(ValueError, match="prompt p: 4 of its 5 candidates already have a 'judge' score but "
                                         "candidate p-c4 has none"):
        judge_candidates(lake, oracle, candidates, 0)
    assert lake.read("scores").num_rows == 4


# -- scores: a changed version is refused, or replaced, never reused -------------------------------
class VersionedScorer:
    """A scorer whose value is its version's number, for watching reuse."""

    name = "fake"

    def __init__(self, version: str) -> None:
        self.version = version
        self.calls = 0

    def score(self, candidates: Sequence[dict]) -> list[dict]:
        from tasks.scoring.scorer import score_row

        self.calls += 1
        return [score_row(c, self, value=float(self.version)) for c in candidates]


def plain_candidates(n: int) -> list[dict]:
    return [{"candidate_id": f"c{i}", "prompt_id": f"p{i // 2}", "iteration": 0, "sample_index": i % 2}
            for i in range(n)]


def test_a_stale_version_is_refused_or_replaced_keeping_one_row_per_candidate(lake: Lake) -> None:
    from tasks.scoring.score import score_candidates

    candidates = plain_candidates(4)
    score_candidates(lake, VersionedScorer("1"), candidates, 0)
    other = {"candidate_id": "c0", "prompt_id": "p0", "iteration": 0, "scorer": "another", "scorer_version": "x",
             "value": 9.0, "label": None, "extracted_answer": None, "step_scores": None, "detail": None}
    lake.write("scores", [other], iteration=0)
    with pytest.raises(ValueError, match="candidate c0 already has a 'fake' score of version '1', not '2'"):
        score_candidates(lake, VersionedScorer("2"), candidates, 0)
    scorer = VersionedScorer("2")
    report = score_candidates(lake, scorer, candidates, 0, replace_stale=True)
    assert (report.scored, report.skipped, report.replaced) == (4, 0, 4)
    rows = lake.read("scores").to_pylist()
    fake = [r for r in rows if r["scorer"] == "fake"]
    assert sorted((r["candidate_id"], r["scorer_version"], r["value"]) for r in fake) == [
        (f"c{i}", "2", 2.0) for i in range(4)]
    assert [r for r in rows if r["scorer"] == "another"] == [other]  # other scorers' rows stay
    again = VersionedScorer("2")
    assert score_candidates(lake, again, candidates, 0, replace_stale=True).skipped == 4 and again.calls == 0


def test_the_verifier_version_names_its_timeout() -> None:
    from tasks.scoring.score import VerifierScorer

    assert VerifierScorer(timeout_s=5).version == VerifierScorer(timeout_s=5.0).version
    assert VerifierScorer(timeout_s=5).version != VerifierScorer(timeout_s=30).version
    assert VerifierScorer("math").version != VerifierScorer("exact").version
    assert VerifierScorer(extractors=("boxed",)).version != VerifierScorer().version


def carded_folder(root: Path, name: str, model_id: str, architecture: str) -> Path:
    """A model folder whose id comes from its Flywheel card (no weights needed)."""
    folder = root / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": [architecture], "num_labels": 1}))
    (folder / "flywheel_card.json").write_text(json.dumps({"model_id": model_id}))
    return folder


def test_reward_model_versions_name_the_model_the_prompt_format_and_the_prm_separator(tmp_path: Path) -> None:
    from tasks.scoring.reward_model import ORMScorer, PRMScorer

    orm = carded_folder(tmp_path, "orm", "orm-1", "LlamaForSequenceClassification")
    orm2 = carded_folder(tmp_path, "orm2", "orm-2", "LlamaForSequenceClassification")
    prm = carded_folder(tmp_path, "prm", "prm-1", "LlamaForTokenClassification")
    chat = PromptFormat(kind="chat", template="{problem}")
    assert ORMScorer(orm).version != ORMScorer(orm2).version
    assert ORMScorer(orm).version != ORMScorer(orm, prompt_format=chat).version
    assert ORMScorer(orm).version == ORMScorer(orm, step_separator="\n\n").version  # the ORM reads no steps
    assert PRMScorer(prm).version != PRMScorer(prm, prompt_format=chat).version
    assert PRMScorer(prm).version != PRMScorer(prm, step_separator="\n\n").version
    assert "orm-1" in ORMScorer(orm).version


def test_the_math_shepherd_version_names_the_verifier_timeout() -> None:
    from tasks.scoring.math_shepherd import MathShepherdScorer

    sampling = SamplingConfig(n=2, temperature=1.0, max_tokens=8)
    versions = []
    for timeout in (5.0, 30.0):
        scorer = MathShepherdScorer(Backend(), sampling, model_id="policy", timeout_s=timeout, workers=1)
        versions.append(scorer.version)
        scorer.close()
    assert versions[0] != versions[1]


# -- PRL: the version names the reference model, the format, eta and the outcome rewards ----------
def write_verifier_rows(lake: Lake, candidates: Sequence[dict], version: str,
                        values: dict[str, float | None]) -> None:
    lake.write("scores", [{"candidate_id": c["candidate_id"], "prompt_id": c["prompt_id"], "iteration": 0,
                           "scorer": "verifier", "scorer_version": version, "value": values[c["candidate_id"]],
                           "label": None, "extracted_answer": None, "step_scores": None, "detail": None}
                          for c in candidates], iteration=0)


def test_the_prl_version_names_reference_format_eta_and_outcome_version(lake: Lake, tmp_path: Path) -> None:
    from tasks.scoring.score import PRLScorer

    ref_a = carded_folder(tmp_path, "a", "ref-a", "LlamaForCausalLM")
    ref_b = carded_folder(tmp_path, "b", "ref-b", "LlamaForCausalLM")

    def version(**changes: object) -> str:
        settings: dict = {"reference_path": str(ref_a), "eta": 1.0, "prompt_format": None, "outcome_version": "v1"}
        settings.update(changes)
        return PRLScorer(lake, 0, **settings).version

    base = version()
    assert base == version()
    assert base != version(reference_path=str(ref_b))
    assert base != version(prompt_format=PromptFormat(template="Problem: {problem}\n"))
    assert base != version(eta=2.0)
    assert base != version(outcome_version="v2")
    # without outcome_version, the version follows the candidates' verifier rows
    candidates = plain_candidates(2)
    write_verifier_rows(lake, candidates, "v2", {"c0": 1.0, "c1": 0.0})
    found = PRLScorer(lake, 0, str(ref_a))
    found.prepare(candidates)
    assert found.version == version(outcome_version="v2")
    write_verifier_rows(lake, [{"candidate_id": "c9", "prompt_id": "p9"}], "v3", {"c9": 1.0})
    with pytest.raises(ValueError, match="PRL reads one verifier version, but the candidates' verifier scores "
                                         "have 2: 'v2' and 'v3'"):
        PRLScorer(lake, 0, str(ref_a)).prepare(candidates + [{"candidate_id": "c9"}])


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two tiny reference models that differ (one layer or two)."""
    import torch

    from tasks.prompts.tiny_model import TinyModelConfig, build_model, build_tokenizer

    torch.set_num_threads(1)
    tokenizer = build_tokenizer()
    folders = []
    for layers in (1, 2):
        folder = tmp_path_factory.mktemp(f"reference-{layers}")
        config = TinyModelConfig(hidden_size=64, num_layers=layers, num_heads=2, intermediate_size=64)
        build_model(tokenizer, config, seed=layers).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders.append(folder)
    return folders[0], folders[1]


def prl_candidates(tokenizer: object) -> list[dict]:
    rows = []
    for i, text in enumerate(["1+2=3\n3\n", "1+2=4\n4\n", "3\n"]):
        token_ids = tokenizer(text, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
        rows.append({"candidate_id": f"c{i}", "prompt_id": "p", "iteration": 0, "sample_index": i, "text": text,
                     "steps": text.split("\n")[:-1], "token_ids": token_ids,
                     "token_logprobs": [-1.0] * len(token_ids),
                     "step_token_ends": [j for j, ch in enumerate(text) if ch == "\n"],
                     "problem": "1+2", "reference_answer": "3"})
    return rows


def test_prl_rows_of_another_reference_model_are_refused_or_rescored(lake: Lake, references) -> None:  # noqa: ANN001
    """The version was only eta: after the reference model changed, the old PRL rows were reused."""
    from tasks.prompts.tiny_model import build_tokenizer
    from tasks.scoring.score import PRLScorer, score_candidates

    ref_a, ref_b = references
    candidates = prl_candidates(build_tokenizer())
    write_verifier_rows(lake, candidates, "verifier-v", {"c0": 1.0, "c1": 0.0, "c2": 1.0})
    first = score_candidates(lake, PRLScorer(lake, 0, str(ref_a)), candidates, 0)
    assert first.scored == 3
    old = {r["candidate_id"]: r for r in lake.read("scores").to_pylist() if r["scorer"] == "prl"}
    with pytest.raises(ValueError, match="candidate c0 already has a 'prl' score of version"):
        score_candidates(lake, PRLScorer(lake, 0, str(ref_b)), candidates, 0)
    scorer = PRLScorer(lake, 0, str(ref_b))
    report = score_candidates(lake, scorer, candidates, 0, replace_stale=True)
    assert (report.scored, report.skipped, report.replaced) == (3, 0, 3)
    new = {r["candidate_id"]: r for r in lake.read("scores").to_pylist() if r["scorer"] == "prl"}
    assert sorted(new) == ["c0", "c1", "c2"]  # one row per candidate
    assert {r["scorer_version"] for r in new.values()} == {scorer.version} != {old["c0"]["scorer_version"]}
    assert all(new[c]["value"] == old[c]["value"] for c in new)  # the same advantages...
    assert all(new[c]["step_scores"] != old[c]["step_scores"] for c in new)  # ...another reference's KL
    # the same settings again: resumed, nothing rescored
    assert score_candidates(lake, PRLScorer(lake, 0, str(ref_b)), candidates, 0).skipped == 3


# -- picks: the iteration is in the key -------------------------------------------------------------
def test_picks_of_one_run_in_two_iterations_have_distinct_keys(lake: Lake) -> None:
    row = {"run_id": "run", "prompt_id": "p", "method": "majority", "model_id": "m", "sampling_hash": "s",
           "n": 4, "candidate_id": "c", "sample_index": 0, "answer": "3", "score": 2.0, "scorer": None,
           "scorer_version": None, "correct": True, "rm_passes": 0, "judge_comparisons": 0,
           "extra_engine_calls": 0, "extra_generated_tokens": 0}
    for iteration in (0, 1):
        lake.write("picks", [{**row, "iteration": iteration, "candidate_id": f"c{iteration}"}],
                   iteration=iteration)
    assert lake.read("picks").num_rows == 2
    assert len(lake.existing_keys("picks")) == 2
