"""Bring a table read from a user's file to an exact contract schema, or fail with a one-line reason.

Readers accept what a careful user could reasonably have written (int64 ids that fit int32, large_string,
float64 weights, dictionary-encoded strings, an all-null column) and cast it; anything else is a
FormatError naming the file, the column and the problem, e.g. "expected int32, got string".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.formats.errors import FormatError

Data = TypeVar("Data", pa.Table, pa.RecordBatch)
Extra = Literal["drop", "error"]

_STRINGS = (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view)
_BINARIES = (
    pa.types.is_binary,
    pa.types.is_large_binary,
    pa.types.is_binary_view,
    pa.types.is_fixed_size_binary,
)
_LISTS = (
    pa.types.is_list,
    pa.types.is_large_list,
    pa.types.is_fixed_size_list,
    pa.types.is_list_view,
    pa.types.is_large_list_view,
)


def _any(tests, type_: pa.DataType) -> bool:
    return any(test(type_) for test in tests)


def castable(actual: pa.DataType, expected: pa.DataType) -> bool:
    """Whether `actual` may stand for `expected` after a cast that keeps every value's meaning."""
    if actual.equals(expected) or pa.types.is_null(actual):
        return True
    if pa.types.is_dictionary(actual):
        return castable(actual.value_type, expected)
    if pa.types.is_integer(expected):
        return pa.types.is_integer(actual)
    if pa.types.is_floating(expected):
        return pa.types.is_integer(actual) or pa.types.is_floating(actual)
    if pa.types.is_string(expected):
        return _any(_STRINGS, actual)
    if pa.types.is_binary(expected):
        return _any(_BINARIES, actual)
    if pa.types.is_list(expected):
        return _any(_LISTS, actual) and castable(actual.value_type, expected.value_type)
    return False


def _type_name(type_: pa.DataType) -> str:
    if pa.types.is_list(type_) or pa.types.is_large_list(type_):
        return f"list<{_type_name(type_.value_type)}>"
    return str(type_)


def check_schema(
    actual: pa.Schema,
    expected: pa.Schema,
    path: str,
    *,
    defaults: Mapping[str, object] | None = None,
    extra: Extra = "drop",
) -> list[str]:
    """Check column names and types before reading any data; return the expected columns present.

    A missing column is allowed only when it is nullable (filled with nulls) or has a default.
    """
    defaults = defaults or {}
    present: list[str] = []
    for field in expected:
        indices = actual.get_all_field_indices(field.name)
        if len(indices) > 1:
            raise FormatError(path, field.name, f"column appears {len(indices)} times")
        if not indices:
            if field.nullable or field.name in defaults:
                continue
            raise FormatError(path, field.name, "missing column")
        got = actual.field(indices[0]).type
        if not castable(got, field.type):
            raise FormatError(path, field.name, f"expected {_type_name(field.type)}, got {_type_name(got)}")
        present.append(field.name)
    if extra == "error":
        unexpected = [name for name in actual.names if expected.get_field_index(name) < 0]
        if unexpected:
            raise FormatError(path, unexpected[0], "unexpected column")
    return present


def _first_row(mask: pa.Array | pa.ChunkedArray) -> int:
    return int(pc.index(mask, True).as_py())


def _list_row(column: pa.Array | pa.ChunkedArray, flat_mask: pa.Array | pa.ChunkedArray) -> int:
    """Row of a list column holding the first flattened item where `flat_mask` is true."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return int(pc.list_parent_indices(column)[_first_row(flat_mask)].as_py())


def _overflow_problem(column: pa.Array | pa.ChunkedArray, expected: pa.DataType, row_offset: int) -> str:
    """Name the first value that does not fit an integer type (the cast already failed)."""
    is_list = pa.types.is_list(expected)
    target = expected.value_type if is_list else expected
    values = pc.list_flatten(column) if is_list else column
    if pa.types.is_dictionary(values.type):
        values = values.cast(values.type.value_type)
    info = np.iinfo(f"{'' if pa.types.is_signed_integer(target) else 'u'}int{target.bit_width}")
    as_float = values.cast(pa.float64())  # compares every integer type against the bounds
    mask = pc.or_(pc.less(as_float, float(info.min)), pc.greater(as_float, float(info.max)))
    if not pc.any(mask).as_py():
        return f"cannot cast to {_type_name(expected)}"
    flat = _first_row(mask)
    row = _list_row(column, mask) if is_list else flat
    return f"value {values[flat].as_py()} at row {row + row_offset} does not fit {target}"


def _cast(
    column: pa.Array | pa.ChunkedArray, field: pa.Field, path: str, row_offset: int
) -> pa.Array | pa.ChunkedArray:
    if column.type == field.type and str(column.type) == str(field.type):  # str() sees list item names
        return column
    target = field.type.value_type if pa.types.is_list(field.type) else field.type
    # Integer casts are checked for overflow; float casts may round (a float64 weight into float32).
    safe = not pa.types.is_floating(target)
    try:
        return pc.cast(column, field.type, safe=safe)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        if pa.types.is_integer(target):
            raise FormatError(path, field.name, _overflow_problem(column, field.type, row_offset)) from exc
        raise FormatError(path, field.name, f"cannot cast {_type_name(column.type)}: {exc}") from exc


def _check_nulls(column: pa.Array | pa.ChunkedArray, field: pa.Field, path: str, row_offset: int) -> None:
    if field.nullable:
        return
    if column.null_count:
        row = _first_row(pc.is_null(column)) + row_offset
        raise FormatError(path, field.name, f"null at row {row} in a required column")
    if pa.types.is_list(field.type):
        flat = pc.list_flatten(column)
        if flat.null_count:
            row = _list_row(column, pc.is_null(flat)) + row_offset
            raise FormatError(path, field.name, f"null list item at row {row}")


def conform(
    data: Data,
    expected: pa.Schema,
    path: str,
    *,
    defaults: Mapping[str, object] | None = None,
    row_offset: int = 0,
    extra: Extra = "drop",
) -> Data:
    """Return `data` with exactly the `expected` schema: columns in order, types cast, required values set.

    `row_offset` is the file row of `data`'s first row, so that messages about a batch name file rows.
    """
    check_schema(data.schema, expected, path, defaults=defaults, extra=extra)
    defaults = defaults or {}
    columns = []
    for field in expected:
        if field.name in data.schema.names:
            column = _cast(data.column(field.name), field, path, row_offset)
        elif field.name in defaults:
            column = pa.repeat(pa.scalar(defaults[field.name], field.type), data.num_rows)
        else:
            column = pa.nulls(data.num_rows, field.type)
        _check_nulls(column, field, path, row_offset)
        columns.append(column)
    return type(data).from_arrays(columns, schema=expected)
