"""The table contract shared by every schema module: an Arrow schema, its key, its version."""
from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc


class SchemaError(ValueError):
    """A table does not match its declared schema; the message names the column."""


@dataclass(frozen=True)
class TableSpec:
    """One lake table: its name, Arrow schema, key columns and schema version.

    `finite` names float columns (or lists of floats) whose values must be finite: a NaN or an
    infinity there is a SchemaError naming the column and row (nulls stay allowed).
    """

    name: str
    schema: pa.Schema
    key: tuple[str, ...]
    version: int
    finite: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in self.finite:
            index = self.schema.get_field_index(name)
            kind = self.schema.field(name).type if index >= 0 else None
            if kind is not None and (pa.types.is_list(kind) or pa.types.is_large_list(kind)):
                kind = kind.value_type
            if kind is None or not pa.types.is_floating(kind):
                raise ValueError(f"table {self.name!r}: finite column {name!r} is not a float column")

    @property
    def columns(self) -> list[str]:
        """The column names, in schema order."""
        return list(self.schema.names)

    def empty(self) -> pa.Table:
        """An empty table with this schema."""
        return self.schema.empty_table()

    def validate(self, table: pa.Table) -> pa.Table:
        """Return `table` conformed to the schema, or raise SchemaError naming the first bad column.

        Missing, extra and mistyped columns are errors; an all-null column of Arrow type `null`
        (what pyarrow infers from a column of Nones) is cast to the declared type, and columns are
        reordered to schema order.
        """
        names = set(table.column_names)
        for field in self.schema:
            if field.name not in names:
                raise SchemaError(f"table {self.name!r}: missing column {field.name!r}")
        for name in table.column_names:
            if self.schema.get_field_index(name) < 0:
                raise SchemaError(f"table {self.name!r}: unexpected column {name!r}")
        if len(set(table.column_names)) != len(table.column_names):
            dup = next(n for n in table.column_names if table.column_names.count(n) > 1)
            raise SchemaError(f"table {self.name!r}: duplicate column {dup!r}")
        arrays = []
        for field in self.schema:
            column = table.column(field.name)
            if column.type != field.type:
                if pa.types.is_null(column.type):
                    column = column.cast(field.type)
                else:
                    raise SchemaError(
                        f"table {self.name!r}: column {field.name!r} has type {column.type}, "
                        f"expected {field.type}"
                    )
            if not field.nullable and column.null_count:
                raise SchemaError(f"table {self.name!r}: column {field.name!r} holds nulls")
            if field.name in self.finite:
                found = _first_non_finite(column)
                if found is not None:
                    row, value = found
                    raise SchemaError(f"table {self.name!r}: column {field.name!r} holds {value} at "
                                      f"row {row}; only finite numbers (or null) are allowed")
            arrays.append(column)
        return pa.Table.from_arrays(arrays, schema=self.schema)

    def from_rows(self, rows: list[dict]) -> pa.Table:
        """Build a validated table from a list of row dicts (keys must be exactly the columns)."""
        if not rows:
            return self.empty()
        expected = set(self.columns)
        for row in rows:
            keys = set(row)
            if keys != expected:
                missing = sorted(expected - keys)
                extra = sorted(keys - expected)
                if missing:
                    raise SchemaError(f"table {self.name!r}: missing column {missing[0]!r}")
                raise SchemaError(f"table {self.name!r}: unexpected column {extra[0]!r}")
        arrays = []
        for field in self.schema:
            try:
                arrays.append(pa.array([row[field.name] for row in rows], type=field.type))
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as error:
                raise SchemaError(
                    f"table {self.name!r}: column {field.name!r}: {_first_line(error)}"
                ) from None
        return self.validate(pa.Table.from_arrays(arrays, schema=self.schema))


def _first_non_finite(column: pa.ChunkedArray | pa.Array) -> tuple[int, float] | None:
    """(row, value) of the first NaN or infinity in a float or list-of-float column, or None."""
    values, parents = column, None
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        values, parents = pc.list_flatten(column), pc.list_parent_indices(column)
    if len(values) == 0:
        return None
    index = pc.index(pc.fill_null(pc.is_finite(values), True), False).as_py()
    if index < 0:
        return None
    row = index if parents is None else parents[index].as_py()
    return row, values[index].as_py()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
