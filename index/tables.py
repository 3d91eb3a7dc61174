"""The noise index's inputs and outputs as files: labels, embeddings, verified sample, noise tables.

Inputs are checked against small schemas of their own (`LABELS`, `EMBEDDINGS`) or the crawl contract
(`verified.parquet`), with the same one-line errors as every other reader. Embeddings stream batch by batch
into one float32 matrix, so a 1M x 512 file needs its 2 GB once, not the Arrow copy as well.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from index.noise import Labels, Verified
from pipelines.formats import (
    DATASET_VERIFIED,
    NOISE_CLASSES,
    NOISE_IMAGES,
    FormatError,
    atomic_write_table,
    check_schema,
    conform,
    join,
    open_parquet,
    read_file,
)

LABELS = pa.schema([pa.field("image_id", pa.string(), False), pa.field("labels", pa.list_(pa.int32()), False)])
LABEL_SCORES = pa.field("scores", pa.list_(pa.float32()), False)
"""Optional column of a labels file: the labeller's P(label right) per label, aligned with `labels` (as in a
dataset shard). When present, the calibrated estimate uses it as a third signal beside the visual two."""
EMBEDDINGS = pa.schema(
    [pa.field("image_id", pa.string(), False), pa.field("embedding", pa.list_(pa.float32()), False)]
)
_BATCH_ROWS = 65_536
Progress = Callable[[str, int, int], None]


def _read(path: str, schema: pa.Schema) -> pa.Table:
    with open_parquet(path) as parquet:
        check_schema(parquet.schema_arrow, schema, path)
        try:
            table = parquet.read(columns=schema.names)
        except (pa.ArrowException, OSError) as exc:
            raise FormatError(path, None, f"unreadable data: {exc}") from exc
    return conform(table, schema, path)


def _check_unique(ids: pa.Array | pa.ChunkedArray, path: str) -> None:
    if pc.count_distinct(ids).as_py() != len(ids):
        counts = pc.value_counts(ids)
        duplicate = counts.field("values").filter(pc.greater(counts.field("counts"), 1))[0].as_py()
        raise FormatError(path, "image_id", f"{duplicate!r} appears more than once")


class LabelsFile(NamedTuple):
    ids: pa.Array
    lists: pa.ListArray
    n_classes: int
    scores: pa.ListArray | None  # aligned with `lists`, when the file has a `scores` column


def read_labels(path: str | os.PathLike[str], n_classes: int | None = None) -> LabelsFile:
    """Image ids, labels, number of classes and the optional scores of a labels file; ids unique, labels in
    0..n_classes-1, scores (when present) one per label in [0, 1]."""
    path = os.fspath(path)
    with open_parquet(path) as parquet:
        has_scores = LABEL_SCORES.name in parquet.schema_arrow.names
    schema = LABELS.append(LABEL_SCORES) if has_scores else LABELS
    table = _read(path, schema)
    ids = table.column("image_id").combine_chunks()
    _check_unique(ids, path)
    lists = table.column("labels").combine_chunks()
    flat = pc.list_flatten(lists).to_numpy().astype(np.int64)
    if flat.size and flat.min() < 0:
        raise FormatError(path, "labels", f"label {int(flat.min())} is negative")
    found = int(flat.max()) + 1 if flat.size else 0
    if n_classes is not None and found > n_classes:
        raise FormatError(path, "labels", f"label {found - 1} is outside the taxonomy's 0..{n_classes - 1}")
    scores = check_scores(table.column("scores").combine_chunks(), lists, path) if has_scores else None
    return LabelsFile(ids, lists, n_classes if n_classes is not None else max(found, 1), scores)


def check_scores(scores: pa.ListArray, lists: pa.ListArray, path: str) -> pa.ListArray:
    """`scores` as given, after checking there is one per label and each is a probability."""
    lengths = pc.list_value_length(scores).to_numpy()
    bad = np.flatnonzero(lengths != pc.list_value_length(lists).to_numpy())
    if bad.size:
        row = int(bad[0])
        raise FormatError(path, "scores", f"row {row} has {lengths[row]} scores for {len(lists[row])} labels")
    values = pc.list_flatten(scores).to_numpy(zero_copy_only=False)
    outside = np.flatnonzero(~((values >= 0) & (values <= 1)))  # NaN fails both
    if outside.size:
        row = int(pc.list_parent_indices(scores).to_numpy()[outside[0]])
        raise FormatError(path, "scores", f"row {row} has score {float(values[outside[0]]):g}, expected 0..1")
    return scores


def read_embeddings(
    paths: str | os.PathLike[str] | Sequence[str], progress: Progress | None = None
) -> tuple[pa.Array, np.ndarray]:
    """(image ids, float32 matrix) of one embeddings file or several in order; all vectors the same length."""
    paths = [os.fspath(paths)] if isinstance(paths, str | os.PathLike) else [os.fspath(p) for p in paths]
    total = 0
    for path in paths:
        with open_parquet(path) as parquet:
            check_schema(parquet.schema_arrow, EMBEDDINGS, path)
            total += parquet.metadata.num_rows
    ids, matrix, offset = [], None, 0
    for path in paths:
        with open_parquet(path) as parquet:
            start = offset
            try:
                for batch in parquet.iter_batches(batch_size=_BATCH_ROWS, columns=EMBEDDINGS.names):
                    batch = conform(batch, EMBEDDINGS, path, row_offset=offset - start)
                    matrix = _fill(matrix, total, batch.column("embedding"), offset, offset - start, path)
                    ids.append(batch.column("image_id"))
                    offset += batch.num_rows
                    if progress:
                        progress("read embeddings", offset, total)
            except (pa.ArrowException, OSError) as exc:
                raise FormatError(path, None, f"unreadable data: {exc}") from exc
    if matrix is None:
        raise FormatError(paths[0] if paths else "embeddings", None, "no rows")
    if not np.isfinite(matrix).all():
        row = int(np.flatnonzero(~np.isfinite(matrix).all(1))[0])
        raise FormatError(paths[0], "embedding", f"vector {row} has a NaN or infinite value")
    all_ids = pa.chunked_array(ids, pa.string()).combine_chunks()
    _check_unique(all_ids, paths[0])
    return all_ids, matrix


def _fill(matrix: np.ndarray | None, total: int, vectors: pa.Array, offset: int, file_row: int,
          path: str) -> np.ndarray:
    lengths = pc.list_value_length(vectors).to_numpy()
    if matrix is None:
        if not len(lengths) or lengths[0] == 0:
            raise FormatError(path, "embedding", "empty vectors")
        matrix = np.empty((total, int(lengths[0])), dtype=np.float32)
    bad = np.flatnonzero(lengths != matrix.shape[1])
    if bad.size:
        raise FormatError(path, "embedding", f"row {file_row + int(bad[0])} has {lengths[bad[0]]} values, "
                                             f"expected {matrix.shape[1]}")
    values = pc.list_flatten(vectors).to_numpy(zero_copy_only=False)
    matrix[offset : offset + len(lengths)] = values.reshape(len(lengths), -1)
    return matrix


def align(
    label_ids: pa.Array, lists: pa.ListArray, n_classes: int, embedding_ids: pa.Array, x: np.ndarray,
    embeddings_path: str, scores: pa.ListArray | None = None,
) -> tuple[Labels, np.ndarray]:
    """Labels (and their scores) and embeddings on the same rows: the embeddings' order when every embedded
    image is labelled (no copy of the matrix), else the labelled images' rows taken out. Every labelled image
    needs a vector."""
    where = pc.index_in(label_ids, value_set=embedding_ids)
    if where.null_count:
        missing = label_ids.filter(pc.is_null(where))
        raise FormatError(embeddings_path, "image_id", f"{len(missing):,} labelled images have no embedding "
                                                       f"(first: {missing[0].as_py()!r})")
    row_of_label = where.to_numpy()
    lengths = pc.list_value_length(lists).to_numpy()
    flat = pc.list_flatten(lists).to_numpy().astype(np.int32)
    flat_scores = None if scores is None else pc.list_flatten(scores).to_numpy(zero_copy_only=False).astype(np.float32)
    if len(label_ids) == len(embedding_ids):
        order = np.argsort(row_of_label)  # label row for each embedding row
        counts = lengths[order]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)])[order]
        take = np.repeat(starts - offsets[:-1], counts) + np.arange(offsets[-1])
        taken = None if flat_scores is None else flat_scores[take]
        return Labels(embedding_ids, offsets, flat[take], n_classes, taken), x
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return Labels(label_ids, offsets, flat, n_classes, flat_scores), x[row_of_label]


def class_ids_of(keys: pa.Array | pa.ChunkedArray, class_keys: pa.Array | None, n_classes: int) -> np.ndarray:
    """Class id per class_key: its position in `class_keys` (the taxonomy's keys by class id), or without
    them the id itself written as a decimal string; -1 when neither."""
    text = pc.utf8_trim_whitespace(keys.cast(pa.string()))
    if class_keys is not None:
        return pc.fill_null(pc.index_in(text, value_set=class_keys.cast(pa.string())), -1).to_numpy().astype(np.int32)
    numeric = pc.fill_null(pc.match_substring_regex(text, r"^[0-9]+$"), False).to_numpy(zero_copy_only=False)
    out = np.full(len(text), -1, dtype=np.int64)
    if numeric.any():
        out[numeric] = pc.cast(text.filter(pa.array(numeric)), pa.int64()).to_numpy()
    out[(out < 0) | (out >= n_classes)] = -1
    return out.astype(np.int32)


def read_verified_file(
    path: str | os.PathLike[str], image_ids: pa.Array, class_keys: pa.Array | None, n_classes: int
) -> tuple[Verified, int]:
    """The verified rows about images and classes of this set (row space of `image_ids`), and how many
    rows named an unknown image or class (reported, not fatal: a crawl's sample covers more than a set).

    Two formats: the crawl's (`image_id`, `class_key`, `correct`), or a dataset's `verified.parquet`
    (`image_id`, `class_id`, `correct`, `score`: the build's out-of-fold P(right) of each pair), whose scores
    let pairs the build did not keep calibrate the model beside the kept labels (`index.noise.estimate_noise`).
    """
    text = os.fspath(path)
    with open_parquet(text) as parquet:
        dataset_format = "class_key" not in parquet.schema_arrow.names and "class_id" in parquet.schema_arrow.names
    score = None
    if dataset_format:
        table = _read(text, DATASET_VERIFIED)
        class_id = table.column("class_id").to_numpy().astype(np.int32)
        class_id[(class_id < 0) | (class_id >= n_classes)] = -1
        score = table.column("score").to_numpy().astype(np.float32)
    else:
        table = read_file(text, "verified")
        class_id = class_ids_of(table.column("class_key"), class_keys, n_classes)
    rows = pc.index_in(table.column("image_id"), value_set=image_ids)
    known = (~pc.is_null(rows).to_numpy(zero_copy_only=False)) & (class_id >= 0)
    row = pc.fill_null(rows, -1).to_numpy()[known].astype(np.int64)
    correct = table.column("correct").to_numpy(zero_copy_only=False)[known]
    return Verified(row, class_id[known], correct, None if score is None else score[known]), int((~known).sum())


def write_noise_tables(classes: pa.Table, images: pa.Table, out: str) -> list[str]:
    """Write `classes.parquet` and `images.parquet` into `out` (atomically, contract schemas)."""
    written = []
    for name, table, schema in (("classes.parquet", classes, NOISE_CLASSES), ("images.parquet", images, NOISE_IMAGES)):
        path = join(out, name)
        atomic_write_table(conform(table, schema, path, extra="error"), path)
        written.append(path)
    return written
