"""Stages 1-2 in Beam: read signal files as Arrow batches, reject bad rows, match text to classes.

One element per signal file; the DoFn streams the file in batches, keeping (file, first row) so that
every rejected row is named by its place in the crawl. A file that cannot be read at all is not a
crash inside a worker (whose message each runner wraps differently) but an `errors` output, turned
into one line naming the file by the driver once the pass is over.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from labeling.matching import match_signals
from labeling.rejects import split_valid
from labeling.taxonomy import Taxonomy, default_taxonomy
from pipelines.build import layout
from pipelines.build.counters import count_rows
from pipelines.build.tables import by_bucket, canonical_order, concat, pack
from pipelines.formats import (
    REJECTS,
    SIGNAL_DEFAULTS,
    SIGNALS,
    FormatError,
    IdSet,
    atomic_write_bytes,
    check_schema,
    conform,
    iter_parquet_batches,
    open_parquet,
    read_bytes,
    read_taxonomy,
    write_dataset_file,
)

EVIDENCE_OUT, REJECTED, ERRORS = "evidence", "rejected", "errors"
"""Outputs of `ReadSignals`: evidence keyed for the page join, rejects keyed by file number, unreadable files."""

SIGNAL_BATCH_ROWS = 65_536

LENIENT_SIGNALS = pa.schema([field.with_nullable(True) for field in SIGNALS])
"""SIGNALS with every column nullable: a null image_id is a rejected row, not an unreadable file."""


def load_taxonomy(path: str | None) -> Taxonomy:
    """The build's taxonomy: the file at `path`, or the embedded default when `path` is None."""
    return default_taxonomy() if path is None else read_taxonomy(path)


SignalPiece = tuple[int, str, int | None, int]
"""(file number, path relative to the crawl, row group or None for an empty file, its first row)."""


def plan_signal_reads(crawl: str, paths: list[str]) -> tuple[list[SignalPiece], int]:
    """One piece per Parquet row group of every signal file (readers work in parallel inside a file),
    and the total number of signal rows. Reads footers only; a file whose footer or schema is wrong
    fails here, before any pass starts."""
    pieces: list[SignalPiece] = []
    total = 0
    for index, path in enumerate(paths):
        relpath = relative(crawl, path)
        with open_parquet(path) as parquet:
            check_schema(parquet.schema_arrow, SIGNALS, path, defaults=SIGNAL_DEFAULTS)
            metadata = parquet.metadata
        first = 0
        for group in range(metadata.num_row_groups):
            pieces.append((index, relpath, group, first))
            first += metadata.row_group(group).num_rows
        if metadata.num_row_groups == 0:
            pieces.append((index, relpath, None, 0))
        total += metadata.num_rows
    return pieces, total


def signal_batches(path: str, row_group: int | None, first_row: int, batch_rows: int = SIGNAL_BATCH_ROWS
                   ) -> Iterator[tuple[int, pa.Table]]:
    """(first file row, batch) of one row group, typed like SIGNALS but with nulls left for split_valid."""
    if row_group is None:
        return
    with open_parquet(path) as parquet:
        present = check_schema(parquet.schema_arrow, SIGNALS, path, defaults=SIGNAL_DEFAULTS)
        offset = first_row
        for batch in iter_parquet_batches(parquet, path, batch_size=batch_rows, row_groups=[row_group],
                                          columns=present):
            table = pa.Table.from_batches([batch])
            yield offset, conform(table, LENIENT_SIGNALS, path, defaults=SIGNAL_DEFAULTS, row_offset=offset)
            offset += batch.num_rows


class ReadSignals(beam.DoFn):
    """A row group of a signal file -> rejects, and evidence keyed for the page join (packed tables).

    Evidence with a page goes out keyed by hash(page_id) % buckets, so that a page is whole in one group;
    evidence without one goes out keyed by buckets + hash(image_id) % buckets, a group the page join
    passes on untouched. Both travel through the same shuffle: in Beam 2.77 the FnApiRunner with worker
    processes lost rows of a second output flattened into a later shuffle (seen at a million images).
    """

    def __init__(self, crawl: str, out: str, taxonomy_path: str | None, n_buckets: int, max_text_chars: int,
                 batch_rows: int = SIGNAL_BATCH_ROWS) -> None:
        self.crawl, self.out, self.taxonomy_path = crawl, out, taxonomy_path
        self.n_buckets, self.max_text_chars, self.batch_rows = n_buckets, max_text_chars, batch_rows

    def setup(self) -> None:
        self._taxonomy = load_taxonomy(self.taxonomy_path)
        self._keys = pa.array(self._taxonomy.keys, pa.string())
        hashes = np.load(io.BytesIO(read_bytes(layout.image_ids(self.out))), allow_pickle=False)
        self._images = IdSet.from_hashes(hashes)

    def process(self, element: SignalPiece) -> Iterator:
        index, relpath, row_group, first = element
        yield beam.pvalue.TaggedOutput(REJECTED, (index, None))  # every file gets its rejects part
        try:
            path = f"{self.crawl.rstrip('/')}/{relpath}"
            for first_row, batch in signal_batches(path, row_group, first, self.batch_rows):
                count_rows("signal_rows", batch.num_rows)
                valid, rejects = split_valid(
                    batch, file=relpath, first_row=first_row, known_image_ids=self._images,
                    known_class_keys=self._keys, max_text_chars=self.max_text_chars,
                )
                if rejects.num_rows:
                    count_rows("rejected_rows", rejects.num_rows)
                    yield beam.pvalue.TaggedOutput(REJECTED, (index, rejects))
                yield from self._route(match_signals(valid, self._taxonomy))
        except FormatError as exc:
            yield beam.pvalue.TaggedOutput(ERRORS, (f"{index:05d}-{row_group or 0:05d}", str(exc)))

    def _route(self, evidence: pa.Table) -> Iterator:
        if evidence.num_rows == 0:
            return
        has_page = pc.is_valid(evidence.column("page_id"))
        count_rows("evidence_rows", evidence.num_rows)
        paged = evidence.filter(has_page)
        for bucket, table in by_bucket(paged, "page_id", self.n_buckets):
            yield bucket, pack(table)
        unpaged = evidence.filter(pc.invert(has_page))
        for bucket, table in by_bucket(unpaged, "image_id", self.n_buckets):
            yield self.n_buckets + bucket, pack(table)


def write_image_ids(out: str, ids: IdSet) -> None:
    """Save the crawl's image-id hashes under OUT for the workers (8 bytes an id, not in the job graph)."""
    buffer = io.BytesIO()
    np.save(buffer, ids.hashes, allow_pickle=False)
    atomic_write_bytes(layout.image_ids(out), buffer.getvalue())


class WriteRejects(beam.DoFn):
    """(file number, reject pieces) -> `rejects/part-{file}-of-{files}.parquet`, rows sorted by row."""

    def __init__(self, out: str, n_files: int) -> None:
        self.out, self.n_files = out, n_files

    def process(self, element: tuple[int, list]) -> Iterator[str]:
        index, pieces = element
        table = canonical_order(concat(pieces, REJECTS), ["row", "field", "reason", "value", "file"])
        count_rows("rejects_written", table.num_rows)
        write_dataset_file(table, self.out, layout.rejects(index, self.n_files))
        yield layout.rejects(index, self.n_files)


class WriteError(beam.DoFn):
    """(input number, one-line reason) -> a text file the driver reads after the pass.

    Numbers are zero-padded, so the first file by name is the first failing input in crawl order.
    """

    def __init__(self, out: str, stage: str) -> None:
        self.out, self.stage = out, stage

    def process(self, element: tuple[str, str]) -> Iterator[str]:
        number, message = element
        atomic_write_bytes(layout.errors(self.out, f"{self.stage}-{number}"), message.encode("utf-8"))
        yield message


def relative(crawl: str, path: str) -> str:
    """`path` relative to the crawl folder, with "/" separators (how rejects name files)."""
    base = os.fspath(crawl).rstrip("/") + "/"
    return path[len(base):] if path.startswith(base) else path
