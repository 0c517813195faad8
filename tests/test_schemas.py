import pyarrow as pa
import pytest

from schemas import TABLES, SchemaError, table_spec
from schemas.evals import METRICS


def test_every_design_table_has_a_versioned_schema():
    assert set(TABLES) == {"prompts", "candidates", "scores", "comparisons", "selections",
                           "models", "evals", "picks"}
    for spec in TABLES.values():
        assert spec.version >= 1
        assert set(spec.key) <= set(spec.columns)
        assert "iteration" in spec.columns


def test_evals_has_the_columns_the_metrics_need():
    cols = set(table_spec("evals").columns)
    assert {"run_id", "iteration", "model_id", "split", "metric", "k", "value", "ci_low",
            "ci_high", "n_problems"} <= cols
    assert {"pass", "avg", "maj", "rm", "greedy"} <= set(METRICS)


def _selection_row(**overrides):
    row = dict(candidate_id="c1", prompt_id="p1", iteration=0, policy_name="keep_correct",
               policy_hash="h", rank=0, weight=1.0)
    row.update(overrides)
    return row


def test_from_rows_builds_a_typed_table():
    table = table_spec("selections").from_rows([_selection_row(), _selection_row(candidate_id="c2")])
    assert table.num_rows == 2
    assert table.schema.field("rank").type == pa.int32()


def test_missing_column_is_named():
    row = _selection_row()
    del row["weight"]
    with pytest.raises(SchemaError, match="missing column 'weight'"):
        table_spec("selections").from_rows([row])


def test_extra_column_is_named():
    with pytest.raises(SchemaError, match="unexpected column 'bogus'"):
        table_spec("selections").from_rows([_selection_row(bogus=1)])


def test_mistyped_value_is_named():
    with pytest.raises(SchemaError, match="column 'rank'"):
        table_spec("selections").from_rows([_selection_row(rank="first")])


def test_validate_names_a_mistyped_arrow_column():
    spec = table_spec("selections")
    good = spec.from_rows([_selection_row()])
    bad = good.set_column(good.schema.get_field_index("weight"), "weight",
                          pa.array(["heavy"], pa.string()))
    with pytest.raises(SchemaError, match="column 'weight' has type string, expected double"):
        spec.validate(bad)


def test_validate_rejects_nulls_in_a_required_column():
    spec = table_spec("selections")
    good = spec.from_rows([_selection_row()])
    bad = good.set_column(0, "candidate_id", pa.array([None], pa.string()))
    with pytest.raises(SchemaError, match="'candidate_id' holds nulls"):
        spec.validate(bad)


def test_validate_reorders_columns_and_casts_all_null_columns():
    spec = table_spec("scores")
    table = pa.table({
        "value": pa.array([None]), "candidate_id": ["c"], "prompt_id": ["p"],
        "iteration": pa.array([1], pa.int32()), "scorer": ["verifier"], "scorer_version": ["1"],
        "label": ["timeout"], "extracted_answer": pa.array([None]),
        "step_scores": pa.array([None]), "detail": ["took too long"],
    })
    out = spec.validate(table)
    assert out.column_names == spec.columns
    assert out.schema.field("value").type == pa.float64()


def test_unknown_table_is_named():
    with pytest.raises(SchemaError, match="unknown table 'bogus'"):
        table_spec("bogus")
