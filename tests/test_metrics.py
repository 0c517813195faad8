"""Evaluation metrics: pass@k against enumeration, maj@k / rm@k rules, bootstrap CIs,
evaluate_groups on a hand-built set, and evals rows that match the schema."""
from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest

from schemas import table_spec
from tasks.evaluation.metrics import (MetricValue, Sample, avg_at_n, bootstrap_ci, evaluate_groups,
                           greedy_accuracy, maj_at_k, metric_rows, pass_at_k, pass_at_n, rm_at_k)

# ---------------------------------------------------------------- pass@k, avg@n, pass@n


def test_pass_at_k_matches_enumeration_of_all_k_subsets() -> None:
    for n in range(1, 9):
        for c in range(n + 1):
            flags = [True] * c + [False] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(flags, k))
                expected = sum(any(s) for s in subsets) / len(subsets)
                assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12), (n, c, k)


def test_pass_at_k_large_n_matches_exact_fraction() -> None:
    n = 2000
    with pytest.raises(OverflowError):
        float(math.comb(n, 1000))  # the naive ratio of floats would overflow
    for c in (0, 1, 5, 100, 1000, 1990, 1999, 2000):
        for k in (1, 2, 10, 100, 1000, 2000):
            exact = float(1 - Fraction(math.comb(n - c, k), math.comb(n, k)))
            got = pass_at_k(n, c, k)
            assert math.isfinite(got)
            assert got == pytest.approx(exact, rel=1e-9, abs=1e-15), (c, k)


def test_pass_at_k_hand_values() -> None:
    assert pass_at_k(4, 2, 2) == pytest.approx(5 / 6)  # 1 - C(2,2)/C(4,2)
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(5, 0, 3) == 0.0
    assert pass_at_k(5, 3, 3) == 1.0  # n - c < k: every 3-subset holds a correct sample


@pytest.mark.parametrize("n, c, k, message", [
    (8, 2, 9, "k=9 must satisfy 1 <= k <= n=8"),
    (8, 2, 0, "k=0 must satisfy"),
    (8, 9, 2, "c=9 must satisfy 0 <= c <= n=8"),
    (8, -1, 2, "c=-1 must satisfy"),
    (8, 2, 1.0, "k=1.0 is not an integer"),
])
def test_pass_at_k_bad_input(n: int, c: int, k: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pass_at_k(n, c, k)


def test_avg_and_pass_at_n() -> None:
    assert avg_at_n([2, 0, 4], 4) == pytest.approx(0.5)  # (0.5 + 0 + 1) / 3
    assert pass_at_n([2, 0, 4], 4) == pytest.approx(2 / 3)
    by_pass_at_k = np.mean([pass_at_k(4, c, 4) for c in (2, 0, 4)])
    assert pass_at_n([2, 0, 4], 4) == pytest.approx(by_pass_at_k)
    with pytest.raises(ValueError, match="correct count 5 at index 1 is not an integer in"):
        avg_at_n([1, 5], 4)
    with pytest.raises(ValueError, match="correct_counts is empty"):
        pass_at_n([], 4)


# ---------------------------------------------------------------- maj@k


def test_maj_uses_only_the_first_k_samples() -> None:
    answers = ["1", "2", "2", "1", "1"]
    correct = [True, False, False, True, True]
    assert maj_at_k(answers, correct, 1) is True
    assert maj_at_k(answers, correct, 3) is False  # "2" leads 2-1 among the first 3
    assert maj_at_k(answers, correct, 5) is True   # "1" leads 3-2


def test_maj_tie_goes_to_earliest_first_occurrence() -> None:
    # 2-2 tie between "7" (first at 0) and "3" (first at 1)
    assert maj_at_k(["7", "3", "3", "7"], [False, True, True, False], 4) is False
    assert maj_at_k(["3", "7", "7", "3"], [True, False, False, True], 4) is True


def test_maj_unparseable_does_not_vote() -> None:
    correct = [False, False, False, True]
    assert maj_at_k([None, None, None, "5"], correct, 4) is True
    assert maj_at_k([None, None, None, "5"], correct, 3) is False  # nobody voted


def test_weighted_maj_flips_plain_majority() -> None:
    answers, correct = ["1", "1", "2"], [False, False, True]
    assert maj_at_k(answers, correct, 3) is False
    assert maj_at_k(answers, correct, 3, weights=[0.1, 0.2, 0.9]) is True
    # only the first k weights count: with k=2 "2" cannot vote
    assert maj_at_k(answers, correct, 2, weights=[0.1, 0.2, 0.9]) is False


def test_maj_bad_input() -> None:
    with pytest.raises(ValueError, match="k=4 must satisfy 1 <= k <= n=3"):
        maj_at_k(["1", "2", "3"], [True, False, False], 4)
    with pytest.raises(ValueError, match="got 2 correctness flags for 3 answers"):
        maj_at_k(["1", "2", "3"], [True, False], 1)
    with pytest.raises(ValueError, match="weight at index 2 is nan"):
        maj_at_k(["1", "2", "3"], [True, False, False], 1, weights=[1.0, 1.0, math.nan])
    with pytest.raises(ValueError, match="correct=True at index 0 but correct=False at index 2"):
        maj_at_k(["4", "5", " 4"], [True, False, False], 3)


# ---------------------------------------------------------------- rm@k


def test_rm_picks_best_score_ties_to_lower_index() -> None:
    correct = [False, True, False, False]
    assert rm_at_k([0.1, 0.9, 0.9, 0.3], correct, 4) is True   # tie 1 vs 2 → index 1
    assert rm_at_k([0.1, 0.5, 0.9, 0.3], correct, 4) is False  # index 2
    assert rm_at_k([0.1, 0.5, 0.9, 0.3], correct, 2) is True   # index 2 is past k
    assert rm_at_k([-3.0, -1.0, -2.0, 0.0], correct, 3) is True  # negative scores


def test_rm_none_never_beats_a_real_score() -> None:
    correct = [True, False, True]
    assert rm_at_k([None, -5.0, None], correct, 3) is False  # the only real score wins
    assert rm_at_k([None, None, None], correct, 3) is False  # no score: not correct
    assert rm_at_k([None, None, 1.0], correct, 2) is False


def test_rm_bad_input() -> None:
    with pytest.raises(ValueError, match="score at index 3 is NaN"):
        rm_at_k([0.1, 0.2, 0.3, math.nan], [True] * 4, 2)
    with pytest.raises(ValueError, match="k=5 must satisfy 1 <= k <= n=4"):
        rm_at_k([0.1, 0.2, 0.3, 0.4], [True] * 4, 5)
    with pytest.raises(ValueError, match="correct at index 1 is 1, not a bool"):
        rm_at_k([0.1, 0.2], [True, 1], 1)  # type: ignore[list-item]


# ---------------------------------------------------------------- bootstrap


def test_bootstrap_contains_mean_and_is_deterministic() -> None:
    values = [0.0, 1.0, 1.0, 0.5, 0.25, 1.0, 0.0, 0.75, 0.3, 0.9, 0.15]
    low, high = bootstrap_ci(values, n_boot=2000, seed=3)
    assert low < float(np.mean(values)) < high
    assert bootstrap_ci(values, n_boot=2000, seed=3) == (low, high)
    assert bootstrap_ci(values, n_boot=2000, seed=4) != (low, high)


def test_bootstrap_is_percentile_interval_of_resampled_means() -> None:
    values = np.array([0.0, 1.0, 1.0, 0.5, 0.25])
    rng = np.random.default_rng(7)
    means = values[rng.integers(0, 5, size=(500, 5))].mean(axis=1)
    expected = tuple(np.quantile(means, [0.05, 0.95]))
    assert bootstrap_ci(list(values), n_boot=500, alpha=0.1, seed=7) == pytest.approx(expected)


def test_bootstrap_narrows_with_more_problems() -> None:
    small = bootstrap_ci([0.0, 1.0] * 10, seed=0)
    large = bootstrap_ci([0.0, 1.0] * 1000, seed=0)
    assert large[1] - large[0] < (small[1] - small[0]) / 5
    assert large[0] < 0.5 < large[1]


def test_bootstrap_constant_values_and_bad_input() -> None:
    assert bootstrap_ci([0.25]) == (0.25, 0.25)
    assert bootstrap_ci([1.0, 1.0, 1.0]) == (1.0, 1.0)
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match="per-problem value at index 1 is nan"):
        bootstrap_ci([0.0, math.nan])
    with pytest.raises(ValueError, match="alpha=1.5 must lie in"):
        bootstrap_ci([0.0, 1.0], alpha=1.5)


# ---------------------------------------------------------------- evaluate_groups


def _groups() -> dict[str, list]:
    """Three problems, n = 4; expected values are worked out by hand in the test below."""
    return {
        "p1": [
            Sample("5", True, False, True, {"rm": 0.2, "prm": 0.5}),
            Sample("5", True, False, False, {"rm": 0.9, "prm": 0.1}),
            Sample("7", False, False, False, {"rm": 0.9, "prm": 0.8}),
            Sample(None, False, True, False, {"rm": None, "prm": 0.3}),
        ],
        "p2": [  # mappings are accepted too
            {"answer": "3", "correct": False, "unparseable": False, "all_steps_correct": False,
             "scores": {"rm": 0.7, "prm": None}},
            {"answer": " 4", "correct": True, "unparseable": False, "all_steps_correct": True,
             "scores": {"rm": 0.1, "prm": 0.2}},
            {"answer": "4", "correct": True, "unparseable": False, "all_steps_correct": True,
             "scores": {"rm": 0.3, "prm": None}},
            {"answer": "3", "correct": False, "unparseable": False, "all_steps_correct": False,
             "scores": {"rm": 0.7, "prm": None}},
        ],
        "p3": [  # no "prm" key at all: its scores are None
            Sample("garbage", False, True, False, {"rm": -0.5}),
            Sample(None, False, True, False, {"rm": -0.2}),
            Sample("9", False, False, False, {"rm": -0.3}),
            Sample("8", False, False, False, {"rm": -0.1}),
        ],
    }


def test_evaluate_groups_hand_computed() -> None:
    values = evaluate_groups(_groups(), ks=[1, 3], n_boot=200, seed=0)
    got = [(v.metric, v.k, v.scorer) for v in values]
    assert got == [
        ("pass", 1, None), ("maj", 1, None), ("rm", 1, "prm"), ("rm", 1, "rm"),
        ("pass", 3, None), ("maj", 3, None), ("rm", 3, "prm"), ("rm", 3, "rm"),
        ("avg", 4, None), ("pass", 4, None), ("all_steps", 4, None), ("unparseable", 4, None),
    ]
    # per-problem values (p1, p2, p3), worked by hand
    per_problem = {
        ("pass", 1, None): [0.5, 0.5, 0.0],          # c/n with c = 2, 2, 0
        ("maj", 1, None): [1.0, 0.0, 0.0],           # "5" ok; "3" wrong; p3 first is unparseable
        ("rm", 1, "prm"): [1.0, 0.0, 0.0],           # p2 score None; p3 no prm
        ("rm", 1, "rm"): [1.0, 0.0, 0.0],
        ("pass", 3, None): [1.0, 1.0, 0.0],          # n - c = 2 < 3
        ("maj", 3, None): [1.0, 1.0, 0.0],           # "5"; " 4"=="4" beats "3"; p3 only "9" votes
        ("rm", 3, "prm"): [0.0, 1.0, 0.0],           # p1 0.8 at index 2; p2 the one real score
        ("rm", 3, "rm"): [1.0, 0.0, 0.0],            # p1 0.9 tie → index 1; p2 0.7; p3 -0.2 (x)
        ("avg", 4, None): [0.5, 0.5, 0.0],
        ("pass", 4, None): [1.0, 1.0, 0.0],
        ("all_steps", 4, None): [0.25, 0.5, 0.0],
        ("unparseable", 4, None): [0.25, 0.0, 0.5],
    }
    for value in values:
        expected = per_problem[(value.metric, value.k, value.scorer)]
        assert value.value == pytest.approx(sum(expected) / 3), value
        assert (value.ci_low, value.ci_high) == bootstrap_ci(expected, n_boot=200, seed=0)
        assert value.ci_low <= value.value <= value.ci_high
        assert value.n_problems == 3


def test_evaluate_groups_pass_at_n_not_repeated_and_all_steps_skipped() -> None:
    groups = {"a": [Sample("1", True, False), Sample("2", False, False)],
              "b": [Sample("2", False, False), Sample(None, False, True)]}
    values = evaluate_groups(groups, ks=[2, 1], n_boot=50)
    assert [(v.metric, v.k) for v in values] == [
        ("pass", 2), ("maj", 2), ("pass", 1), ("maj", 1), ("avg", 2), ("unparseable", 2)]
    by_key = {(v.metric, v.k): v.value for v in values}
    assert by_key[("pass", 2)] == pytest.approx(0.5)
    assert by_key[("maj", 2)] == pytest.approx(0.5)  # a: tie → "1" (correct); b: "2"
    assert by_key[("unparseable", 2)] == pytest.approx(0.25)


def test_evaluate_groups_errors() -> None:
    with pytest.raises(ValueError, match="k=5 exceeds n=4 samples per prompt"):
        evaluate_groups(_groups(), ks=[1, 5])
    with pytest.raises(ValueError, match="k=3 is listed twice"):
        evaluate_groups(_groups(), ks=[3, 3])
    short = _groups()
    short["p3"] = short["p3"][:3]
    with pytest.raises(ValueError, match="prompt p3 has 3 samples but prompt p1 has 4"):
        evaluate_groups(short, ks=[1])
    nan = _groups()
    nan["p2"][1]["scores"] = {"rm": math.nan}
    with pytest.raises(ValueError, match="prompt p2: score at index 1 is NaN"):
        evaluate_groups(nan, ks=[1])
    partial = _groups()
    partial["p1"][2] = Sample("7", False, False, None, {})
    with pytest.raises(ValueError, match="prompt p1: all_steps_correct is unknown for sample 2"):
        evaluate_groups(partial, ks=[1])
    both = _groups()
    both["p3"][0] = Sample(None, True, True)
    with pytest.raises(ValueError, match="prompt p3 sample 0: marked both unparseable and correct"):
        evaluate_groups(both, ks=[1])
    missing = _groups()
    missing["p2"][0] = Sample(None, False, False)
    with pytest.raises(ValueError, match="prompt p2 sample 0: parseable sample has answer None"):
        evaluate_groups(missing, ks=[1])
    with pytest.raises(ValueError, match="groups is empty"):
        evaluate_groups({}, ks=[1])
    with pytest.raises(ValueError, match="prompt p1 has no samples"):
        evaluate_groups({"p1": []}, ks=[1])


# ---------------------------------------------------------------- greedy and rows


def test_greedy_accuracy() -> None:
    value = greedy_accuracy([True, False, True, True], n_boot=100)
    assert (value.metric, value.k, value.scorer, value.n_problems) == ("greedy", 1, None, 4)
    assert value.value == pytest.approx(0.75)
    assert (value.ci_low, value.ci_high) == bootstrap_ci([1.0, 0.0, 1.0, 1.0], n_boot=100)
    with pytest.raises(ValueError, match="correct at index 0 is 1, not a bool"):
        greedy_accuracy([1, 0])  # type: ignore[list-item]


def test_metric_value_checks() -> None:
    with pytest.raises(ValueError, match="unknown metric 'best'"):
        MetricValue("best", 1, None, 0.5, None, None, 3)
    with pytest.raises(ValueError, match="scorer must be set for 'rm'"):
        MetricValue("rm", 1, None, 0.5, None, None, 3)


def test_metric_rows_match_evals_schema() -> None:
    values = evaluate_groups(_groups(), ks=[1, 3], n_boot=50)
    values.append(greedy_accuracy([True, False, True], n_boot=50))
    rows = metric_rows(values, run_id="run-1", iteration=2, model_id="m-abc", split="eval",
                       benchmark="demo-arith", eval_hash="e1")
    table = table_spec("evals").from_rows(rows)
    assert table.num_rows == 13
    assert table.column("metric").to_pylist()[-1] == "greedy"
    assert table.column("scorer").to_pylist()[2:4] == ["prm", "rm"]
    assert set(table.column("iteration").to_pylist()) == {2}
    assert set(table.column("eval_hash").to_pylist()) == {"e1"}
    with pytest.raises(ValueError, match="metric 'greedy' k=1 scorer=None repeats"):
        metric_rows([values[-1], values[-1]], "run-1", 2, "m-abc", "eval", "demo-arith", "e1")
