"""Label quality of a built dataset against a synthetic crawl's truth: evaluation only, never a build input.

precision: share of the dataset's (image, label) pairs that are true labels. recall: share of the true
labels that had any evidence (i.e. are among the build's candidates) that the dataset kept. Both are
computed over every split, with Arrow joins rather than Python loops.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.formats import join, list_files, read_manifest, read_truth


@dataclass(frozen=True)
class LabelQuality:
    target: float
    estimated_precision: float | None
    precision: float
    recall: float
    labels: int
    true_labels_with_evidence: int


def _pairs(table: pa.Table, column: str = "labels") -> pa.Table:
    """(image_id, class_id) rows of a table with a list<int32> column."""
    labels = table.column(column).combine_chunks()
    parents = pc.list_parent_indices(labels)
    return pa.table({"image_id": pc.take(table.column("image_id"), parents),
                     "class_id": pc.list_flatten(labels).cast(pa.int32())})


def _read_all(folder: str, columns: list[str]) -> pa.Table:
    files = list_files(folder)
    return pa.concat_tables(pq.read_table(path, columns=columns) for path in files) if files else None


def label_quality(dataset: str, crawl: str) -> LabelQuality:
    """Achieved precision and recall of `dataset`, against `crawl`'s truth.parquet."""
    truth = read_truth(crawl)
    if truth is None:
        raise ValueError(f"{crawl}: no truth.parquet (only synthetic crawls can be evaluated)")
    manifest = read_manifest(dataset)
    kept = _pairs(_read_all(join(dataset, "shards"), ["image_id", "labels"]))
    true_pairs = _pairs(truth)
    candidates = _read_all(join(dataset, "candidates"), ["image_id", "class_id"])
    reachable = true_pairs.join(candidates, ["image_id", "class_id"], join_type="inner")
    hits = kept.join(true_pairs, ["image_id", "class_id"], join_type="inner").num_rows
    estimated = manifest.selection.get("expected_precision")
    return LabelQuality(
        target=float(manifest.selection.get("target_precision", float("nan"))),
        estimated_precision=float(estimated) if estimated is not None else None,
        precision=hits / kept.num_rows if kept.num_rows else float("nan"),
        recall=hits / reachable.num_rows if reachable.num_rows else float("nan"),
        labels=kept.num_rows,
        true_labels_with_evidence=reachable.num_rows,
    )
