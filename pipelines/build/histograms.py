"""Per-class score histograms, summed exactly so that thresholds never depend on the runner.

A score enters a histogram as an integer number of 2^-40 units: merging partial histograms in any order,
on any runner, gives the same bits and therefore the same thresholds, and `reselect` rebuilds the same
histograms from the candidate files alone. Partial histograms travel as sparse Arrow tables keyed by a
block of classes: one Beam element per (candidate file, block), not one per (file, class).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import apache_beam as beam
import numpy as np
import pyarrow as pa

from labeling.selection import BINS, ScoreHistogram, bin_index
from pipelines.build import layout
from pipelines.build.tables import concat, read_table
from pipelines.formats import atomic_write_table, list_files

FIXED_POINT = 2.0**40
"""Score sums are kept as integers in units of 2^-40 (exact in int64 for up to 2^23 candidates a bin)."""
CLASS_BLOCK = 512
"""Classes per histogram key: one Beam element per (file, block), not per (file, class)."""

SPARSE_HISTOGRAM = pa.schema(
    [
        pa.field("class_id", pa.int32(), nullable=False),
        pa.field("bin", pa.int32(), nullable=False),
        pa.field("count", pa.int64(), nullable=False),
        pa.field("sum", pa.int64(), nullable=False),
    ]
)
"""Non-empty histogram bins: (class, bin, candidates in it, their score sum in 2^-40 units)."""


def sparse_histograms(class_ids: np.ndarray, scores: np.ndarray, bins: int = BINS) -> pa.Table:
    """SPARSE_HISTOGRAM rows of the given candidates (any order; output sorted by class and bin)."""
    scores = np.clip(np.asarray(scores, dtype=np.float32), 0.0, 1.0)
    keys = np.asarray(class_ids, dtype=np.int64) * bins + bin_index(scores, bins)
    fixed = np.rint(scores.astype(np.float64) * FIXED_POINT).astype(np.int64)
    return _reduce(keys, np.ones(len(keys), dtype=np.int64), fixed, bins)


def _reduce(keys: np.ndarray, counts: np.ndarray, sums: np.ndarray, bins: int) -> pa.Table:
    if len(keys) == 0:
        return SPARSE_HISTOGRAM.empty_table()
    order = np.argsort(keys, kind="stable")
    keys, counts, sums = keys[order], counts[order], sums[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    unique = keys[starts]
    return pa.table(
        [
            pa.array((unique // bins).astype(np.int32)),
            pa.array((unique % bins).astype(np.int32)),
            pa.array(np.add.reduceat(counts, starts)),
            pa.array(np.add.reduceat(sums, starts)),
        ],
        schema=SPARSE_HISTOGRAM,
    )


def merge_sparse(tables: Iterable[pa.Table | None], bins: int = BINS) -> pa.Table:
    """Add sparse histograms bin by bin (integer sums: the result does not depend on the order)."""
    table = concat(tables, SPARSE_HISTOGRAM)
    if table.num_rows == 0:
        return table
    keys = table.column("class_id").to_numpy().astype(np.int64) * bins + table.column("bin").to_numpy()
    return _reduce(keys, table.column("count").to_numpy(), table.column("sum").to_numpy(), bins)


def to_score_histograms(sparse: pa.Table, bins: int = BINS) -> dict[int, ScoreHistogram]:
    """The dense per-class `ScoreHistogram`s that `choose_thresholds` takes (input sorted by class)."""
    class_ids = sparse.column("class_id").to_numpy()
    bin_ids = sparse.column("bin").to_numpy()
    counts = sparse.column("count").to_numpy()
    sums = sparse.column("sum").to_numpy().astype(np.float64) / FIXED_POINT
    present, starts = np.unique(class_ids, return_index=True)
    ends = np.append(starts[1:], len(class_ids))[: len(starts)]
    out: dict[int, ScoreHistogram] = {}
    for class_id, start, end in zip(present.tolist(), starts.tolist(), ends.tolist(), strict=True):
        hist = ScoreHistogram(bins)
        hist.counts[bin_ids[start:end]] = counts[start:end]
        hist.sums[bin_ids[start:end]] = sums[start:end]
        out[class_id] = hist
    return out


class MergeHistograms(beam.CombineFn):
    """Merges the sparse histograms of one block of classes; exact, so any merge order gives the same."""

    def create_accumulator(self) -> pa.Table:
        return SPARSE_HISTOGRAM.empty_table()

    def add_input(self, accumulator: pa.Table, element: pa.Table) -> pa.Table:
        return merge_sparse([accumulator, element])

    def merge_accumulators(self, accumulators: Iterable[pa.Table]) -> pa.Table:
        return merge_sparse(accumulators)

    def extract_output(self, accumulator: pa.Table) -> pa.Table:
        return accumulator


def read_histograms(out: str) -> dict[int, ScoreHistogram]:
    """The per-class histograms the scoring pass wrote (none when there were no candidates)."""
    tables = [read_table(path) for path in list_files(layout.work(out, "histograms"))]
    return to_score_histograms(merge_sparse(tables))


def histograms_of_candidates(candidate_files: list[str]) -> dict[int, ScoreHistogram]:
    """The same histograms, rebuilt from candidate files (reselect: scores are already there)."""
    parts = []
    for path in candidate_files:
        table = read_table(path, ["class_id", "score"])
        parts.append(sparse_histograms(table.column("class_id").to_numpy(), table.column("score").to_numpy()))
    return to_score_histograms(merge_sparse(parts))


class WriteHistograms(beam.DoFn):
    """(class block, merged histogram) -> `.work/histograms/block-*.parquet`, read by the driver."""

    def __init__(self, out: str) -> None:
        self.out = out

    def process(self, element: tuple[int, pa.Table]) -> Iterator[int]:
        block, table = element
        atomic_write_table(table, layout.work(self.out, "histograms", f"block-{block:05d}.parquet"))
        yield table.num_rows
