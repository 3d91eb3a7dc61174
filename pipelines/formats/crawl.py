"""Read, write and validate a crawl folder (DESIGN.md, "Inputs: a crawl").

Every reader checks the file against its contract schema first (footer only, before any data is read)
and fails with one line naming the file, the column and the problem. Row-level oddities that a build
handles by rejecting rows are not errors here: `validate_crawl` counts them as warnings.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from labeling.taxonomy import Taxonomy, TaxonomyError
from pipelines.formats.conform import check_schema, conform
from pipelines.formats.errors import FormatError
from pipelines.formats.ids import IdSet
from pipelines.formats.schemas import IMAGES, SIGNAL_DEFAULTS, SIGNALS, SOURCES, TAXONOMY, TRUTH, VERIFIED
from pipelines.formats.storage import (
    PathLike,
    atomic_write_table,
    exists,
    isdir,
    iter_parquet_batches,
    join,
    list_files,
    open_parquet,
)

SCHEMAS: dict[str, pa.Schema] = {
    "images": IMAGES,
    "signals": SIGNALS,
    "taxonomy": TAXONOMY,
    "verified": VERIFIED,
    "truth": TRUTH,
}
PARTITIONED = ("images", "signals")
"""Kinds stored as `{kind}/*.parquet`; the others are one `{kind}.parquet` file."""

_DEFAULTS: dict[str, Mapping[str, object]] = {"signals": SIGNAL_DEFAULTS}
DEFAULT_BATCH_ROWS = 65_536

WARNINGS: dict[str, str] = {
    "image_bad_size": "images with width or height <= 0",
    "signal_unknown_image": "signals about an image_id not in images/",
    "signal_unknown_class_key": "signals naming a class_key not in the taxonomy",
    "signal_custom_source": "signals from a source outside the built-in six (allowed)",
    "signal_non_finite_weight": "signals with a NaN or infinite weight",
    "signal_no_text_or_class_key": "signals with neither text nor class_key",
    "verified_unknown_image": "verified rows about an image_id not in images/",
    "verified_unknown_class_key": "verified rows naming a class_key not in the taxonomy",
    "truth_unknown_image": "truth rows about an image_id not in images/",
    "truth_label_out_of_range": "truth rows with a label outside the taxonomy's class ids",
}
"""Row-level problems a build would reject rows for, by the key `CrawlSummary.warnings` counts them under."""


# --- files -----------------------------------------------------------------------------------------------


def _schema_of(kind: str) -> pa.Schema:
    if kind not in SCHEMAS:
        raise ValueError(f"unknown crawl file kind {kind!r}; expected one of {', '.join(SCHEMAS)}")
    return SCHEMAS[kind]


def part_path(kind: str, part: int = 0, n_parts: int = 1) -> str:
    """Path of one file of a crawl, relative to the crawl: `images/part-00000-of-00004.parquet`."""
    _schema_of(kind)
    if kind in PARTITIONED:
        if not 0 <= part < n_parts:
            raise ValueError(f"part {part} out of range for {n_parts} parts")
        return f"{kind}/part-{part:05d}-of-{n_parts:05d}.parquet"
    if (part, n_parts) != (0, 1):
        raise ValueError(f"{kind} is a single file; part must be 0 of 1")
    return f"{kind}.parquet"


def crawl_files(crawl: PathLike, kind: str) -> list[str]:
    """The crawl's files of one kind, sorted; [] for an absent optional file.

    images/ and signals/ are required: a crawl without any of their files is a FormatError.
    """
    _schema_of(kind)
    if kind in PARTITIONED:
        folder = join(crawl, kind)
        files = list_files(folder)
        if not files:
            raise FormatError(folder, None, f"no Parquet files (a crawl needs {kind}/*.parquet)")
        return files
    path = join(crawl, f"{kind}.parquet")
    return [path] if exists(path) else []


def _projection(schema: pa.Schema, columns: Sequence[str] | None) -> pa.Schema:
    if columns is None:
        return schema
    unknown = [name for name in columns if schema.get_field_index(name) < 0]
    if unknown:
        raise ValueError(f"unknown column {unknown[0]!r}; expected some of {', '.join(schema.names)}")
    return pa.schema([schema.field(name) for name in columns])


def _plan(parquet, path: str, kind: str, columns: Sequence[str] | None) -> tuple[pa.Schema, list[str]]:
    """Check the whole footer schema, then choose the Parquet columns to read for `columns`."""
    schema = _schema_of(kind)
    present = check_schema(parquet.schema_arrow, schema, path, defaults=_DEFAULTS.get(kind))
    wanted = _projection(schema, columns)
    read = [name for name in present if name in wanted.names]
    # Reading no column at all loses the row count; read a cheap one and let conform drop it.
    return wanted, read or present[:1]


def iter_file_batches(
    path: PathLike, kind: str, batch_size: int = DEFAULT_BATCH_ROWS, columns: Sequence[str] | None = None
) -> Iterator[tuple[int, pa.RecordBatch]]:
    """Stream one crawl file as (first file row, batch) pairs conformed to the kind's schema.

    The row offset lets a stage that rejects rows name them as `rejects/` requires (file, row).
    """
    text = os.fspath(path)
    with open_parquet(text) as parquet:
        wanted, read = _plan(parquet, text, kind, columns)
        offset = 0
        for batch in iter_parquet_batches(parquet, text, batch_size=batch_size, columns=read):
            yield offset, conform(batch, wanted, text, defaults=_DEFAULTS.get(kind), row_offset=offset)
            offset += batch.num_rows


def read_file(path: PathLike, kind: str, columns: Sequence[str] | None = None) -> pa.Table:
    """Read one crawl file whole, conformed to the kind's schema (or the `columns` projection of it)."""
    text = os.fspath(path)
    with open_parquet(text) as parquet:
        wanted, read = _plan(parquet, text, kind, columns)
        try:
            table = parquet.read(columns=read)
        except (pa.ArrowException, OSError) as exc:
            raise FormatError(text, None, f"unreadable data: {exc}") from exc
    return conform(table, wanted, text, defaults=_DEFAULTS.get(kind))


def _check_unique_ids(ids: Sequence[pa.ChunkedArray], files: Sequence[str]) -> None:
    """Raise on the first image_id present twice, naming both places; one hash pass when all is well."""
    everything = pa.chunked_array([chunk for column in ids for chunk in column.chunks], type=pa.string())
    if pc.count_distinct(everything).as_py() == len(everything):
        return
    counts = pc.value_counts(everything)
    duplicate = counts.field("values").filter(pc.greater(counts.field("counts"), 1))[0]
    first, second = pc.indices_nonzero(pc.equal(everything, duplicate)).to_numpy()[:2]
    starts = np.cumsum([0] + [len(column) for column in ids])
    (file1, file2) = np.searchsorted(starts, [first, second], side="right") - 1
    row1, row2 = int(first - starts[file1]), int(second - starts[file2])
    where = f"row {row1}" if file1 == file2 else f"row {row1} of {files[file1]}"
    raise FormatError(
        files[file2], "image_id", f"duplicate {duplicate.as_py()!r} at row {row2} (also {where})"
    )


# --- readers ---------------------------------------------------------------------------------------------


def read_images(crawl: PathLike, columns: Sequence[str] | None = None) -> pa.Table:
    """All images of a crawl; image_id must be unique across files (checked when it is read).

    Pass `columns` to skip the image bytes when only ids or sizes are needed.
    """
    files = crawl_files(crawl, "images")
    tables = [read_file(path, "images", columns) for path in files]
    if "image_id" in tables[0].column_names:
        _check_unique_ids([table.column("image_id") for table in tables], files)
    return pa.concat_tables(tables)


def iter_image_batches(
    crawl: PathLike, batch_size: int = DEFAULT_BATCH_ROWS, columns: Sequence[str] | None = None
) -> Iterator[pa.RecordBatch]:
    """Stream images file by file (no cross-file uniqueness check: that needs every id; see read_images)."""
    for path in crawl_files(crawl, "images"):
        for _, batch in iter_file_batches(path, "images", batch_size, columns):
            yield batch


def read_signals(crawl: PathLike) -> pa.Table:
    """All signals of a crawl in memory; prefer `iter_signal_batches` on large crawls."""
    return pa.concat_tables([read_file(path, "signals") for path in crawl_files(crawl, "signals")])


def iter_signal_batches(crawl: PathLike, batch_size: int = DEFAULT_BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """Stream the crawl's signals in batches of at most `batch_size` rows, conformed to SIGNALS."""
    for path in crawl_files(crawl, "signals"):
        for _, batch in iter_file_batches(path, "signals", batch_size):
            yield batch


def _taxonomy_problem(path: str, error: TaxonomyError) -> FormatError:
    column, _, problem = str(error).partition(": ")
    if column in TAXONOMY.names and problem:
        return FormatError(path, column, problem)
    return FormatError(path, None, str(error))


def read_taxonomy(path_or_crawl: PathLike) -> Taxonomy:
    """A taxonomy from a Parquet file, or from a crawl folder's taxonomy.parquet; checked by Taxonomy."""
    path = os.fspath(path_or_crawl)
    if isdir(path):
        path = join(path, "taxonomy.parquet")
    with open_parquet(path) as parquet:
        try:
            table = parquet.read()
        except (pa.ArrowException, OSError) as exc:
            raise FormatError(path, None, f"unreadable data: {exc}") from exc
    try:
        return Taxonomy.from_table(table)
    except TaxonomyError as exc:
        raise _taxonomy_problem(path, exc) from exc


def _read_optional(crawl: PathLike, kind: str) -> pa.Table | None:
    files = crawl_files(crawl, kind)
    return read_file(files[0], kind) if files else None


def read_verified(crawl: PathLike) -> pa.Table | None:
    """The human-checked label sample (verified.parquet), or None when the crawl has none."""
    return _read_optional(crawl, "verified")


def read_truth(crawl: PathLike) -> pa.Table | None:
    """The real labels of a synthetic crawl (truth.parquet), or None.

    For evaluation only: no pipeline stage may read this, or measured quality means nothing.
    """
    return _read_optional(crawl, "truth")


# --- writer ----------------------------------------------------------------------------------------------


def write_crawl_table(
    table: pa.Table | pa.RecordBatch, crawl: PathLike, kind: str, part: int = 0, n_parts: int = 1
) -> str:
    """Write one crawl file atomically with the kind's exact schema; return its path.

    Columns are cast and checked like a reader would; a column the schema does not know is an error,
    since the contract is what is written. A taxonomy is also checked as a whole (ids, keys, cycles).
    """
    path = join(crawl, part_path(kind, part, n_parts))
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    if kind == "taxonomy":
        check_schema(table.schema, TAXONOMY, path, extra="error")
        try:
            table = Taxonomy.from_table(table).to_table()
        except TaxonomyError as exc:
            raise _taxonomy_problem(path, exc) from exc
    table = conform(table, _schema_of(kind), path, defaults=_DEFAULTS.get(kind), extra="error")
    atomic_write_table(table, path)
    return path


# --- validation ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CrawlSummary:
    """What `validate_crawl` found: sizes, sources and the row-level warnings (see `WARNINGS`)."""

    path: str
    files: dict[str, int]
    rows: dict[str, int]
    signals_per_source: dict[str, int]
    n_classes: int | None
    warnings: dict[str, int] = field(default_factory=dict)

    @property
    def images(self) -> int:
        return self.rows.get("images", 0)

    @property
    def signals(self) -> int:
        return self.rows.get("signals", 0)


def _count(mask: pa.Array | pa.ChunkedArray | np.ndarray) -> int:
    if isinstance(mask, np.ndarray):
        return int(mask.sum())
    return int(pc.sum(pc.cast(mask, pa.int64())).as_py() or 0)


def _not_in(values: pa.Array | pa.ChunkedArray, keys: pa.Array) -> pa.Array | pa.ChunkedArray:
    """Non-null values outside `keys` (a small set, such as the taxonomy's keys)."""
    return pc.and_(pc.is_valid(values), pc.invert(pc.is_in(values, value_set=keys)))


def _signal_warnings(batch: pa.RecordBatch, ids: IdSet, keys: pa.Array | None, warnings: Counter) -> None:
    warnings["signal_unknown_image"] += _count(~ids.contains(batch.column("image_id")))
    class_key = batch.column("class_key")
    if keys is not None:
        warnings["signal_unknown_class_key"] += _count(_not_in(class_key, keys))
    warnings["signal_non_finite_weight"] += _count(pc.invert(pc.is_finite(batch.column("weight"))))
    has_text = pc.fill_null(pc.greater(pc.utf8_length(batch.column("text")), 0), False)
    has_class = pc.fill_null(pc.greater(pc.utf8_length(class_key), 0), False)
    warnings["signal_no_text_or_class_key"] += _count(pc.invert(pc.or_(has_text, has_class)))


def _scan_images(files: Sequence[str], warnings: Counter) -> tuple[IdSet, int]:
    """Check every image file (all but the bytes) and id uniqueness; return the id set and the count."""
    image_ids = []
    for image_file in files:
        table = read_file(image_file, "images", columns=["image_id", "url", "width", "height"])
        image_ids.append(table.column("image_id"))
        bad_size = pc.or_(pc.less_equal(table.column("width"), 0), pc.less_equal(table.column("height"), 0))
        warnings["image_bad_size"] += _count(bad_size)
    _check_unique_ids(image_ids, files)
    chunks = [chunk for column in image_ids for chunk in column.chunks]
    return IdSet(pa.chunked_array(chunks, type=pa.string())), sum(len(chunk) for chunk in chunks)


def _rows_with_label_outside(labels: pa.ChunkedArray, n_classes: int) -> int:
    labels = labels.combine_chunks()
    flat = pc.list_flatten(labels)
    outside = pc.or_(pc.less(flat, 0), pc.greater_equal(flat, n_classes)).to_numpy(zero_copy_only=False)
    return len(np.unique(pc.list_parent_indices(labels).to_numpy()[outside]))


def _given_taxonomy(taxonomy: Taxonomy | PathLike) -> Taxonomy:
    return taxonomy if isinstance(taxonomy, Taxonomy) else read_taxonomy(taxonomy)


def validate_crawl(
    path: PathLike, taxonomy: Taxonomy | PathLike | None = None, batch_size: int = 262_144
) -> CrawlSummary:
    """Check a whole crawl: structure raises FormatError, row-level problems are counted as warnings.

    Memory is bounded by the image ids (their strings while uniqueness is checked, then 8 bytes each in
    an IdSet) plus one batch: signals, the largest part of a crawl, are streamed. The taxonomy is the
    crawl's own unless one is given.
    """
    crawl = os.fspath(path)
    if not exists(crawl):
        raise FormatError(crawl, None, "does not exist")
    files = {kind: crawl_files(crawl, kind) for kind in SCHEMAS}
    rows: dict[str, int] = {}
    warnings: Counter = Counter()

    ids, rows["images"] = _scan_images(files["images"], warnings)

    own = read_taxonomy(files["taxonomy"][0]) if files["taxonomy"] else None
    if own is not None:
        rows["taxonomy"] = len(own)
    tax = own if taxonomy is None else _given_taxonomy(taxonomy)
    keys = tax.to_table().column("key").combine_chunks() if tax is not None else None

    per_source: Counter = Counter()
    rows["signals"] = 0
    for signal_file in files["signals"]:
        for _, batch in iter_file_batches(signal_file, "signals", batch_size):
            rows["signals"] += batch.num_rows
            counts = pc.value_counts(batch.column("source"))
            sources, numbers = counts.field("values").to_pylist(), counts.field("counts").to_pylist()
            per_source.update(dict(zip(sources, numbers, strict=True)))
            _signal_warnings(batch, ids, keys, warnings)
    warnings["signal_custom_source"] = sum(n for name, n in per_source.items() if name not in SOURCES)

    verified = read_verified(crawl)
    if verified is not None:
        rows["verified"] = verified.num_rows
        warnings["verified_unknown_image"] += _count(~ids.contains(verified.column("image_id")))
        if keys is not None:
            warnings["verified_unknown_class_key"] += _count(_not_in(verified.column("class_key"), keys))
    truth = read_truth(crawl)
    if truth is not None:
        rows["truth"] = truth.num_rows
        warnings["truth_unknown_image"] += _count(~ids.contains(truth.column("image_id")))
        if tax is not None:
            warnings["truth_label_out_of_range"] += _rows_with_label_outside(truth.column("labels"), len(tax))

    return CrawlSummary(
        path=crawl,
        files={kind: len(paths) for kind, paths in files.items() if paths},
        rows=rows,
        signals_per_source=dict(sorted(per_source.items())),
        n_classes=len(tax) if tax is not None else None,
        warnings={name: n for name, n in warnings.items() if n},
    )
