import pickle

import pyarrow as pa
import pytest

from labeling.evidence import FEATURES, FEATURES_SCHEMA
from labeling.taxonomy import TAXONOMY_SCHEMA
from pipelines.formats import (
    CANDIDATES,
    CLASSES,
    IMAGES,
    NOISE_CLASSES,
    NOISE_IMAGES,
    REJECTS,
    SCHEMA_VERSION,
    SHARD,
    SIGNALS,
    SOURCES,
    TAXONOMY,
    TRUTH,
    VERIFIED,
    FormatError,
    castable,
    conform,
)

I32, I64, F32, S, B = pa.int32(), pa.int64(), pa.float32(), pa.string(), pa.binary()

EXPECTED = {
    "IMAGES": (IMAGES, {"image_id": S, "url": S, "content": B, "width": I32, "height": I32}, {"content"}),
    "SIGNALS": (
        SIGNALS,
        {"image_id": S, "source": S, "text": S, "class_key": S, "weight": F32, "page_id": S},
        {"text", "class_key", "page_id"},
    ),
    "VERIFIED": (VERIFIED, {"image_id": S, "class_key": S, "correct": pa.bool_()}, set()),
    "TRUTH": (TRUTH, {"image_id": S, "labels": pa.list_(I32)}, set()),
    "CLASSES": (
        CLASSES,
        {
            "class_id": I32,
            "key": S,
            "name": S,
            "parents": pa.list_(I32),
            "threshold": F32,
            "candidates": I64,
            "selected": I64,
            "precision": F32,
            "precision_low": F32,
            "precision_high": F32,
        },
        {"precision", "precision_low", "precision_high"},
    ),
    "SHARD": (
        SHARD,
        {"image_id": S, "url": S, "content": B, "labels": pa.list_(I32), "scores": pa.list_(F32), "split": S},
        {"content"},
    ),
    "REJECTS": (REJECTS, {"file": S, "row": I64, "field": S, "reason": S, "value": S}, {"value"}),
    "NOISE_CLASSES": (
        NOISE_CLASSES,
        {
            "class_id": I32,
            "n_images": I64,
            "noise_rate": F32,
            "noise_low": F32,
            "noise_high": F32,
            "method": S,
        },
        set(),
    ),
    "NOISE_IMAGES": (NOISE_IMAGES, {"image_id": S, "class_id": I32, "distance": F32, "p_noisy": F32}, set()),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_schema_matches_design(name):
    schema, types, nullable = EXPECTED[name]
    assert schema.names == list(types)
    for field in schema:
        assert field.type == types[field.name], (name, field.name)
        assert field.nullable == (field.name in nullable), (name, field.name)


def test_version_sources_and_taxonomy():
    assert SCHEMA_VERSION == 2
    assert SOURCES == (
        "alt_text",
        "page_title",
        "surrounding_text",
        "anchor_text",
        "query_click",
        "user_feedback",
    )
    assert TAXONOMY is TAXONOMY_SCHEMA


def test_candidates_holds_keys_features_score_and_selected():
    assert CANDIDATES.names == ["image_id", "class_id", *FEATURES, "score", "selected"]
    evidence = [name for name in CANDIDATES.names if name.startswith("w_")]
    assert evidence == [f"w_{s}" for s in SOURCES] + ["w_custom"]
    assert all(CANDIDATES.field(name).type == F32 for name in evidence)
    assert all(CANDIDATES.field(name).type == FEATURES_SCHEMA.field(name).type for name in FEATURES)
    assert CANDIDATES.field("score").type == F32 and CANDIDATES.field("selected").type == pa.bool_()
    assert not any(field.nullable for field in CANDIDATES)


def test_format_error_is_one_line():
    error = FormatError("crawl/images/a.parquet", "width", "expected int32,\n  got string")
    assert str(error) == "crawl/images/a.parquet: width: expected int32, got string"
    assert isinstance(error, ValueError)
    assert (error.path, error.column, error.problem) == (
        "crawl/images/a.parquet",
        "width",
        "expected int32, got string",
    )
    assert str(FormatError("ds", None, "incomplete: no manifest.json")) == "ds: incomplete: no manifest.json"
    clone = pickle.loads(pickle.dumps(error))
    assert str(clone) == str(error) and clone.column == "width"


@pytest.mark.parametrize(
    ("actual", "expected", "ok"),
    [
        (pa.int64(), I32, True),
        (pa.uint8(), I32, True),
        (pa.large_string(), S, True),
        (pa.dictionary(pa.int8(), S), S, True),
        (pa.float64(), F32, True),
        (pa.int64(), F32, True),
        (pa.null(), S, True),
        (pa.large_list(pa.int64()), pa.list_(I32), True),
        (pa.large_binary(), B, True),
        (S, I32, False),
        (F32, I32, False),
        (S, B, False),
        (pa.int8(), pa.bool_(), False),
        (pa.list_(S), pa.list_(I32), False),
    ],
)
def test_castable(actual, expected, ok):
    assert castable(actual, expected) is ok


def test_conform_casts_fills_and_orders():
    table = pa.table(
        {
            "weight": pa.array([2.5, 1.0], pa.float64()),
            "source": pa.array(["alt_text", "x"], pa.large_string()),
            "image_id": pa.array(["a", "b"]).dictionary_encode(),
            "extra": [1, 2],
        }
    )
    out = conform(table, SIGNALS, "s.parquet")
    assert out.schema == SIGNALS and out.schema.names == SIGNALS.names
    assert out.column("image_id").to_pylist() == ["a", "b"]
    assert out.column("text").null_count == 2
    assert out.column("weight").to_pylist() == [2.5, 1.0]


def test_conform_weight_defaults_to_one():
    out = conform(
        pa.table({"image_id": ["a"], "source": ["alt_text"]}), SIGNALS, "s.parquet", defaults={"weight": 1.0}
    )
    assert out.column("weight").to_pylist() == [1.0]


def test_conform_errors_name_column_and_row():
    base = {"image_id": ["a", "b", "c"], "url": ["u", "u", "u"], "height": pa.array([1, 1, 1], I32)}
    with pytest.raises(FormatError) as info:
        conform(pa.table({**base, "width": ["1", "2", "3"]}), IMAGES, "i.parquet")
    assert str(info.value) == "i.parquet: width: expected int32, got string"
    with pytest.raises(FormatError) as info:
        conform(pa.table({**base, "width": pa.array([1, 2**40, 3], I64)}), IMAGES, "i.parquet", row_offset=10)
    assert str(info.value) == f"i.parquet: width: value {2**40} at row 11 does not fit int32"
    with pytest.raises(FormatError) as info:
        conform(pa.table({**base, "width": pa.array([1, 2, None], I64)}), IMAGES, "i.parquet")
    assert str(info.value) == "i.parquet: width: null at row 2 in a required column"
    with pytest.raises(FormatError) as info:
        conform(pa.table(base), IMAGES, "i.parquet")
    assert str(info.value) == "i.parquet: width: missing column"
    with pytest.raises(FormatError, match=r"^i.parquet: extra: unexpected column$"):
        conform(
            pa.table({**base, "width": pa.array([1, 1, 1], I32), "extra": [1, 2, 3]}),
            IMAGES,
            "i.parquet",
            extra="error",
        )


def test_conform_list_items():
    truth = pa.table({"image_id": ["a", "b"], "labels": pa.array([[1], [2, None]], pa.list_(pa.int64()))})
    with pytest.raises(FormatError, match=r"^t.parquet: labels: null list item at row 1$"):
        conform(truth, TRUTH, "t.parquet")
    big = pa.table({"image_id": ["a", "b"], "labels": pa.array([[1], [2, 2**33]], pa.list_(pa.int64()))})
    with pytest.raises(
        FormatError, match=r"^t.parquet: labels: value 8589934592 at row 1 does not fit int32$"
    ):
        conform(big, TRUTH, "t.parquet")
    good = pa.table({"image_id": ["a"], "labels": pa.array([[1, 2]], pa.large_list(pa.int64()))})
    assert conform(good, TRUTH, "t.parquet").schema == TRUTH
