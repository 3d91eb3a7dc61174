"""Stage 3 in Beam: page sizes by page bucket, then candidate features by image bucket.

Both joins are shuffles of whole Arrow tables, packed into compressed bytes (`tables.pack`): a page's
evidence meets in one page bucket (so `page_images` counts every image of the page), then an image's
evidence meets in one image bucket (so image-level and hierarchy features are exact). Each image bucket
becomes one features file with a name fixed by its number; `aggregate` sorts its rows and sums in a
canonical order, so neither the runner nor the order in which pieces arrive changes a byte.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import apache_beam as beam
import pyarrow as pa

from labeling.evidence import FEATURES_SCHEMA, PAGE_SIZES, aggregate, attach_page_images, page_sizes
from labeling.matching import EVIDENCE
from pipelines.build import layout
from pipelines.build.counters import count_rows
from pipelines.build.read import (
    ERRORS,
    EVIDENCE_OUT,
    REJECTED,
    ReadSignals,
    SignalPiece,
    WriteError,
    WriteRejects,
    load_taxonomy,
)
from pipelines.build.tables import by_bucket, concat, pack, unpack
from pipelines.formats import atomic_write_table, exists

EVIDENCE_WITH_PAGES = EVIDENCE.append(pa.field("page_images", pa.int32(), nullable=True))
"""Evidence rows once the size of their page is known (null when the row has no page)."""


class JoinPageSizes(beam.DoFn):
    """(page bucket, packed evidence pieces) -> (image bucket, packed evidence with `page_images`).

    Keys from `n_buckets` up hold evidence without a page, already bucketed by image: `page_images` is
    null there and the group passes to image bucket key - n_buckets.
    """

    def __init__(self, n_buckets: int) -> None:
        self.n_buckets = n_buckets

    def process(self, element: tuple[int, Iterable[bytes]]) -> Iterator[tuple[int, bytes]]:
        key, pieces = element
        evidence = concat(map(unpack, pieces), EVIDENCE)
        count_rows("grouped_rows", evidence.num_rows)
        if key >= self.n_buckets:
            yield key - self.n_buckets, pack(attach_page_images(evidence, PAGE_SIZES.empty_table()))
            return
        joined = attach_page_images(evidence, page_sizes(evidence))
        for bucket, table in by_bucket(joined.select(EVIDENCE_WITH_PAGES.names), "image_id", self.n_buckets):
            yield bucket, pack(table)


class AggregateBucket(beam.DoFn):
    """(image bucket, packed evidence pieces) -> `.work/features/part-{bucket}-of-{buckets}.parquet`.

    Buckets without evidence get no group; the driver writes their empty files (`fill_empty_buckets`).
    """

    def __init__(self, out: str, taxonomy_path: str | None, n_buckets: int) -> None:
        self.out, self.taxonomy_path, self.n_buckets = out, taxonomy_path, n_buckets

    def setup(self) -> None:
        self._taxonomy = load_taxonomy(self.taxonomy_path)

    def process(self, element: tuple[int, Iterable[bytes]]) -> Iterator[int]:
        bucket, pieces = element
        evidence = concat(map(unpack, pieces), EVIDENCE_WITH_PAGES)
        count_rows("aggregated_rows", evidence.num_rows)
        features = aggregate(evidence, self._taxonomy)
        count_rows("candidates", features.num_rows)
        atomic_write_table(features, layout.features(self.out, bucket, self.n_buckets))
        yield features.num_rows


def fill_empty_buckets(out: str, n_buckets: int) -> list[str]:
    """Write an empty features file for every bucket that got no evidence; return every bucket's file."""
    files = [layout.features(out, bucket, n_buckets) for bucket in range(n_buckets)]
    for path in files:
        if not exists(path):
            atomic_write_table(FEATURES_SCHEMA.empty_table(), path)
    return files


def candidate_features(pipeline: beam.Pipeline, crawl: str, out: str, pieces: list[SignalPiece], n_files: int,
                       taxonomy_path: str | None, n_buckets: int, max_text_chars: int) -> None:
    """Stages 1-3: signal row groups -> rejects/ and one features file per image bucket (under OUT/.work)."""
    files = (
        pipeline
        | "signal row groups" >> beam.Create(pieces)
        | "spread row groups" >> beam.Reshuffle()
    )
    read = files | "read, reject, match" >> beam.ParDo(
        ReadSignals(crawl, out, taxonomy_path, n_buckets, max_text_chars)
    ).with_outputs(REJECTED, ERRORS, main=EVIDENCE_OUT)

    _ = (
        read[REJECTED]
        | "group rejects by file" >> beam.GroupByKey()
        | "write rejects" >> beam.ParDo(WriteRejects(out, n_files))
    )
    _ = read[ERRORS] | "note unreadable files" >> beam.ParDo(WriteError(out, "signals"))

    _ = (
        read[EVIDENCE_OUT]
        | "group by page bucket" >> beam.GroupByKey()
        | "page sizes" >> beam.ParDo(JoinPageSizes(n_buckets))
        | "group by image bucket" >> beam.GroupByKey()
        | "aggregate candidates" >> beam.ParDo(AggregateBucket(out, taxonomy_path, n_buckets))
    )
