import numpy as np
import pyarrow as pa
import pytest

from labeling.rejects import REASONS, REJECT_FIELDS, REJECTS_SCHEMA, split_valid
from pipelines.formats import REJECTS, SIGNALS, IdSet

KEYS = pa.array(["n001", "n002"])
IMAGES = pa.array(["im0", "im1", "im2"])

# (image_id, source, text, class_key, weight, page_id), expected reason or None.
ROWS = [
    (("im0", "alt_text", "a dog", None, 1.0, None), None),
    ((None, "alt_text", "a dog", None, 1.0, None), "null_image_id"),
    (("", "alt_text", "a dog", None, 1.0, None), "null_image_id"),
    (("im9", "alt_text", "a dog", None, 1.0, None), "unknown_image"),
    (("im1", None, "a dog", None, 1.0, None), "null_source"),
    (("im1", "", "a dog", None, 1.0, None), "null_source"),
    (("im1", "anchor_text", None, None, 1.0, None), "no_evidence"),
    (("im1", "anchor_text", "  \t", "", 1.0, None), "no_evidence"),
    (("im1", "user_feedback", None, "n999", 1.0, None), "unknown_class_key"),
    (("im1", "user_feedback", None, "n002", float("nan"), None), "non_finite_weight"),
    (("im1", "query_click", "dog", None, float("inf"), None), "non_finite_weight"),
    (("im1", "query_click", "dog", None, None, None), "non_finite_weight"),
    (("im2", "page_title", "x" * 11, None, 1.0, "p1"), "text_too_long"),
    (("im2", "page_title", "x" * 10, None, 1.0, "p1"), None),
    (("im2", "user_feedback", None, "n001", -1.0, None), None),
    (("im2", "my_source", "dog", "", 2.0, None), None),  # empty class_key with text: fine
    # Several problems: the first in REASONS order wins.
    ((None, None, None, "n999", float("nan"), None), "null_image_id"),
    (("im9", None, "x" * 50, None, 1.0, None), "unknown_image"),
    (("im1", "alt_text", None, "n999", float("inf"), None), "unknown_class_key"),
    (("im1", "alt_text", "x" * 50, None, float("nan"), None), "non_finite_weight"),
]
FIRST_ROW = 1000


def batch(rows=ROWS) -> pa.RecordBatch:
    schema = pa.schema([f.with_nullable(True) for f in SIGNALS])
    cols = list(zip(*(r for r, _ in rows), strict=True))
    return pa.RecordBatch.from_arrays([pa.array(list(c), f.type) for c, f in zip(cols, schema, strict=True)],
                                      schema=schema)


def split(data=None, **kwargs):
    args = dict(file="signals/part-0.parquet", first_row=FIRST_ROW, known_image_ids=IMAGES,
                known_class_keys=KEYS, max_text_chars=10)
    return split_valid(batch() if data is None else data, **{**args, **kwargs})


def test_every_reason_with_exact_rows() -> None:
    valid, rejects = split()
    expected = [(FIRST_ROW + i, reason) for i, (_, reason) in enumerate(ROWS) if reason]
    assert list(zip(rejects["row"].to_pylist(), rejects["reason"].to_pylist(), strict=True)) == expected
    assert set(rejects["reason"].to_pylist()) == set(REASONS)
    assert rejects["field"].to_pylist() == [REJECT_FIELDS[r] for _, r in expected]
    assert set(rejects["file"].to_pylist()) == {"signals/part-0.parquet"}
    assert rejects.schema == REJECTS_SCHEMA
    assert valid.num_rows + rejects.num_rows == len(ROWS)
    kept = [i for i, (_, reason) in enumerate(ROWS) if reason is None]
    assert valid.to_pylist() == batch().take(kept).to_pylist()
    assert valid.schema == batch().schema


def test_values_render_the_offending_field() -> None:
    _, rejects = split()
    by_row = dict(zip(rejects["row"].to_pylist(), rejects["value"].to_pylist(), strict=True))
    assert by_row[FIRST_ROW + 1] is None and by_row[FIRST_ROW + 2] == ""
    assert by_row[FIRST_ROW + 3] == "im9"
    assert by_row[FIRST_ROW + 8] == "n999"
    assert by_row[FIRST_ROW + 9] == "nan" and by_row[FIRST_ROW + 10] == "inf" and by_row[FIRST_ROW + 11] is None
    assert by_row[FIRST_ROW + 12] == "x" * 11
    _, long = split(batch([(("im0", "alt_text", "y" * 500, None, 1.0, None), "text_too_long")]))
    assert long["value"][0].as_py() == "y" * 100 + "\u2026"


def test_unknown_image_only_checked_when_ids_given() -> None:
    valid, rejects = split(known_image_ids=None)
    assert "unknown_image" not in rejects["reason"].to_pylist()
    assert valid.num_rows + rejects.num_rows == len(ROWS)
    assert rejects.num_rows == sum(r is not None for _, r in ROWS) - 1  # row 3 is fine without an image list


def test_membership_object_accepted() -> None:
    # pipelines.formats.IdSet answers membership with one searchsorted per batch, for huge crawls.
    a = split()
    b = split(known_image_ids=IdSet(IMAGES))
    assert a[0].equals(b[0]) and a[1].equals(b[1])


def test_table_input_and_nothing_rejected() -> None:
    clean = [r for r in ROWS if r[1] is None]
    valid, rejects = split(pa.Table.from_batches([batch(clean)]))
    assert valid.num_rows == len(clean) and rejects.num_rows == 0 and rejects.schema == REJECTS_SCHEMA


def test_counts_add_up_on_random_batches() -> None:
    rng = np.random.default_rng(5)
    pool = [r for r, _ in ROWS]
    for _ in range(20):
        rows = [(pool[i], None) for i in rng.integers(0, len(pool), rng.integers(0, 60))]
        if not rows:
            continue
        valid, rejects = split(batch(rows), first_row=7)
        assert valid.num_rows + rejects.num_rows == len(rows)
        assert rejects["row"].to_pylist() == sorted(rejects["row"].to_pylist())
        assert all(7 <= r < 7 + len(rows) for r in rejects["row"].to_pylist())


def test_missing_column_is_an_error() -> None:
    with pytest.raises(ValueError, match="missing column 'weight'"):
        split(batch().drop_columns(["weight"]))


def test_schema_matches_pipelines_contract() -> None:
    assert REJECTS_SCHEMA.equals(REJECTS)
