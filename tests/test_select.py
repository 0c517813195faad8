"""Selection policies on hand-built lakes: exact kept sets, ranks and weights."""
from __future__ import annotations

import math

import pyarrow as pa
import pytest

from schemas import table_spec
from schemas.policy import (
    PRESETS, AnyOf, BestOfN, Dedup, KeepAllStepsCorrect, KeepCorrect, MajorityPseudoLabel, MaxPerPrompt,
    PassRateBand, PolicyError, PrlWeights, PrmMinThreshold, ScoreRef, SelectionPolicy, Subsample,
    Threshold, ThresholdOrTopK, TopK, canonical, policy_from_dict, policy_from_yaml, read_policy,
)
from tasks.lake.store import Lake
from tasks.selection.select import apply_policy, policy_hash, score_column, scored_candidates, select
from tests.helpers import (
    EXTRA, SCORERS, WORLD, build, c, cid, name_of, pid, score_rows,
)

@pytest.fixture
def frame(lake: Lake) -> pa.Table:
    build(lake, WORLD)
    return scored_candidates(lake, 0)


def kept(rows: list[dict]) -> list[tuple[str, int]]:
    """(name, rank) of each kept row, in output order."""
    names = name_of()
    return [(names[r["candidate_id"]], r["rank"]) for r in rows]


def run(frame, *steps, name="p") -> list[tuple[str, int]]:
    return kept(apply_policy(frame, SelectionPolicy(name=name, steps=list(steps))))


def order(names: list[str]) -> list[str]:
    """Names sorted the way apply_policy orders prompts (by prompt_id)."""
    return sorted(names, key=lambda n: pid(n[0]))


def by_prompt(expected: dict[str, list[str]]) -> list[tuple[str, int]]:
    """Expected output: prompts in prompt_id order, each prompt's names ranked as listed."""
    out = []
    for problem in sorted(expected, key=pid):
        out += [(n, rank) for rank, n in enumerate(expected[problem])]
    return out


# -- the frame ---------------------------------------------------------------------------------
def test_scored_candidates_joins_every_scorer_by_id(frame):
    assert frame.num_rows == 13
    expected = ["candidate_id", "prompt_id", "iteration", "sample_index", "text", "steps",
                "reference_answer"]
    for scorer in sorted(SCORERS):
        expected += [score_column(scorer, f)
                     for f in ("version", "value", "label", "answer", "steps")]
    assert frame.column_names == expected
    rows = {r["candidate_id"]: r for r in frame.to_pylist()}
    a2 = rows[cid("a", 2)]
    assert (a2["text"], a2["reference_answer"], a2["sample_index"]) == ("x=2\n#### 2", "1", 2)
    assert (a2["verifier__label"], a2["verifier__answer"], a2["verifier__value"]) == (
        "incorrect", "2", 0.0)
    assert (a2["orm__value"], a2["prm__steps"], a2["prl__value"], a2["prl__steps"]) == (
        0.9, [0.5, 0.6], -1.0, [-0.5, -1.0])
    assert rows[cid("d", 3)]["reference_answer"] is None
    assert rows[cid("d", 3)]["verifier__answer"] == " 04"
    keys = [(r["prompt_id"], r["sample_index"]) for r in frame.to_pylist()]
    assert keys == sorted(keys)


def test_scored_candidates_reads_one_iteration_and_chosen_scorers(lake):
    build(lake, WORLD)
    build(lake, {"z": ("9", [WORLD["b"][1][0]])}, iteration=1)
    one = scored_candidates(lake, 1, scorers=["orm"])
    assert one.column("candidate_id").to_pylist() == [cid("z", 0)]
    assert [n for n in one.column_names if "__" in n] == [
        "orm__version", "orm__value", "orm__label", "orm__answer", "orm__steps"]
    with pytest.raises(ValueError, match="scorer 'judge' has no scores for iteration 0"):
        scored_candidates(lake, 0, scorers=["judge"])


def test_a_duplicate_score_row_is_an_error(lake):
    """Lake.write refuses the duplicate; a shard copied in by another tool can still hold one."""
    import pyarrow.parquet as pq

    build(lake, WORLD)
    dup = score_rows("b", 1, WORLD["b"][1][1], 0)["orm"]
    pq.write_table(table_spec("scores").from_rows([dup]), lake.partition_dir("scores", 0) / "again.parquet")
    message = f"candidate {cid('b', 1)} has more than one 'orm' score row"
    with pytest.raises(ValueError, match=message):
        scored_candidates(lake, 0)


def test_a_candidate_without_its_prompt_is_an_error(lake):
    build(lake, WORLD)
    orphan = lake.read("candidates", 0).slice(0, 1).to_pylist()[0]
    orphan.update(prompt_id="nope", candidate_id="orphan")
    lake.write("candidates", [orphan], 0, shard="orphan")
    message = "candidate orphan: prompt nope is not in the prompts table"
    with pytest.raises(ValueError, match=message):
        scored_candidates(lake, 0)


# -- one step at a time ------------------------------------------------------------------------
def test_keep_correct(frame):
    assert run(frame, KeepCorrect()) == by_prompt({"a": ["a0", "a1", "a3"], "b": ["b0", "b1"]})


def test_keep_all_steps_correct(frame):
    assert run(frame, KeepAllStepsCorrect()) == by_prompt({"a": ["a0", "a3"], "b": ["b0"]})


def test_threshold_on_a_value(frame):
    got = run(frame, Threshold(score=ScoreRef(scorer="orm"), min=0.4))
    assert got == by_prompt({"a": ["a1", "a2", "a3"], "c": ["c0", "c1"], "d": ["d0", "d2", "d3"]})


def test_threshold_on_aggregated_steps(frame):
    ref = ScoreRef(scorer="prm", field="steps", aggregate="mean")
    # means: a 0.85 0.625 0.55 0.8; b0 0.6; b1 has no steps (null never passes)
    assert run(frame, Threshold(score=ref, min=0.6)) == by_prompt(
        {"a": ["a0", "a1", "a3"], "b": ["b0"]})


def test_threshold_or_top_k_keeps_each_prompts_best_below_the_threshold(frame):
    # orm: a .2 .9 .9 .5, b .1 .3, c .4 .4, d .5 .1 .4 .4 .1; at least .45: a1 a2 a3 d0
    step = ThresholdOrTopK(score=ScoreRef(scorer="orm"), min=0.45)
    assert run(frame, step) == by_prompt(
        {"a": ["a1", "a2", "a3"], "b": ["b1"], "c": ["c0"], "d": ["d0"]})
    # after keep_correct: a0 a1 a3, b0 b1; k=2 adds a prompt's second best, in the current order
    assert run(frame, KeepCorrect(), step) == by_prompt({"a": ["a1", "a3"], "b": ["b1"]})
    two = ThresholdOrTopK(score=ScoreRef(scorer="orm"), min=0.45, k=2)
    assert run(frame, KeepCorrect(), two) == by_prompt({"a": ["a1", "a3"], "b": ["b0", "b1"]})
    # a null score never passes the threshold nor ranks: b1 has no prm steps
    mean = ScoreRef(scorer="prm", field="steps", aggregate="mean")
    assert run(frame, KeepCorrect(), ThresholdOrTopK(score=mean, min=0.9)) == by_prompt(
        {"a": ["a0"], "b": ["b0"]})


def test_any_of_keeps_what_any_branch_keeps_in_the_current_order(frame):
    # after keep_correct (a0 a1 a3, b0 b1): orm at least 0.8 keeps a1; every step right a0 a3 b0
    confident = Threshold(score=ScoreRef(scorer="orm"), min=0.8)
    either = AnyOf(steps=[confident, KeepAllStepsCorrect()])
    assert run(frame, KeepCorrect(), either) == by_prompt({"a": ["a0", "a1", "a3"], "b": ["b0"]})
    # after a ranking step the order it set is kept: top 2 by orm are a1 a3 and b1 b0
    ranked = TopK(score=ScoreRef(scorer="orm"), k=2)
    assert run(frame, KeepCorrect(), ranked) == by_prompt({"a": ["a1", "a3"], "b": ["b1", "b0"]})
    either = AnyOf(steps=[Threshold(score=ScoreRef(scorer="orm"), min=0.4), KeepAllStepsCorrect()])
    assert run(frame, KeepCorrect(), ranked, either) == by_prompt({"a": ["a1", "a3"], "b": ["b0"]})
    # a threshold or a prompt's best is threshold_or_top_k
    orm = ScoreRef(scorer="orm")
    assert (run(frame, AnyOf(steps=[Threshold(score=orm, min=0.45), TopK(score=orm, k=1)]))
            == run(frame, ThresholdOrTopK(score=orm, min=0.45)))
    # branches nest; a branch that keeps nothing adds nothing
    nested = AnyOf(steps=[AnyOf(steps=[confident, Subsample(share=0.0)]), Subsample(share=0.0)])
    assert run(frame, KeepCorrect(), nested) == by_prompt({"a": ["a1"]})


def test_any_of_names_the_branch_whose_scorer_is_absent(frame):
    step = AnyOf(steps=[KeepCorrect(), Threshold(score=ScoreRef(scorer="judge"), min=0.0)])
    with pytest.raises(ValueError, match=r"step 0 \(any_of\) branch 1 \(threshold\) needs scorer 'judge'"):
        run(frame, step)


def hashed_share(candidate_id: str, seed: int) -> float:
    """Where a candidate falls in [0, 1) for subsample: the first 16 hex digits of SHA-256."""
    import hashlib
    text = '["subsample",%d,"%s"]' % (seed, candidate_id)
    return int(hashlib.sha256(text.encode()).hexdigest()[:16], 16) / 16 ** 16


def test_subsample_keeps_the_candidates_its_hash_places_below_the_share(frame):
    names = name_of()
    every = [names[r["candidate_id"]] for r in frame.to_pylist()]
    assert run(frame, Subsample(share=0.0)) == []
    assert [n for n, _ in run(frame, Subsample(share=1.0))] == every
    for seed in (0, 1):
        place = {names[c]: hashed_share(c, seed) for c in frame.column("candidate_id").to_pylist()}
        half = [n for n, _ in run(frame, Subsample(share=0.5, seed=seed))]
        assert half == [n for n in every if place[n] < 0.5]
        assert 0 < len(half) < len(every)
        # the same candidate is kept whatever ran before: after keep_correct, the same ones
        assert [n for n, _ in run(frame, KeepCorrect(), Subsample(share=0.5, seed=seed))] == [
            n for n, _ in run(frame, KeepCorrect()) if place[n] < 0.5]
    assert ([n for n, _ in run(frame, Subsample(share=0.5, seed=0))]
            != [n for n, _ in run(frame, Subsample(share=0.5, seed=1))])


def test_prm_min_threshold(frame):
    assert run(frame, PrmMinThreshold(min=0.6)) == by_prompt({"a": ["a0", "a3"], "b": ["b0"]})


def test_best_of_n_ties_go_to_the_lower_sample_index(frame):
    got = run(frame, BestOfN(score=ScoreRef(scorer="orm")))
    assert got == by_prompt({"a": ["a1"], "b": ["b1"], "c": ["c0"], "d": ["d0"]})


def test_top_k_ranks_best_first(frame):
    got = run(frame, TopK(score=ScoreRef(scorer="orm"), k=2))
    assert got == by_prompt({"a": ["a1", "a2"], "b": ["b1", "b0"], "c": ["c0", "c1"],
                             "d": ["d0", "d2"]})
    last = ScoreRef(scorer="prm", field="steps", aggregate="last")
    got = run(frame, TopK(score=last, k=3))
    assert got == by_prompt({"a": ["a3", "a0", "a2"], "b": ["b0"], "c": ["c0", "c1"],
                             "d": ["d0", "d1", "d2"]})


def test_majority_pseudo_label_on_prompts_without_reference(frame):
    # d votes: 3 (d1, d4) against 4 (d2, " 04" d3): a tie, so the earlier first occurrence wins
    assert run(frame, MajorityPseudoLabel()) == by_prompt({
        "a": ["a0", "a1", "a2", "a3"], "b": ["b0", "b1"], "c": ["c0", "c1"], "d": ["d1", "d4"]})
    assert run(frame, MajorityPseudoLabel(referenced="drop")) == by_prompt({"d": ["d1", "d4"]})
    assert run(frame, MajorityPseudoLabel(referenced="vote")) == by_prompt({
        "a": ["a0", "a1", "a3"], "b": ["b0", "b1"], "c": ["c0"], "d": ["d1", "d4"]})


def test_majority_pseudo_label_weighted_by_a_score(frame):
    step = MajorityPseudoLabel(referenced="drop", weight=ScoreRef(scorer="orm"))
    assert run(frame, step) == by_prompt({"d": ["d2", "d3"]})  # sigmoid weights: "4" 1.197 against "3" 1.050


def test_majority_votes_over_all_samples_not_just_survivors(frame):
    # after max_per_prompt(2) only d0, d1 survive; the vote over all five still says "3"
    vote = MajorityPseudoLabel(referenced="drop", weight=ScoreRef(scorer="orm"))
    steps = [MaxPerPrompt(m=2), vote]
    assert run(frame, *steps) == []
    assert run(frame, MaxPerPrompt(m=3), steps[1]) == by_prompt({"d": ["d2"]})


def test_pass_rate_band(frame):
    # solve rates over all samples: a 0.75, b 1.0, c 0.0, d 0.0
    assert run(frame, PassRateBand()) == by_prompt({"a": ["a0", "a1", "a2", "a3"]})
    assert run(frame, PassRateBand(low=0.75)) == []
    assert run(frame, PassRateBand(high=0.75)) == []
    assert run(frame, PassRateBand(low=0.5, high=1.0)) == by_prompt({"a": ["a0", "a1", "a2", "a3"]})


def test_pass_rate_band_counts_samples_dropped_by_earlier_steps(frame):
    # keep_correct leaves only correct a's; a's rate is still 3/4, b's still 1
    assert run(frame, KeepCorrect(), PassRateBand()) == by_prompt({"a": ["a0", "a1", "a3"]})


def test_dedup_exact_and_normalised(frame):
    a_only = PassRateBand()
    assert run(frame, a_only, Dedup(mode="exact")) == by_prompt({"a": ["a0", "a1", "a2"]})
    assert run(frame, a_only, Dedup(mode="normalised")) == by_prompt({"a": ["a0", "a2"]})


def test_dedup_keeps_the_lowest_sample_index_in_the_current_ranking(frame):
    # orm ranking of a: a1, a2, a3, a0; a0/a1/a3 are one normalised text, a0 is kept
    steps = [PassRateBand(), TopK(score=ScoreRef(scorer="orm"), k=4), Dedup(mode="normalised")]
    assert run(frame, *steps) == by_prompt({"a": ["a2", "a0"]})


def test_max_per_prompt(frame):
    assert run(frame, MaxPerPrompt(m=1)) == by_prompt({"a": ["a0"], "b": ["b0"], "c": ["c0"],
                                                       "d": ["d0"]})
    assert run(frame, KeepCorrect(), MaxPerPrompt(m=2)) == by_prompt(
        {"a": ["a0", "a1"], "b": ["b0", "b1"]})


def weights(frame, *steps) -> dict[str, float]:
    names = name_of()
    rows = apply_policy(frame, SelectionPolicy(name="w", steps=list(steps)))
    return {names[r["candidate_id"]]: r["weight"] for r in rows}


def test_weight_is_one_without_prl_weights(frame):
    assert weights(frame, KeepCorrect()) == {"a0": 1.0, "a1": 1.0, "a3": 1.0, "b0": 1.0, "b1": 1.0}


def test_prl_weights(frame):
    assert weights(frame, KeepCorrect(), PrlWeights()) == {
        "a0": 0.5, "a1": 1.5, "a3": 0.5, "b0": 0.0, "b1": 0.0}
    assert weights(frame, KeepCorrect(), PrlWeights(normalise="mean")) == {
        "a0": 1.0, "a1": 3.0, "a3": 1.0, "b0": 0.0, "b1": 0.0}
    steps_last = ScoreRef(scorer="prl", field="steps", aggregate="last")
    assert weights(frame, KeepCorrect(), PrlWeights(score=steps_last, clip_max=0.45)) == {
        "a0": 0.4, "a1": 0.2, "a3": 0.45, "b0": 0.0, "b1": 0.0}
    got = weights(frame, PrlWeights(clip_min=0.25, normalise="prompt_mean"), KeepCorrect())
    assert got == pytest.approx({"a0": 0.6, "a1": 1.8, "a3": 0.6, "b0": 1.0, "b1": 1.0})


def test_prl_weights_refuse_a_zero_mean(frame):
    with pytest.raises(ValueError, match="prompt .* mean weight is 0.0"):
        weights(frame, KeepCorrect(), PrlWeights(normalise="prompt_mean"))


# -- errors ------------------------------------------------------------------------------------
def test_an_absent_scorer_is_named_with_its_step(lake):
    build(lake, WORLD)
    frame = scored_candidates(lake, 0, scorers=["verifier", "orm"])
    policy = SelectionPolicy(name="needs-prm", steps=[KeepCorrect(), PrmMinThreshold(min=0.5)])
    with pytest.raises(ValueError, match=r"step 1 \(prm_min_threshold\) needs scorer 'prm', "
                                         r"which is absent \(scorers present: orm, verifier\)"):
        apply_policy(frame, policy)


def test_a_candidate_without_a_score_row_is_named(lake):
    build(lake, WORLD, skip={("c", 1): ("orm",)})
    frame = scored_candidates(lake, 0)
    assert frame.num_rows == 13
    with pytest.raises(ValueError, match=f"candidate {cid('c', 1)} has no 'orm' score"):
        run(frame, Threshold(score=ScoreRef(scorer="orm"), min=0.0))


def test_nan_scores_name_the_candidate(lake, monkeypatch):
    """Lake.write refuses NaN scores, but a shard written by another tool (or before the scores
    table declared its finite columns) can hold one: selection's own guard names the candidate."""
    import dataclasses

    import schemas

    unchecked = dataclasses.replace(schemas.TABLES["scores"], finite=())
    monkeypatch.setitem(schemas.TABLES, "scores", unchecked)
    world = {**WORLD, "b": ("2", [WORLD["b"][1][0], c("b1", "correct", "2", math.nan,
                                                       [0.5, math.nan], 0.0, [0.0], 0.0)])}
    build(lake, world)
    monkeypatch.undo()
    frame = scored_candidates(lake, 0)
    with pytest.raises(ValueError, match=f"candidate {cid('b', 1)} has a non-finite 'orm' value"):
        run(frame, BestOfN(score=ScoreRef(scorer="orm")))
    with pytest.raises(ValueError, match=f"candidate {cid('b', 1)} 'prm' steps: step score 1"):
        run(frame, PrmMinThreshold(min=0.1))


def test_duplicate_candidates_in_a_frame_are_an_error(frame):
    rows = frame.to_pylist()
    message = f"candidate {rows[0]['candidate_id']} appears more than once"
    with pytest.raises(ValueError, match=message):
        apply_policy(rows + rows[:1], PRESETS["keep_correct"])


def test_apply_policy_takes_a_plain_row_list():
    rows = [dict(candidate_id=f"k{i}", prompt_id="p", iteration=3, sample_index=i,
                 orm__value=v) for i, v in enumerate([0.1, 0.7, 0.7, 0.2])]
    policy = SelectionPolicy(name="top2", steps=[TopK(score=ScoreRef(scorer="orm"), k=2)])
    got = apply_policy(rows, policy)
    digest = policy_hash(policy)
    assert got == [
        dict(candidate_id="k1", prompt_id="p", iteration=3, policy_name="top2",
             policy_hash=digest, rank=0, weight=1.0),
        dict(candidate_id="k2", prompt_id="p", iteration=3, policy_name="top2",
             policy_hash=digest, rank=1, weight=1.0),
    ]
    table_spec("selections").from_rows(got)  # exactly the table's columns and types


# -- policy configs ----------------------------------------------------------------------------
def test_policy_hash_ignores_key_order_and_explicit_defaults(tmp_path):
    implicit = policy_from_dict({"name": "rft", "steps": [
        {"kind": "keep_correct"}, {"kind": "pass_rate_band"},
        {"kind": "dedup", "mode": "normalised"}, {"m": 4, "kind": "max_per_prompt"}]})
    explicit = policy_from_dict({"steps": [
        {"scorer": "verifier", "kind": "keep_correct"},
        {"kind": "pass_rate_band", "high": 1, "low": 0.0, "scorer": "verifier"},
        {"mode": "normalised", "kind": "dedup"}, {"kind": "max_per_prompt", "m": 4}],
        "name": "rft"})
    path = tmp_path / "rft.yaml"
    path.write_text("name: rft\nsteps:\n  - kind: keep_correct\n  - {kind: pass_rate_band}\n"
                    "  - {kind: dedup, mode: normalised}\n  - {kind: max_per_prompt, m: 4}\n")
    assert implicit == explicit == read_policy(path) == PRESETS["rft"]
    assert policy_hash(implicit) == policy_hash(explicit) == policy_hash(PRESETS["rft"])
    assert policy_hash(PRESETS["rft"]) == "31930ca9fc2cf287"  # pinned: selections depend on it
    changed = policy_from_dict({**canonical(implicit), "steps": canonical(implicit)["steps"][:3]
                                + [{"kind": "max_per_prompt", "m": 5}]})
    assert policy_hash(changed) != policy_hash(implicit)
    assert policy_from_dict(canonical(changed)) == changed


@pytest.mark.parametrize("config, message", [
    ({"name": "x", "steps": [{"kind": "keep_correct", "scorr": "v"}]},
     r"unknown key 'scorr' in steps\[0\]$"),
    ({"name": "x", "steps": [{"kind": "dedup"}], "extra": 1}, "unknown key 'extra' in the policy"),
    ({"name": "x", "steps": [{"kind": "top_k", "k": 2, "score": {"scorer": "orm", "agg": "min"}}]},
     r"unknown key 'agg' in steps\[0\].score"),
    ({"name": "x", "steps": [{"kind": "best_of_5"}]}, "unknown step kind 'best_of_5'"),
    ({"name": "x", "steps": [{"kind": "threshold", "min": 0.5,
                              "score": {"scorer": "prm", "field": "steps"}}]},
     "aggregate .* is required when field is 'steps'"),
    ({"name": "x", "steps": [{"kind": "top_k", "k": 0, "score": {"scorer": "orm"}}]},
     r"steps\[0\].k: Input should be greater than or equal to 1"),
    ({"name": "x", "steps": [{"kind": "threshold_or_top_k", "min": -0.2, "k": 0,
                              "score": {"scorer": "confidence"}}]},
     r"steps\[0\].k: Input should be greater than or equal to 1"),
    ({"name": "x", "steps": [{"kind": "threshold_or_top_k", "k": 1}]}, r"missing key 'score' in steps\[0\]"),
    ({"name": "x", "steps": [{"kind": "subsample", "share": 1.5}]},
     r"steps\[0\].share: Input should be less than or equal to 1"),
    ({"name": "x", "steps": [{"kind": "any_of", "steps": [{"kind": "keep_correct"}]}]},
     r"steps\[0\].steps: List should have at least 2 items"),
    ({"name": "x", "steps": [{"kind": "any_of", "steps": [{"kind": "keep_correct"}, {"kind": "prl_weights"}]}]},
     r"steps\[0\]: prl_weights sets weights, it is not a filter"),
    ({"name": "x", "steps": [{"kind": "any_of", "steps": [{"kind": "dedup"}, {"kind": "top"}]}]},
     r"unknown step kind 'top' in steps\[0\].steps\[1\]"),
    ({"name": "x", "steps": [{"kind": "any_of", "steps": [{"kind": "dedup"}, {"kind": "threshold", "min": 1}]}]},
     r"missing key 'score' in steps\[0\].steps\[1\]$"),
    ({"name": "x", "steps": [{"kind": "pass_rate_band", "low": 0.6, "high": 0.4}]},
     "need low < high"),
    ({"name": "x", "steps": []}, "steps: List should have at least 1 item"),
    ({"steps": [{"kind": "dedup"}]}, "missing key 'name' in the policy"),
    ({"name": "x", "steps": [{"kind": "prl_weights"}, {"kind": "prl_weights"}]},
     "at most one prl_weights step"),
])
def test_bad_configs_are_named(config, message):
    with pytest.raises(PolicyError, match=message):
        policy_from_dict(config)


def test_yaml_that_is_not_a_mapping_is_an_error():
    with pytest.raises(PolicyError, match="must be a mapping, got list"):
        policy_from_yaml("- kind: dedup\n")


# -- against the lake --------------------------------------------------------------------------
def test_full_pipeline_end_to_end_and_idempotent(lake):
    build(lake, {**WORLD, **EXTRA})
    policy = policy_from_yaml("""
        name: rft-2
        steps:
          - kind: keep_correct
          - kind: pass_rate_band
          - {kind: dedup, mode: normalised}
          - {kind: max_per_prompt, m: 2}
    """)
    # keep_correct: a0 a1 a3 b0 b1 e0 e2 e3; band drops b (rate 1); dedup: a1 a3 copy a0, e3 e0
    expected = by_prompt({"a": ["a0"], "e": ["e0", "e2"]})
    first = select(lake, 0, policy)
    assert (first.candidates, first.prompts, first.kept, first.prompts_kept) == (17, 5, 3, 2)
    assert first.policy_hash == policy_hash(policy)
    stored = lake.read("selections", 0)
    stored_rows = sorted(stored.to_pylist(), key=lambda r: (r["prompt_id"], r["rank"]))
    assert kept(stored_rows) == expected
    assert {(r["policy_name"], r["policy_hash"], r["iteration"], r["weight"])
            for r in stored_rows} == {("rft-2", policy_hash(policy), 0, 1.0)}
    assert lake.file_metadata(first.path)["policy_hash"] == policy_hash(policy)

    again = select(lake, 0, policy)
    assert again == first
    assert lake.shards("selections", 0) == [first.path]
    assert lake.read("selections", 0).num_rows == 3

    other = select(lake, 0, PRESETS["keep_correct"])
    assert other.kept == 8
    assert len(lake.shards("selections", 0)) == 2
    assert lake.read("selections", 0).num_rows == 11


def test_a_rerun_that_keeps_nothing_removes_the_old_selection(lake):
    build(lake, WORLD)
    result = select(lake, 0, PRESETS["keep_correct"])
    assert result.kept == 5 and result.path.exists()
    wrong = [{**row, "label": "incorrect", "value": 0.0}
             for row in lake.read("scores", 0).to_pylist() if row["scorer"] == "verifier"]
    lake.write("scores", wrong, 0, shard="scores-verifier")  # replaces the verifier shard
    rerun = select(lake, 0, PRESETS["keep_correct"])
    assert (rerun.kept, rerun.prompts_kept, rerun.path) == (0, 0, None)
    assert lake.read("selections", 0).num_rows == 0


def test_select_on_an_empty_iteration_is_an_error(lake):
    build(lake, WORLD)
    with pytest.raises(ValueError, match="no candidates in iteration 4"):
        select(lake, 4, PRESETS["keep_correct"])


def test_a_reused_selection_is_redone_when_new_candidates_arrive(lake):
    build(lake, {"b": WORLD["b"], "c": WORLD["c"]})
    first = select(lake, 0, PRESETS["keep_correct"], reuse=True)
    assert (first.kept, first.candidates) == (2, 4)
    build(lake, {"f": ("7", [c("f0", "correct", "7", 0.1, [0.6], 0.0, [0.0], 1.0),
                             c("f1", "correct", "7", 0.2, [0.6], 0.0, [0.0], 1.0)])}, tag="-f")
    again = select(lake, 0, PRESETS["keep_correct"], reuse=True)
    assert (again.kept, again.candidates, again.prompts_kept) == (4, 6, 2)
    assert lake.read("selections", 0).num_rows == 4
    assert lake.shards("selections", 0) == [first.path]


def test_a_reused_selection_is_redone_when_a_score_changes(lake):
    build(lake, WORLD)
    assert select(lake, 0, PRESETS["keep_correct"], reuse=True).kept == 5
    wrong = [{**row, "label": "incorrect", "value": 0.0, "scorer_version": "2"}
             for row in lake.read("scores", 0).to_pylist()
             if row["scorer"] == "verifier" and row["candidate_id"] == cid("b", 0)]
    rest = [row for row in lake.read("scores", 0).to_pylist()
            if row["scorer"] == "verifier" and row["candidate_id"] != cid("b", 0)]
    lake.write("scores", wrong + rest, 0, shard="scores-verifier")  # replaces the verifier shard
    assert select(lake, 0, PRESETS["keep_correct"], reuse=True).kept == 4


def test_a_selection_with_unchanged_inputs_is_reused_without_writing(lake):
    build(lake, WORLD)
    first = select(lake, 0, PRESETS["keep_correct"], reuse=True)
    stamp = first.path.stat().st_mtime_ns
    again = select(lake, 0, PRESETS["keep_correct"], reuse=True)
    assert again == first and first.path.stat().st_mtime_ns == stamp
