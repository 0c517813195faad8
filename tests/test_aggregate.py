import random

import duckdb
import pytest

from tasks.scoring.aggregate import AGGREGATES, aggregate_sql, aggregate_steps


@pytest.mark.parametrize("how, expected", [
    ("min", 0.25), ("last", 0.5), ("product", 0.9 * 0.25 * 0.5), ("mean", (0.9 + 0.25 + 0.5) / 3),
])
def test_each_aggregate(how, expected):
    assert aggregate_steps([0.9, 0.25, 0.5], how) == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize("how", AGGREGATES)
def test_no_steps_is_none(how):
    assert aggregate_steps(None, how) is None
    assert aggregate_steps([], how) is None


def test_product_with_a_zero_is_zero():
    assert aggregate_steps([0.7, 0.0, 0.3], "product") == 0.0


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_step_is_an_error(bad):
    with pytest.raises(ValueError, match="step score 1 is not finite"):
        aggregate_steps([0.5, bad], "min")


def test_null_step_is_an_error():
    with pytest.raises(ValueError, match="step score 0 is null"):
        aggregate_steps([None, 0.5], "mean")


def test_unknown_aggregate_is_named():
    with pytest.raises(ValueError, match="unknown step aggregate 'median'"):
        aggregate_steps([0.5], "median")
    with pytest.raises(ValueError, match="unknown step aggregate 'max'"):
        aggregate_sql("xs", "max")


def test_sql_rejects_a_non_identifier():
    with pytest.raises(ValueError, match="not a column identifier"):
        aggregate_sql("xs); DROP TABLE t; --", "min")


def _random_lists(seed: int) -> list[list[float] | None]:
    rng = random.Random(seed)
    lists: list[list[float] | None] = [None, [], [0.0], [1.0, 0.0, 0.5]]
    for _ in range(200):
        n = rng.randint(1, 12)
        lists.append([rng.choice([rng.random(), rng.uniform(-3, 3), 0.0, 1.0]) for _ in range(n)])
    return lists


@pytest.mark.parametrize("how", AGGREGATES)
def test_sql_matches_python_on_random_lists(how):
    lists = _random_lists(7)
    con = duckdb.connect()
    con.execute("CREATE TABLE t (i INTEGER, step_scores DOUBLE[])")
    con.executemany("INSERT INTO t VALUES (?, ?)", list(enumerate(lists)))
    got = dict(con.execute(f"SELECT i, {aggregate_sql('t.step_scores', how)} FROM t").fetchall())
    assert len(got) == len(lists)
    for i, steps in enumerate(lists):
        expected = aggregate_steps(steps, how)
        if expected is None:
            assert got[i] is None, (i, steps)
        elif how == "mean":  # summation order may differ in the last bit
            assert got[i] == pytest.approx(expected, rel=1e-12, abs=1e-15), (i, steps)
        else:
            assert got[i] == expected, (i, steps)


@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_sql_fails_on_non_finite_steps_like_python(bad):
    column = '"prm__steps"'
    con = duckdb.connect()
    con.execute(f"CREATE TABLE t AS SELECT [0.5, '{bad}'::DOUBLE] AS {column}")
    with pytest.raises(duckdb.Error, match="non-finite or null step score"):
        con.execute(f"SELECT {aggregate_sql(column, 'min')} FROM t").fetchall()
