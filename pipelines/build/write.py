"""Stage 5 in Beam: apply the thresholds to every candidate file, join labels with images, write shards.

Two passes. `select_candidates` rewrites every candidate file with `selected` filled in (into the same
dataset for a build, into the new one for reselect) and writes its kept labels grouped by image to
`.work/labels/`. The driver counts labelled images per split to fix the number of shards
(`shards_per_split`). `write_shards` then reads labels files and image files in one step, keys every row
by its shard, (split, hash(image_id) % shards of the split), and joins each shard's labels and images in
one group; the driver writes the shards no image fell into (`fill_empty_shards`). Rows are sorted by
image_id, so the bytes never depend on the runner.

Every shuffle has a single producing step: in Beam 2.77 the FnApiRunner with worker processes lost rows
when outputs of several steps were flattened into one shuffle (seen at a million images).
"""

from __future__ import annotations

import math
import posixpath
from collections.abc import Iterable, Iterator, Mapping

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from labeling.selection import select
from pipelines.build import layout
from pipelines.build.counters import count_rows
from pipelines.build.read import ERRORS, WriteError
from pipelines.build.score import candidates_table
from pipelines.build.tables import concat, read_table
from pipelines.formats import (
    SHARD,
    FormatError,
    atomic_write_bytes,
    atomic_write_table,
    exists,
    hash_ids,
    iter_file_batches,
    join,
    list_files,
    shard_path,
    split_of,
    write_shard,
)

IMAGE_BATCH_ROWS = 4_096
"""Image rows per batch: with content, a batch is a few MB to tens of MB."""
SHARD_ROW_GROUP_ROWS = 1_024
"""Rows per Parquet row group of a shard (readers stream shards by row group; image bytes are large)."""

LABELS = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("labels", pa.list_(pa.int32()), nullable=False),
        pa.field("scores", pa.list_(pa.float32()), nullable=False),
    ]
)
"""Kept labels of images, one row per image: what a shard joins with the image rows."""

IMAGE_ROWS = pa.schema([SHARD.field("image_id"), SHARD.field("url"), SHARD.field("content")])

ShardKey = tuple[str, int, int]  # (split, index, shards in the split)
WorkItem = tuple[str, int, str]  # ("labels" or "images", file number, path)


def labels_by_image(candidates: pa.Table) -> pa.Table:
    """LABELS rows from kept candidates sorted by (image_id, class_id): one list per run of image_id."""
    n = candidates.num_rows
    if n == 0:
        return LABELS.empty_table()
    ids = candidates.column("image_id").combine_chunks()
    same = pc.equal(ids.slice(1), ids.slice(0, n - 1)).to_numpy(zero_copy_only=False) if n > 1 else np.zeros(0, bool)
    starts = np.flatnonzero(np.r_[True, ~same])
    offsets = pa.array(np.append(starts, n).astype(np.int32))
    return pa.table(
        [
            ids.take(pa.array(starts)),
            pa.ListArray.from_arrays(offsets, candidates.column("class_id").combine_chunks()),
            pa.ListArray.from_arrays(offsets, candidates.column("score").combine_chunks()),
        ],
        schema=LABELS,
    )


def shard_keys(image_ids: pa.Array | pa.ChunkedArray, splits: Mapping[str, float],
               n_shards: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """(split number in `splits` order, shard index) of each image: pure functions of its id."""
    names = list(splits)
    split = pc.index_in(split_of(image_ids, splits), value_set=pa.array(names)).to_numpy()
    counts = np.array([n_shards[name] for name in names], dtype=np.uint64)
    index = (hash_ids(image_ids) % counts[split]).astype(np.int64)
    return split.astype(np.int64), index


def by_shard(table: pa.Table, splits: Mapping[str, float], n_shards: Mapping[str, int]
             ) -> Iterator[tuple[ShardKey, pa.Table]]:
    """(shard key, rows of that shard) for the shards `table`'s rows fall in; rows keep their order."""
    if table.num_rows == 0:
        return
    names = list(splits)
    split, index = shard_keys(table.column("image_id"), splits, n_shards)
    code = split * 100_000 + index
    order = np.argsort(code, kind="stable")
    present, starts = np.unique(code[order], return_index=True)
    ends = np.append(starts[1:], len(order))
    for value, start, end in zip(present.tolist(), starts.tolist(), ends.tolist(), strict=True):
        name = names[value // 100_000]
        yield (name, value % 100_000, n_shards[name]), table.take(pa.array(order[start:end]))


class SelectBucket(beam.DoFn):
    """Candidate file -> the same file with `selected` filled (in `dst`), and its kept labels by image."""

    def __init__(self, src: str, dst: str, thresholds: np.ndarray) -> None:
        self.src, self.dst, self.thresholds = src, dst, thresholds

    def process(self, relpath: str) -> Iterator[int]:
        table = read_table(join(self.src, relpath))
        scores = table.column("score").to_numpy()
        kept = select(scores, table.column("class_id").to_numpy(), self.thresholds)
        features = table.drop_columns(["score", "selected"])
        atomic_write_table(candidates_table(features, scores, kept), join(self.dst, relpath))
        labels = labels_by_image(table.filter(pa.array(kept)))
        atomic_write_table(labels, layout.work(self.dst, "labels", posixpath.basename(relpath)))
        count_rows("kept_labels", int(kept.sum()))
        count_rows("labelled_images", labels.num_rows)
        yield labels.num_rows


def select_candidates(pipeline: beam.Pipeline, src: str, dst: str, candidate_files: list[str],
                      thresholds: np.ndarray) -> None:
    """Pass 5a: `src`'s candidate files (relative paths) -> `dst`'s candidates and labels files."""
    _ = (
        pipeline
        | "candidate files" >> beam.Create(candidate_files)
        | "spread candidate files" >> beam.Reshuffle()
        | "select" >> beam.ParDo(SelectBucket(src, dst, thresholds))
    )


def labels_files(dst: str) -> list[str]:
    return list_files(layout.work(dst, "labels"))


def shards_per_split(dst: str, splits: Mapping[str, float], rows_per_shard: int) -> dict[str, int]:
    """Shards of each split: ceil(labelled images / rows_per_shard), at least one (read from the labels files)."""
    images = dict.fromkeys(splits, 0)
    for path in labels_files(dst):
        names = split_of(read_table(path, ["image_id"]).column("image_id"), splits)
        counts = pc.value_counts(names)
        for name, n in zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True):
            images[name] += n
    return {name: max(1, math.ceil(n / rows_per_shard)) for name, n in images.items()}


class KeyByShard(beam.DoFn):
    """A labels file or an image file -> its rows keyed by shard; an unreadable image file goes to `errors`."""

    def __init__(self, splits: Mapping[str, float], n_shards: Mapping[str, int], include_content: bool) -> None:
        self.splits, self.n_shards, self.include_content = dict(splits), dict(n_shards), include_content

    def process(self, item: WorkItem) -> Iterator:
        kind, index, path = item
        if kind == "labels":
            for key, table in by_shard(read_table(path), self.splits, self.n_shards):
                yield key, ("labels", table)
            return
        columns = ["image_id", "url", "content"] if self.include_content else ["image_id", "url"]
        try:
            for _, batch in iter_file_batches(path, "images", IMAGE_BATCH_ROWS, columns):
                rows = pa.Table.from_batches([batch])
                if not self.include_content:
                    rows = rows.append_column(SHARD.field("content"), pa.nulls(rows.num_rows, pa.binary()))
                for key, table in by_shard(rows, self.splits, self.n_shards):
                    yield key, ("images", table)
        except FormatError as exc:
            yield beam.pvalue.TaggedOutput(ERRORS, (f"{index:05d}", str(exc)))


class WriteShard(beam.DoFn):
    """(shard key, labels and image pieces) -> `shards/{split}-{index}-of-{count}.parquet`, sorted by image_id.

    Image rows of images without kept labels are dropped here; a kept label whose image is missing is an
    error (its image file failed to read, which is reported on its own, or changed since stage 1).
    """

    def __init__(self, dst: str) -> None:
        self.dst = dst

    def process(self, element: tuple[ShardKey, Iterable]) -> Iterator[str]:
        (split, index, n_shards), pieces = element
        labels_pieces, image_pieces = [], []
        for kind, table in pieces:
            (labels_pieces if kind == "labels" else image_pieces).append(table)
        labels = concat(labels_pieces, LABELS)
        labels = labels.take(pc.sort_indices(labels.column("image_id")))
        images = concat(image_pieces, IMAGE_ROWS)
        at = pc.index_in(labels.column("image_id"), value_set=images.column("image_id"))
        if at.null_count:
            missing = labels.column("image_id").filter(pc.is_null(at))[0].as_py()
            message = f"{self.dst}: shard {split} {index}: labelled image {missing!r} is not in the crawl's images/"
            atomic_write_bytes(layout.errors(self.dst, f"shards-{split}-{index:05d}"), message.encode("utf-8"))
            return
        shard = shard_table(labels, images.take(at), split)
        entry = write_shard(shard, self.dst, split, index, n_shards, row_group_size=SHARD_ROW_GROUP_ROWS)
        count_rows("shard_rows", shard.num_rows)
        count_rows("shard_labels", len(pc.list_flatten(shard.column("labels"))))
        yield entry.path


def shard_table(labels: pa.Table, images: pa.Table, split: str) -> pa.Table:
    """SHARD rows from LABELS rows and their image rows (same order)."""
    return pa.table(
        [labels.column("image_id"), images.column("url"), images.column("content"), labels.column("labels"),
         labels.column("scores"), pa.repeat(pa.scalar(split), labels.num_rows)],
        schema=SHARD,
    )


def write_shards(pipeline: beam.Pipeline, dst: str, image_files: list[str], splits: Mapping[str, float],
                 n_shards: Mapping[str, int], include_content: bool) -> None:
    """Pass 5b: labels files and image files -> `dst`'s shards (all but those no image fell into)."""
    items: list[WorkItem] = [("labels", i, path) for i, path in enumerate(labels_files(dst))]
    items += [("images", i, path) for i, path in enumerate(image_files)]
    keyed = (
        pipeline
        | "labels and image files" >> beam.Create(items)
        | "spread files" >> beam.Reshuffle()
        | "key rows by shard" >> beam.ParDo(KeyByShard(splits, n_shards, include_content)).with_outputs(
            ERRORS, main="rows")
    )
    _ = keyed[ERRORS] | "note unreadable images" >> beam.ParDo(WriteError(dst, "images"))
    _ = (
        keyed["rows"]
        | "group by shard" >> beam.GroupByKey()
        | "write shards" >> beam.ParDo(WriteShard(dst))
    )


def fill_empty_shards(dst: str, n_shards: Mapping[str, int]) -> None:
    """Write the shards that no labelled image fell into (empty, with the SHARD schema)."""
    empty = SHARD.empty_table()
    for split, count in n_shards.items():
        for index in range(count):
            if not exists(join(dst, shard_path(split, index, count))):
                write_shard(empty, dst, split, index, count)
