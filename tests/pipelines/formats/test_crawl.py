import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.formats import (
    IMAGES,
    SIGNALS,
    TRUTH,
    VERIFIED,
    FormatError,
    iter_file_batches,
    iter_image_batches,
    iter_signal_batches,
    part_path,
    read_images,
    read_signals,
    read_taxonomy,
    read_truth,
    read_verified,
    validate_crawl,
    write_crawl_table,
)
from tests.pipelines.formats.builders import (
    KEYS,
    images_table,
    make_crawl,
    signals_table,
    taxonomy_table,
    truth_table,
    verified_table,
)


def _raw(path, table) -> str:
    """Write a file as a careless user would: plain pyarrow, no conforming."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return str(path)


@pytest.fixture
def crawl(tmp_path) -> str:
    return make_crawl(tmp_path)


def test_part_paths():
    assert part_path("images", 0, 4) == "images/part-00000-of-00004.parquet"
    assert part_path("signals", 3, 4) == "signals/part-00003-of-00004.parquet"
    assert part_path("taxonomy") == "taxonomy.parquet"
    with pytest.raises(ValueError):
        part_path("images", 4, 4)
    with pytest.raises(ValueError):
        part_path("truth", 1, 2)


def test_round_trip(crawl):
    images = read_images(crawl)
    assert images.schema == IMAGES and images.equals(images_table().cast(IMAGES))
    assert read_images(crawl, columns=["image_id", "width"]).column_names == ["image_id", "width"]
    signals = read_signals(crawl)
    assert signals.schema == SIGNALS and signals.num_rows == 24
    assert read_taxonomy(crawl).to_table().equals(taxonomy_table())
    assert read_taxonomy(f"{crawl}/taxonomy.parquet").keys.tolist() == KEYS
    assert read_verified(crawl).equals(verified_table().cast(VERIFIED))
    assert read_truth(crawl).equals(truth_table().cast(TRUTH))


def test_optional_files_absent(tmp_path):
    crawl = make_crawl(tmp_path, extras=False)
    assert read_verified(crawl) is None and read_truth(crawl) is None


def test_written_files_are_exact_and_atomic(crawl):
    assert sorted(os.listdir(f"{crawl}/images")) == [
        "part-00000-of-00002.parquet",
        "part-00001-of-00002.parquet",
    ]
    assert pq.read_schema(f"{crawl}/signals/part-00000-of-00002.parquet").equals(SIGNALS)


def test_write_crawl_table_rejects_unknown_column(tmp_path):
    table = images_table().append_column("colour", pa.array(["red"] * 12))
    with pytest.raises(FormatError, match=r"images/part-00000-of-00001.parquet: colour: unexpected column$"):
        write_crawl_table(table, str(tmp_path), "images")


def test_write_crawl_table_checks_taxonomy(tmp_path):
    tax = taxonomy_table().set_column(4, "parents", pa.array([[2], [0], [1]], pa.list_(pa.int32())))
    with pytest.raises(FormatError) as info:
        write_crawl_table(tax, str(tmp_path), "taxonomy")
    assert str(info.value).startswith(f"{tmp_path}/taxonomy.parquet: parents: cycle through")
    assert not (tmp_path / "taxonomy.parquet").exists()


def test_iter_batches(crawl):
    batches = list(iter_signal_batches(crawl, batch_size=4))
    assert [b.num_rows for b in batches] == [4, 4, 2, 4, 4, 4, 2]
    assert all(b.schema == SIGNALS for b in batches)
    images = list(iter_image_batches(crawl, batch_size=5, columns=["image_id"]))
    assert sum(b.num_rows for b in images) == 12 and images[0].schema.names == ["image_id"]
    offsets = [
        offset
        for offset, _ in iter_file_batches(f"{crawl}/signals/part-00001-of-00002.parquet", "signals", 4)
    ]
    assert offsets == [0, 4, 8, 12]


def test_lenient_types_are_cast(tmp_path):
    crawl = tmp_path / "c"
    images = images_table()
    loose = pa.table(
        {
            "image_id": images.column("image_id").cast(pa.large_string()),
            "url": images.column("url"),
            "width": images.column("width").cast(pa.int64()),
            "height": images.column("height").cast(pa.uint16()),
        }
    )
    _raw(crawl / "images" / "a.parquet", loose)
    signals = pa.table({"image_id": ["img-000"], "source": ["alt_text"], "text": ["dog"]})
    _raw(crawl / "signals" / "a.parquet", signals)
    read = read_images(str(crawl))
    assert read.schema == IMAGES and read.column("content").null_count == 12
    assert read_signals(str(crawl)).column("weight").to_pylist() == [1.0]


@pytest.mark.parametrize(
    ("kind", "mutate", "column", "problem"),
    [
        ("images", lambda t: t.drop_columns(["url"]), "url", "missing column"),
        (
            "images",
            lambda t: t.set_column(3, "width", t.column("width").cast(pa.string())),
            "width",
            "expected int32, got string",
        ),
        (
            "images",
            lambda t: t.set_column(4, "height", pa.array([1] * 11 + [2**31], pa.int64())),
            "height",
            f"value {2**31} at row 11 does not fit int32",
        ),
        (
            "images",
            lambda t: t.set_column(1, "url", pa.array(["u"] * 7 + [None] * 5)),
            "url",
            "null at row 7 in a required column",
        ),
        (
            "signals",
            lambda t: t.set_column(4, "weight", pa.array(["1"] * t.num_rows)),
            "weight",
            "expected float, got string",
        ),
        ("signals", lambda t: t.drop_columns(["source"]), "source", "missing column"),
    ],
)
def test_structural_errors_name_file_column_and_row(tmp_path, kind, mutate, column, problem):
    crawl = tmp_path / "c"
    _raw(crawl / "images" / "a.parquet", images_table() if kind != "images" else mutate(images_table()))
    _raw(crawl / "signals" / "a.parquet", signals_table() if kind != "signals" else mutate(signals_table()))
    with pytest.raises(FormatError) as info:
        validate_crawl(str(crawl))
    assert str(info.value) == f"{crawl}/{kind}/a.parquet: {column}: {problem}"


def test_null_row_is_counted_across_batches(tmp_path):
    crawl = tmp_path / "c"
    signals = signals_table()
    signals = signals.set_column(
        0, "image_id", pa.array(signals.column("image_id").to_pylist()[:9] + [None] * 15)
    )
    path = _raw(crawl / "signals" / "a.parquet", signals)
    with pytest.raises(FormatError, match=r"a.parquet: image_id: null at row 9 in a required column$"):
        list(iter_file_batches(path, "signals", batch_size=4))


def test_not_parquet(tmp_path):
    crawl = make_crawl(tmp_path)
    bad = tmp_path / "crawl" / "images" / "part-00002-of-00003.parquet"
    bad.write_bytes(b"this is not parquet")
    with pytest.raises(FormatError) as info:
        read_images(crawl)
    message = str(info.value)
    assert message.startswith(f"{bad}: not a Parquet file (") and "\n" not in message


def test_missing_images_folder(tmp_path):
    (tmp_path / "c" / "signals").mkdir(parents=True)
    with pytest.raises(FormatError, match=r"c/images: no Parquet files \(a crawl needs images/\*.parquet\)$"):
        validate_crawl(str(tmp_path / "c"))
    with pytest.raises(FormatError, match=r"nope: does not exist$"):
        validate_crawl(str(tmp_path / "nope"))


def test_duplicate_image_across_files(tmp_path):
    crawl = make_crawl(tmp_path)
    write_crawl_table(images_table(["img-100", "img-007"]), crawl, "images", 0, 1)
    with pytest.raises(FormatError) as info:
        read_images(crawl)
    assert str(info.value) == (
        f"{crawl}/images/part-00001-of-00002.parquet: image_id: duplicate 'img-007' at row 1 "
        f"(also row 1 of {crawl}/images/part-00000-of-00001.parquet)"
    )
    with pytest.raises(FormatError, match="duplicate 'img-007'"):
        validate_crawl(crawl)


def test_duplicate_image_within_file(tmp_path):
    crawl = str(tmp_path / "c")
    write_crawl_table(images_table(["a", "b", "c", "b"]), crawl, "images")
    with pytest.raises(
        FormatError, match=r"part-00000-of-00001.parquet: image_id: duplicate 'b' at row 3 \(also row 1\)$"
    ):
        read_images(crawl)


def test_taxonomy_error_is_a_format_error_naming_the_file(tmp_path):
    crawl = make_crawl(tmp_path)
    tax = taxonomy_table().set_column(1, "key", pa.array([KEYS[0], KEYS[0], KEYS[2]]))
    _raw(tmp_path / "crawl" / "taxonomy.parquet", tax)
    with pytest.raises(FormatError) as info:
        validate_crawl(crawl)
    assert str(info.value) == f"{crawl}/taxonomy.parquet: key: duplicate key {KEYS[0]}"
    assert info.value.column == "key"


def test_validate_clean_crawl(crawl):
    summary = validate_crawl(crawl)
    assert summary.files == {"images": 2, "signals": 2, "taxonomy": 1, "verified": 1, "truth": 1}
    assert summary.rows == {"images": 12, "taxonomy": 3, "signals": 24, "verified": 2, "truth": 12}
    assert summary.images == 12 and summary.signals == 24
    assert summary.signals_per_source == {
        "alt_text": 4,
        "anchor_text": 4,
        "page_title": 4,
        "query_click": 4,
        "surrounding_text": 4,
        "user_feedback": 4,
    }
    assert summary.n_classes == 3 and summary.warnings == {}


def test_validate_file_url(crawl):
    assert validate_crawl(f"file://{crawl}").rows["signals"] == 24


def test_validate_counts_row_level_warnings(tmp_path):
    crawl = make_crawl(tmp_path)
    odd = pa.table(
        {
            "image_id": ["img-000", "ghost", "img-001", "img-002", "img-003", "ghost"],
            "source": ["alt_text", "alt_text", "my_crawler", "query_click", "user_feedback", "my_crawler"],
            "text": ["dog", "dog", "cat", "dog", None, ""],
            "class_key": [None, None, None, "n99999999", None, None],
            "weight": pa.array([1.0, 1.0, 1.0, float("nan"), float("inf"), 1.0], pa.float32()),
        }
    )
    write_crawl_table(odd, crawl, "signals", 0, 1)
    write_crawl_table(
        pa.table({"image_id": ["ghost", "img-001"], "class_key": [KEYS[1], "nope"], "correct": [True, True]}),
        crawl,
        "verified",
    )
    truth = pa.table({"image_id": ["img-000", "x"], "labels": pa.array([[0, 3], [1]], pa.list_(pa.int32()))})
    write_crawl_table(truth, crawl, "truth")
    summary = validate_crawl(crawl)
    assert summary.warnings == {
        "signal_unknown_image": 2,
        "signal_unknown_class_key": 1,
        "signal_non_finite_weight": 2,
        "signal_no_text_or_class_key": 2,
        "signal_custom_source": 2,
        "verified_unknown_image": 1,
        "verified_unknown_class_key": 1,
        "truth_unknown_image": 1,
        "truth_label_out_of_range": 1,
    }
    assert summary.signals_per_source["my_crawler"] == 2 and summary.signals == 30


def test_validate_without_taxonomy_skips_class_keys(tmp_path):
    crawl = make_crawl(tmp_path, extras=False)
    (tmp_path / "crawl" / "taxonomy.parquet").unlink()
    write_crawl_table(
        pa.table({"image_id": ["img-000"], "source": ["user_feedback"], "class_key": ["n99999999"]}),
        crawl,
        "signals",
        0,
        1,
    )
    summary = validate_crawl(crawl)
    assert summary.n_classes is None and summary.warnings == {}
    other = make_crawl(tmp_path / "other")
    for taxonomy in (read_taxonomy(other), other, f"{other}/taxonomy.parquet"):
        given = validate_crawl(crawl, taxonomy=taxonomy)
        assert given.n_classes == 3 and given.warnings == {"signal_unknown_class_key": 1}


def test_validate_is_vectorised(tmp_path):
    """200k images and 600k signals: a per-row Python loop would take far longer than the bound."""
    crawl = str(tmp_path / "big")
    n = 200_000
    ids = pa.array(np.char.add("img-", np.arange(n).astype(str)).astype(object), pa.string())
    images = pa.table(
        {
            "image_id": ids,
            "url": ids,
            "width": pa.array(np.full(n, 4, np.int32)),
            "height": pa.array(np.full(n, 4, np.int32)),
        }
    )
    write_crawl_table(images, crawl, "images")
    take = pa.array(np.random.default_rng(0).integers(0, n, 3 * n))
    signals = pa.table(
        {
            "image_id": ids.take(take),
            "source": pa.array(np.array(["alt_text", "query_click", "page_title"] * n, dtype=object)),
            "text": ids.take(take),
            "weight": pa.array(np.ones(3 * n, np.float32)),
        }
    )
    write_crawl_table(signals, crawl, "signals")
    start = time.perf_counter()
    summary = validate_crawl(crawl, batch_size=100_000)
    assert time.perf_counter() - start < 10
    assert summary.signals == 3 * n and summary.warnings == {}
