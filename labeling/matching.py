"""Stage 2: turn valid signal rows into evidence rows, one per (signal row, class it names).

Text evidence: the text is normalised (:mod:`labeling.text`) and looked up in the taxonomy's lexicon; only
maximal matches count (a match whose word span lies strictly inside another match's span in the same text
is dropped, so "sea lion" is not also evidence for "lion"); each match names every class its term can mean,
with ``ambiguity`` = the number of such classes (homonyms > 1); a class named several times by one text gives
one row, with the smallest ambiguity among its matches; ``n_named`` = the number of distinct classes the
whole text names, homonym readings included.

Direct evidence: a non-empty ``class_key`` gives one row with ambiguity 1, n_named 1 and ``direct`` true. A
row with both text and class_key contributes both kinds.

Speed: crawl texts repeat a lot (a page title reaches every image on the page; queries and anchors come
from few templates), so the lexicon runs once per distinct text of the batch and the results are
expanded back to rows with numpy. Rows whose text names no class and that have no class_key give no
evidence; they are valid signals, not rejects.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from labeling.taxonomy import Taxonomy, gather_csr

__all__ = ["EVIDENCE", "match_signals"]

EVIDENCE = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("class_id", pa.int32(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("weight", pa.float32(), nullable=False),
        pa.field("page_id", pa.string(), nullable=True),
        pa.field("ambiguity", pa.int32(), nullable=False),
        pa.field("n_named", pa.int32(), nullable=False),
        pa.field("direct", pa.bool_(), nullable=False),
    ]
)
"""One row per (signal row, class it names); docs/build.md, "Evidence rows"."""


def _strings(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    return column if column.type == pa.string() else column.cast(pa.string())


def _maximal(found: pa.Table) -> np.ndarray:
    """Mask of matches not strictly inside another match of the same text.

    ``found`` is sorted by (row, start, n_words). A match is inside another iff a longer match shares its
    start (the next match in this order) or an earlier-starting match of the same row ends at or after its
    end (a running maximum of ends, offset by row so that it restarts at every row).
    """
    row = found.column("row").to_numpy()
    start = found.column("start").to_numpy().astype(np.int64)
    end = start + found.column("n_words").to_numpy()
    longer_same_start = np.zeros(len(row), dtype=bool)
    longer_same_start[:-1] = (row[1:] == row[:-1]) & (start[1:] == start[:-1])
    span = int(end.max()) + 1
    reach = row * span + end
    before = np.empty_like(reach)
    before[0] = -1
    np.maximum.accumulate(reach[:-1], out=before[1:])
    return ~(longer_same_start | (before >= reach))


def _text_classes(texts: pa.Array, taxonomy: Taxonomy) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per distinct text: CSR offsets into (class, ambiguity) pairs sorted by class, and n_named per text."""
    n_texts = len(texts)
    lexicon = taxonomy.lexicon()
    found = lexicon.find_array(texts, positions=True)
    empty = np.zeros(0, dtype=np.int32)
    if not found.num_rows:
        return np.zeros(n_texts + 1, dtype=np.int64), empty, empty, np.zeros(n_texts, dtype=np.int32)
    keep = _maximal(found)
    text = found.column("row").to_numpy()[keep]
    term = found.column("term_id").to_numpy()[keep].astype(np.int64)
    t_off, t_ids = lexicon.term_classes()
    counts = t_off[term + 1] - t_off[term]
    n_classes = max(len(taxonomy), 1)
    key = np.repeat(text, counts) * n_classes + gather_csr(t_off, t_ids, term)
    ambiguity = np.repeat(counts, counts)
    order = np.lexsort((ambiguity, key))
    key, ambiguity = key[order], ambiguity[order]
    first = np.ones(len(key), dtype=bool)
    first[1:] = key[1:] != key[:-1]
    pair_text, pair_class = np.divmod(key[first], n_classes)
    n_named = np.bincount(pair_text, minlength=n_texts)
    offsets = np.zeros(n_texts + 1, dtype=np.int64)
    np.cumsum(n_named, out=offsets[1:])
    return offsets, pair_class.astype(np.int32), ambiguity[first].astype(np.int32), n_named.astype(np.int32)


def match_signals(valid: pa.Table | pa.RecordBatch, taxonomy: Taxonomy) -> pa.Table:
    """EVIDENCE rows for the valid signal rows of one batch (output of :func:`labeling.rejects.split_valid`).

    Order: text evidence in signal-row order (classes ascending within a row), then direct evidence in row
    order; the same input gives the same output. A non-empty ``class_key`` missing from the taxonomy raises
    ValueError: such rows belong in rejects, so reaching here is a wiring bug.
    """
    table = pa.Table.from_batches([valid]) if isinstance(valid, pa.RecordBatch) else valid
    n = table.num_rows
    if n == 0:
        return EVIDENCE.empty_table()

    # Text evidence, computed once per distinct text.
    encoded = _strings(table.column("text")).dictionary_encode()
    offsets, pair_class, pair_amb, named = _text_classes(encoded.dictionary, taxonomy)
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    has_text = np.flatnonzero(codes >= 0)
    per_row = named[codes[has_text]]
    text_rows = np.repeat(has_text, per_row)
    pairs = gather_csr(offsets, np.arange(len(pair_class), dtype=np.int64), codes[has_text])
    text_named = np.repeat(per_row, per_row)

    # Direct evidence.
    keys = _strings(table.column("class_key"))
    key_set = pc.fill_null(pc.greater(pc.binary_length(keys), 0), False).to_numpy(zero_copy_only=False)
    direct_rows = np.flatnonzero(key_set)
    direct_class = taxonomy.ids_of(keys.take(pa.array(direct_rows))) if len(direct_rows) else pair_class[:0]
    if (direct_class < 0).any():
        bad = keys[int(direct_rows[np.flatnonzero(direct_class < 0)[0]])].as_py()
        raise ValueError(f"class_key {bad!r} is not in the taxonomy; split_valid should have rejected it")

    n_text, n_direct = len(text_rows), len(direct_rows)
    rows = pa.array(np.concatenate([text_rows, direct_rows]))
    ones = np.ones(n_direct, dtype=np.int32)
    weight = table.column("weight").combine_chunks()
    if weight.type != pa.float32():
        weight = weight.cast(pa.float32())
    return pa.table(
        [
            _strings(table.column("image_id")).take(rows),
            pa.array(np.concatenate([pair_class[pairs], direct_class]).astype(np.int32)),
            _strings(table.column("source")).take(rows),
            weight.take(rows),
            _strings(table.column("page_id")).take(rows),
            pa.array(np.concatenate([pair_amb[pairs], ones]).astype(np.int32)),
            pa.array(np.concatenate([text_named, ones]).astype(np.int32)),
            pa.array(np.concatenate([np.zeros(n_text, dtype=bool), np.ones(n_direct, dtype=bool)])),
        ],
        schema=EVIDENCE,
    )
