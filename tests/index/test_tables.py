"""The noise index's input files: a labels file's optional scores, and their alignment with the embeddings."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from index.tables import align, read_labels
from pipelines.formats import FormatError

IDS = ["a", "b", "c"]
LABELS = [[0, 2], [1], [2, 0, 1]]
SCORES = [[0.9, 0.2], [0.7], [0.5, 0.6, 0.1]]


def _write(path, scores=SCORES, score_type: pa.DataType | None = None) -> str:
    columns = {"image_id": pa.array(IDS), "labels": pa.array(LABELS, pa.list_(pa.int32()))}
    if scores is not None:
        columns["scores"] = pa.array(scores, pa.list_(score_type or pa.float32()))
    pq.write_table(pa.table(columns), path)
    return str(path)


def test_scores_are_read_when_present_and_follow_the_embeddings_order(tmp_path):
    ids, lists, n_classes, scores = read_labels(_write(tmp_path / "l.parquet"))
    assert n_classes == 3 and [len(row) for row in scores.to_pylist()] == [2, 1, 3]
    np.testing.assert_allclose(scores.values.to_numpy(), [0.9, 0.2, 0.7, 0.5, 0.6, 0.1], rtol=1e-6)
    embedded = pa.array(["c", "a", "b"])
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    labelled, _ = align(ids, lists, n_classes, embedded, x, "e.parquet", scores)
    assert labelled.values.tolist() == [2, 0, 1, 0, 2, 1]
    np.testing.assert_allclose(labelled.scores, [0.5, 0.6, 0.1, 0.9, 0.2, 0.7], rtol=1e-6)
    # A subset of the embedded images labelled: the labels' order, scores with them.
    labelled, _ = align(ids[:2], lists[:2], n_classes, embedded, x, "e.parquet", scores[:2])
    np.testing.assert_allclose(labelled.scores, [0.9, 0.2, 0.7], rtol=1e-6)


def test_no_scores_column_means_no_scores(tmp_path):
    assert read_labels(_write(tmp_path / "l.parquet", scores=None)).scores is None


@pytest.mark.parametrize(
    "scores, needle",
    [
        ([[0.9], [0.7], [0.5, 0.6, 0.1]], "row 0 has 1 scores for 2 labels"),
        ([[0.9, 0.2], [1.5], [0.5, 0.6, 0.1]], "row 1 has score 1.5"),
        ([[0.9, 0.2], [0.7], [0.5, float("nan"), 0.1]], "row 2 has score nan"),
    ],
)
def test_bad_scores_are_one_line_errors_naming_row_and_field(tmp_path, scores, needle):
    with pytest.raises(FormatError) as caught:
        read_labels(_write(tmp_path / "l.parquet", scores=scores))
    message = str(caught.value)
    assert "scores" in message and needle in message and "\n" not in message


def test_scores_of_another_type_are_refused(tmp_path):
    with pytest.raises(FormatError, match="scores"):
        read_labels(_write(tmp_path / "l.parquet", scores=[["x", "y"], ["z"], ["u", "v", "w"]],
                           score_type=pa.string()))


def test_a_datasets_verified_file_brings_its_scores(tmp_path):
    from index.tables import read_verified_file

    path = tmp_path / "verified.parquet"
    pq.write_table(pa.table({"image_id": ["b", "zz", "a", "c"], "class_id": pa.array([1, 0, 7, 2], pa.int32()),
                             "correct": [True, False, False, True],
                             "score": pa.array([0.8, 0.1, 0.3, 0.05], pa.float32())}), path)
    verified, unknown = read_verified_file(str(path), pa.array(IDS), None, 3)
    assert unknown == 2  # an unknown image and a class id beyond the set
    assert verified.row.tolist() == [1, 2] and verified.class_id.tolist() == [1, 2]
    assert verified.correct.tolist() == [True, True] and verified.score.tolist() == pytest.approx([0.8, 0.05])
    crawl_format = tmp_path / "crawl.parquet"
    pq.write_table(pa.table({"image_id": ["a"], "class_key": ["2"], "correct": [True]}), crawl_format)
    assert read_verified_file(str(crawl_format), pa.array(IDS), None, 3)[0].score is None


def test_a_datasets_verified_file_with_a_bad_column_is_a_one_line_error(tmp_path):
    from index.tables import read_verified_file

    path = tmp_path / "verified.parquet"
    pq.write_table(pa.table({"image_id": ["a"], "class_id": pa.array([1], pa.int32()), "correct": [True],
                             "score": ["high"]}), path)
    with pytest.raises(FormatError, match="score"):
        read_verified_file(str(path), pa.array(IDS), None, 3)
