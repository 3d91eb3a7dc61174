"""Bad rows go to rejects/ with their reason and place; bad files stop the build with one line naming them."""

from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipelines.build import BuildError, build
from pipelines.formats import FormatError, validate_dataset, write_crawl_table
from tests.pipelines.build.helpers import KEYS, config, good_rows, image_ids, manifest, signals, small_crawl

NAN = math.nan


@pytest.fixture(scope="module")
def bad_rows_dataset(tmp_path_factory):
    ids = image_ids(12)
    first = signals([
        (ids[0], "alt_text", "a dog", None, 1.0, None),
        (None, "alt_text", "a dog", None, 1.0, None),  # 1 null_image_id
        ("img-99999", "alt_text", "a dog", None, 1.0, None),  # 2 unknown_image
        (ids[1], None, "a dog", None, 1.0, None),  # 3 null_source
        (ids[1], "alt_text", "   ", None, 1.0, None),  # 4 no_evidence
        (ids[1], "user_feedback", None, "n99999999", 1.0, None),  # 5 unknown_class_key
        (ids[2], "alt_text", "a cat", None, NAN, None),  # 6 non_finite_weight
        (ids[2], "alt_text", "dog " * 30, None, 1.0, None),  # 7 text_too_long (max 50 characters)
        (ids[3], "user_feedback", None, KEYS[1], 1.0, None),  # a direct vote: fine
        (ids[3], "pinterest", "a cute dog", None, 2.0, "board-1"),  # a custom source: fine
    ])
    second = signals([*good_rows(ids), (ids[4], "alt_text", "a dog", None, None, None)])  # last: null weight
    verified = pa.table({
        "image_id": [ids[0], "img-99999", ids[1], ids[3]],
        "class_key": [KEYS[1], KEYS[1], "n99999999", KEYS[1]],
        "correct": [True, True, False, True],
    })
    root = tmp_path_factory.mktemp("bad")
    crawl = small_crawl(root / "crawl", len(ids), [first, second], verified)
    result = build(crawl, root / "ds", config(max_text_chars=50))
    counters = result.counters["aggregate"]
    assert counters["signal_rows"] == first.num_rows + second.num_rows
    assert counters["rejected_rows"] == counters["rejects_written"] == 8  # the signal files' rejects
    assert counters["evidence_rows"] == counters["grouped_rows"] == counters["aggregated_rows"] > 0
    assert result.counters["select"]["kept_labels"] == result.manifest.counts.labels
    return root / "ds", second.num_rows - 1


def test_bad_rows_are_rejected_with_reason_and_place(bad_rows_dataset):
    dataset, last_row = bad_rows_dataset
    validate_dataset(dataset)
    first = pq.read_table(dataset / "rejects" / "part-00000-of-00002.parquet")
    assert set(first.column("file").to_pylist()) == {"signals/part-00000-of-00002.parquet"}
    assert list(zip(first.column("row").to_pylist(), first.column("reason").to_pylist(), strict=True)) == [
        (1, "null_image_id"), (2, "unknown_image"), (3, "null_source"), (4, "no_evidence"),
        (5, "unknown_class_key"), (6, "non_finite_weight"), (7, "text_too_long"),
    ]
    assert first.column("value").to_pylist()[1:3] == ["img-99999", None]
    second = pq.read_table(dataset / "rejects" / "part-00001-of-00002.parquet")
    assert second.to_pylist() == [{"file": "signals/part-00001-of-00002.parquet", "row": last_row, "field": "weight",
                                   "reason": "non_finite_weight", "value": None}]
    verified = pq.read_table(dataset / "rejects" / "verified.parquet")
    assert verified.select(["file", "row", "reason", "value"]).to_pylist() == [
        {"file": "verified.parquet", "row": 1, "reason": "unknown_image", "value": "img-99999"},
        {"file": "verified.parquet", "row": 2, "reason": "unknown_class_key", "value": "n99999999"},
    ]
    selection = manifest(dataset)["selection"]
    assert selection["rejects_by_reason"] == {
        "no_evidence": 1, "non_finite_weight": 2, "null_image_id": 1, "null_source": 1, "text_too_long": 1,
        "unknown_class_key": 2, "unknown_image": 2,
    }
    assert selection["rejected_rows"] == 10
    assert selection["verified"] == {"rows": 4, "usable": 2, "candidates": 2}


def test_custom_sources_count_as_evidence(bad_rows_dataset):
    dataset, _ = bad_rows_dataset
    candidates = pq.read_table(dataset / "candidates")
    custom = candidates.filter(pc.greater(candidates.column("w_custom"), 0))
    assert custom.select(["image_id", "class_id"]).to_pylist() == [{"image_id": "img-00003", "class_id": 1}]


def _one_line(error: Exception) -> str:
    text = str(error)
    assert "\n" not in text
    return text


def test_a_file_that_is_not_parquet_stops_the_build_naming_it(tmp_path):
    crawl = small_crawl(tmp_path / "crawl", 12, [signals(good_rows(image_ids(12))), signals([])])
    broken = crawl / "signals" / "part-00001-of-00002.parquet"
    broken.write_bytes(b"this is not parquet at all")
    with pytest.raises(FormatError) as error:
        build(crawl, tmp_path / "ds", config())
    assert str(broken) in _one_line(error.value) and "not a Parquet file" in str(error.value)
    assert not (tmp_path / "ds" / "manifest.json").exists()


def test_corrupt_data_inside_a_signal_file_stops_the_build_naming_it(tmp_path):
    ids = image_ids(12)
    rows = [(ids[i % 12], "alt_text", f"a dog seen {i} times", None, 1.0, None) for i in range(5_000)]
    crawl = small_crawl(tmp_path / "crawl", 12, [signals(good_rows(ids)), signals(rows)])
    broken = crawl / "signals" / "part-00001-of-00002.parquet"
    data = bytearray(broken.read_bytes())
    start = pq.ParquetFile(broken).metadata.row_group(0).column(2).data_page_offset
    for i in range(start + 40, start + 200):  # the footer stays readable, a data page does not
        data[i] ^= 0x5A
    broken.write_bytes(bytes(data))
    with pytest.raises(BuildError) as error:
        build(crawl, tmp_path / "ds", config())
    assert _one_line(error.value).startswith(f"{broken}: unreadable data")
    assert not (tmp_path / "ds" / "manifest.json").exists()


def test_a_signal_column_of_the_wrong_type_names_file_and_column(tmp_path):
    table = signals(good_rows(image_ids(12)))
    table = table.set_column(4, "weight", pc.cast(table.column("weight"), pa.string()))
    crawl = small_crawl(tmp_path / "crawl", 12, [table])
    with pytest.raises(FormatError, match=r"part-00000-of-00001.parquet: weight: expected float, got string"):
        build(crawl, tmp_path / "ds", config())


def test_duplicate_image_ids_stop_the_build(tmp_path):
    crawl = small_crawl(tmp_path / "crawl", 12, [signals(good_rows(image_ids(12)))])
    images = pq.read_table(crawl / "images" / "part-00000-of-00001.parquet")
    write_crawl_table(images.slice(0, 2), str(crawl), "images", 0, 1)
    write_crawl_table(images.slice(0, 2), str(crawl), "images", 0, 2)
    write_crawl_table(images.slice(1, 2), str(crawl), "images", 1, 2)
    (crawl / "images" / "part-00000-of-00001.parquet").unlink()
    with pytest.raises(FormatError, match="image_id: duplicate 'img-00001'"):
        build(crawl, tmp_path / "ds", config())


def test_a_missing_crawl_is_a_one_line_error(tmp_path):
    with pytest.raises(BuildError, match="does not exist"):
        build(tmp_path / "nowhere", tmp_path / "ds", config())
