"""Evaluation against truth: a dataset holding exactly the true labels has precision 1 and recall 1."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.evaluate import _pairs, label_quality


def test_pairs_explode_label_lists():
    table = pa.table({"image_id": ["a", "b", "c"], "labels": pa.array([[1, 2], [], [3]], pa.list_(pa.int32()))})
    pairs = _pairs(table)
    assert pairs.column("image_id").to_pylist() == ["a", "a", "c"]
    assert pairs.column("class_id").to_pylist() == [1, 2, 3]


def test_needs_a_crawl_with_truth(tmp_path):
    crawl = tmp_path / "crawl"
    crawl.mkdir()
    pq.write_table(pa.table({"image_id": ["a"], "url": ["u"]}), crawl / "other.parquet")
    with pytest.raises(ValueError, match="no truth.parquet"):
        label_quality(str(tmp_path / "dataset"), str(crawl))
