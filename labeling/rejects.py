"""Stage 1: split a batch of crawl signals into usable rows and reject rows, each reject with its reason.

Nothing is dropped silently (DESIGN.md): every input row comes back either in the valid table or as one
REJECTS row naming the file, the 0-based row within that file, the offending field, a stable reason and the
offending value. A row that breaks several rules is reported once, under the first reason in ``REASONS``
order, which runs from "this row is about no known image" to "this row's evidence is unusable":

1. ``null_image_id``     ``image_id`` is null or empty.
2. ``unknown_image``     ``image_id`` is not among ``known_image_ids`` (checked only when that is given).
3. ``null_source``       ``source`` is null or empty.
4. ``no_evidence``       ``text`` is null or blank (whitespace only) and ``class_key`` is null or empty.
5. ``unknown_class_key`` ``class_key`` is set but not among ``known_class_keys``.
6. ``non_finite_weight`` ``weight`` is null, NaN or infinite.
7. ``text_too_long``     ``text`` has more than ``max_text_chars`` characters (value: the text, cut to its first
   100 characters plus an ellipsis when longer).

An empty ``class_key`` means "no direct evidence", exactly like a null one; :mod:`labeling.matching` reads it
the same way.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["REASONS", "REJECT_FIELDS", "REJECTS_SCHEMA", "IdMembership", "split_valid"]

REASONS: tuple[str, ...] = (
    "null_image_id",
    "unknown_image",
    "null_source",
    "no_evidence",
    "unknown_class_key",
    "non_finite_weight",
    "text_too_long",
)
"""Reject reasons, in the order they are tested: a row is reported under the first that applies."""

REJECT_FIELDS: dict[str, str] = {
    "null_image_id": "image_id",
    "unknown_image": "image_id",
    "null_source": "source",
    "no_evidence": "text",
    "unknown_class_key": "class_key",
    "non_finite_weight": "weight",
    "text_too_long": "text",
}
"""The column each reason is about (the REJECTS ``field``)."""

REJECTS_SCHEMA = pa.schema(
    [
        pa.field("file", pa.string(), nullable=False),
        pa.field("row", pa.int64(), nullable=False),
        pa.field("field", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("value", pa.string(), nullable=True),
    ]
)
"""Same as ``pipelines.formats.REJECTS`` (labeling may not import pipelines; a test keeps them equal)."""

_REQUIRED = ("image_id", "source", "text", "class_key", "weight")
_PREVIEW_CHARS = 100


class IdMembership(Protocol):
    """Anything that answers "which of these ids are known" in bulk, e.g. ``pipelines.formats.IdSet``."""

    def contains(self, ids: pa.Array | pa.ChunkedArray) -> np.ndarray: ...


def _mask(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean Arrow result as numpy, nulls read as False."""
    return np.asarray(values.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


def _blank(values: pa.Array) -> np.ndarray:
    """Null, or nothing but whitespace."""
    return _mask(pc.or_kleene(pc.is_null(values), pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(values)), 0)))


def _empty(values: pa.Array) -> np.ndarray:
    """Null or the empty string."""
    return _mask(pc.or_kleene(pc.is_null(values), pc.equal(pc.binary_length(values), 0)))


def _known(ids: pa.Array, known: pa.Array | pa.ChunkedArray | IdMembership) -> np.ndarray:
    if isinstance(known, pa.Array | pa.ChunkedArray):
        return _mask(pc.is_in(ids, value_set=known))
    safe = ids.fill_null("")  # IdSet-like objects refuse nulls; null ids were rejected before this test
    return np.asarray(known.contains(safe), dtype=bool)


def _column(table: pa.Table, name: str) -> pa.Array:
    column = table.column(name).combine_chunks()
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if pa.types.is_null(column.type) or pa.types.is_large_string(column.type) or pa.types.is_string_view(column.type):
        column = column.cast(pa.string())
    return column


def _render(reason: str, values: pa.Array) -> pa.Array:
    """The offending value of each reject row of one reason, as text (null where there is none)."""
    if reason == "text_too_long":
        preview = pc.binary_join_element_wise(pc.utf8_slice_codeunits(values, 0, _PREVIEW_CHARS), "\u2026", "")
        return pc.if_else(pc.greater(pc.utf8_length(values), _PREVIEW_CHARS), preview, values)
    return values.cast(pa.string())


def split_valid(
    batch: pa.RecordBatch | pa.Table,
    *,
    file: str,
    first_row: int,
    known_image_ids: pa.Array | pa.ChunkedArray | IdMembership | None,
    known_class_keys: pa.Array | pa.ChunkedArray,
    max_text_chars: int = 2000,
) -> tuple[pa.Table, pa.Table]:
    """(valid rows, reject rows) of a batch of signals; ``first_row`` is the batch's first row in ``file``.

    The valid table keeps the batch's columns and row order. ``known_image_ids`` may be an Arrow array
    (``pc.is_in``, fine for small sets) or any object with ``contains(ids) -> bool ndarray`` such as
    ``pipelines.formats.IdSet``, which avoids rebuilding a hash table of millions of ids per batch.
    """
    table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
    missing = [name for name in _REQUIRED if name not in table.column_names]
    if missing:
        raise ValueError(f"signals batch from {file}: missing column {missing[0]!r}")
    image_id, source, text, class_key = (_column(table, c) for c in ("image_id", "source", "text", "class_key"))
    if isinstance(known_class_keys, pa.ChunkedArray):
        known_class_keys = known_class_keys.combine_chunks()
    weight = table.column("weight").combine_chunks()

    n = table.num_rows
    tests = {
        "null_image_id": lambda: _empty(image_id),
        "unknown_image": lambda: (
            np.zeros(n, dtype=bool) if known_image_ids is None else ~_known(image_id, known_image_ids)
        ),
        "null_source": lambda: _empty(source),
        "no_evidence": lambda: _blank(text) & _empty(class_key),
        "unknown_class_key": lambda: ~_empty(class_key) & ~_mask(pc.is_in(class_key, value_set=known_class_keys)),
        "non_finite_weight": lambda: ~_mask(pc.is_finite(weight.cast(pa.float64()))),
        "text_too_long": lambda: _mask(pc.greater(pc.utf8_length(text), max_text_chars)),
    }
    code = np.full(n, -1, dtype=np.int8)
    for i, reason in enumerate(REASONS):
        open_rows = code < 0
        if not open_rows.any():
            break
        code[open_rows & tests[reason]()] = i

    valid = table.filter(pa.array(code < 0)) if (code >= 0).any() else table
    columns = {"image_id": image_id, "source": source, "text": text, "class_key": class_key, "weight": weight}
    pieces: list[pa.Table] = []
    for i, reason in enumerate(REASONS):
        rows = np.flatnonzero(code == i)
        if not len(rows):
            continue
        take = pa.array(rows)
        pieces.append(
            pa.table(
                [
                    pa.repeat(pa.scalar(file, pa.string()), len(rows)),
                    pa.array(rows + first_row, pa.int64()),
                    pa.repeat(pa.scalar(REJECT_FIELDS[reason], pa.string()), len(rows)),
                    pa.repeat(pa.scalar(reason, pa.string()), len(rows)),
                    _render(reason, columns[REJECT_FIELDS[reason]].take(take)),
                ],
                schema=REJECTS_SCHEMA,
            )
        )
    if not pieces:
        return valid, REJECTS_SCHEMA.empty_table()
    rejects = pa.concat_tables(pieces)
    if len(pieces) > 1:
        rejects = rejects.take(pc.sort_indices(rejects.column("row")))
    return valid, rejects
