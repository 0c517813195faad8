"""Late aggregation of per-step scores (PRM, PRL, step verifier) into one number per candidate.

The same four aggregates exist twice: `aggregate_steps` in Python (selection time) and
`aggregate_sql` as a DuckDB expression over a DOUBLE[] column (ad-hoc queries over the lake).
An empty or null list aggregates to null; a NaN or infinite step score is an error in both.
"""
from __future__ import annotations

import math
import re
from typing import Sequence

AGGREGATES = ("min", "last", "product", "mean")
_NAME = r'(?:[A-Za-z_][A-Za-z0-9_]*|"[^"]+")'
_IDENTIFIER = re.compile(rf"^{_NAME}(?:\.{_NAME})?$")


def check_aggregate(how: str) -> str:
    """Return `how` when it names a known aggregate, else raise ValueError naming it."""
    if how not in AGGREGATES:
        raise ValueError(f"unknown step aggregate {how!r} (known: {', '.join(AGGREGATES)})")
    return how


def aggregate_steps(step_scores: Sequence[float] | None, how: str) -> float | None:
    """One number from per-step scores: their min, last, product or mean; None when there are none.

    A null, NaN or infinite step score raises ValueError naming its index.
    """
    check_aggregate(how)
    if step_scores is None or len(step_scores) == 0:
        return None
    values = []
    for index, score in enumerate(step_scores):
        if score is None:
            raise ValueError(f"step score {index} is null")
        value = float(score)
        if not math.isfinite(value):
            raise ValueError(f"step score {index} is not finite: {value}")
        values.append(value)
    if how == "min":
        return min(values)
    if how == "last":
        return values[-1]
    if how == "product":
        result = 1.0
        for value in values:  # left to right, as the SQL list_reduce does
            result *= value
        return result
    return sum(values) / len(values)


def aggregate_sql(column: str, how: str) -> str:
    """A DuckDB expression computing `aggregate_steps(column, how)` over a DOUBLE[] column.

    `column` is an identifier, optionally qualified (`s.step_scores`) or double-quoted
    (`"prm__steps"`). Null or empty lists give NULL; a NaN or infinite element (or a null one)
    makes the query fail with an error naming the column.
    """
    check_aggregate(how)
    if not _IDENTIFIER.match(column):
        raise ValueError(f"not a column identifier: {column!r}")
    if how == "min":
        value = f"list_min({column})"
    elif how == "last":
        value = f"{column}[-1]"
    elif how == "product":
        value = f"list_reduce({column}, lambda acc, x: acc * x, 1.0::DOUBLE)"
    else:
        value = f"list_avg({column})"
    message = f"non-finite or null step score in {column}".replace("'", "''")
    bad = (
        f"len(list_filter({column}, lambda x: x IS NULL OR isnan(x) OR isinf(x))) > 0"
    )
    return (
        f"(CASE WHEN {column} IS NULL OR len({column}) = 0 THEN NULL::DOUBLE "
        f"WHEN {bad} THEN error('{message}') "
        f"ELSE ({value})::DOUBLE END)"
    )
