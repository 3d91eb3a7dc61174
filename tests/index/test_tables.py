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
