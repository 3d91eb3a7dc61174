"""The dataset folder a build writes (DESIGN.md, "Outputs: a dataset"): manifest, shards, splits, checks.

`manifest.json` is written last and lists every file with its sha256: a folder without it is incomplete,
and a folder whose files do not match it has been changed or mixed with another run.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from pipelines.formats.conform import check_schema, conform
from pipelines.formats.errors import FormatError
from pipelines.formats.ids import hash_ids
from pipelines.formats.schemas import (
    CANDIDATES,
    CLASSES,
    NOISE_CLASSES,
    NOISE_IMAGES,
    REJECTS,
    SCHEMA_VERSION,
    SHARD,
)
from pipelines.formats.storage import (
    PathLike,
    atomic_write_bytes,
    atomic_write_table,
    exists,
    join,
    list_files,
    open_parquet,
    read_bytes,
    sha256_file,
)

MANIFEST = "manifest.json"
SUPPORTED_SCHEMA_VERSIONS = (SCHEMA_VERSION,)
DEFAULT_SPLITS: dict[str, float] = {"train": 0.9, "val": 0.05, "eval": 0.05}

_SPLIT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_SHARD_PATH = re.compile(r"^shards/([a-z][a-z0-9_]*)-(\d{5})-of-(\d{5})\.parquet$")
_SHA256 = r"^[0-9a-f]{64}$"
_BATCH_ROWS = 65_536

FILE_SCHEMAS: dict[str, pa.Schema] = {
    "classes.parquet": CLASSES,
    "noise/classes.parquet": NOISE_CLASSES,
    "noise/images.parquet": NOISE_IMAGES,
}
FOLDER_SCHEMAS: dict[str, pa.Schema] = {"candidates/": CANDIDATES, "rejects/": REJECTS}
"""Schemas of the Parquet files a manifest may list besides shards, by path or folder."""


def schema_for(relpath: str) -> pa.Schema | None:
    """The contract schema of a dataset file by its relative path; None for files without one."""
    if relpath in FILE_SCHEMAS:
        return FILE_SCHEMAS[relpath]
    if relpath.endswith(".parquet"):
        for folder, schema in FOLDER_SCHEMAS.items():
            if relpath.startswith(folder):
                return schema
        if _SHARD_PATH.match(relpath):
            return SHARD
    return None


# --- manifest --------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ShardEntry(_Strict):
    path: str
    split: str
    rows: int = Field(ge=0)
    sha256: str = Field(pattern=_SHA256)


class FileEntry(_Strict):
    path: str
    rows: int | None = Field(default=None, ge=0, description="row count of Parquet files")
    sha256: str = Field(pattern=_SHA256)


class SplitCounts(_Strict):
    images: int = Field(ge=0)
    labels: int = Field(ge=0)


class Counts(_Strict):
    images: int = Field(ge=0)
    labels: int = Field(ge=0)
    classes: int = Field(ge=0)
    splits: dict[str, SplitCounts]


class Manifest(_Strict):
    """manifest.json. Paths are relative to the dataset folder, with "/" separators."""

    schema_version: int = SCHEMA_VERSION
    dataset_id: str = Field(min_length=1)
    created_at: AwareDatetime
    config: dict[str, Any]
    inputs: dict[str, str] = Field(description="input name -> fingerprint (e.g. sha256 of the crawl's files)")
    code_version: str
    counts: Counts
    shards: list[ShardEntry]
    files: list[FileEntry] = Field(description="every other file (classes.parquet, candidates/*, rejects/*)")
    selection: dict[str, Any] = Field(default_factory=dict, description="selection statistics")


def write_manifest(dataset: PathLike, manifest: Manifest) -> None:
    """Write manifest.json atomically; call it last, once every listed file is in place.

    Keys are sorted and entries ordered by path, so the same build gives the same bytes.
    """
    ordered = manifest.model_copy(
        update={
            "shards": sorted(manifest.shards, key=lambda entry: entry.path),
            "files": sorted(manifest.files, key=lambda entry: entry.path),
        }
    )
    text = json.dumps(ordered.model_dump(mode="json"), sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    atomic_write_bytes(join(dataset, MANIFEST), text.encode("utf-8"))


def read_manifest(dataset: PathLike) -> Manifest:
    """Parse manifest.json; a missing manifest means the dataset is incomplete (a build did not finish)."""
    path = join(dataset, MANIFEST)
    if not exists(path):
        raise FormatError(os.fspath(dataset), None, f"incomplete: no {MANIFEST}")
    try:
        raw = json.loads(read_bytes(path))
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormatError(path, None, f"not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise FormatError(path, None, "expected a JSON object")
    version = raw.get("schema_version")
    if version not in SUPPORTED_SCHEMA_VERSIONS or isinstance(version, bool):
        supported = ", ".join(map(str, SUPPORTED_SCHEMA_VERSIONS))
        raise FormatError(
            path, "schema_version", f"unsupported version {version!r} (this webjft reads {supported})"
        )
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        column = ".".join(str(part) for part in error["loc"]) or None
        raise FormatError(path, column, error["msg"]) from exc


# --- shards and splits -----------------------------------------------------------------------------------


def shard_path(split: str, index: int, count: int) -> str:
    """Relative path of a shard: `shards/{split}-{index:05d}-of-{count:05d}.parquet`."""
    if not _SPLIT_NAME.match(split):
        raise ValueError(f"split name {split!r} must match {_SPLIT_NAME.pattern}")
    if not 0 <= index < count <= 99_999:
        raise ValueError(f"shard index {index} out of range for {count} shards")
    return f"shards/{split}-{index:05d}-of-{count:05d}.parquet"


def parse_shard_path(relpath: str) -> tuple[str, int, int]:
    """(split, index, count) of a shard path; ValueError if it is not one."""
    match = _SHARD_PATH.match(relpath)
    if not match or int(match.group(2)) >= int(match.group(3)):
        raise ValueError(f"{relpath!r} is not shards/{{split}}-{{index:05d}}-of-{{count:05d}}.parquet")
    return match.group(1), int(match.group(2)), int(match.group(3))


def split_of(
    image_ids: pa.Array | pa.ChunkedArray, fractions: Mapping[str, float] = DEFAULT_SPLITS
) -> pa.Array:
    """The split of each image, a pure function of its id (and of `fractions`).

    u = (top 53 bits of `hash_ids(id)`) / 2^53 is uniform on [0, 1); the split is the first one, in the
    order `fractions` lists them, whose cumulative fraction exceeds u. The hash is FNV-1a 64 plus a
    splitmix64 finaliser (see `ids`), so the answer never depends on PYTHONHASHSEED, the machine or the
    order of rows, and growing a crawl never moves an existing image to another split.
    """
    names = list(fractions)
    shares = np.asarray([fractions[name] for name in names], dtype=np.float64)
    if not names or (shares < 0).any() or not np.isclose(shares.sum(), 1.0, rtol=0, atol=1e-9):
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {dict(fractions)}")
    for name in names:
        if not _SPLIT_NAME.match(name):
            raise ValueError(f"split name {name!r} must match {_SPLIT_NAME.pattern}")
    u = (hash_ids(image_ids) >> np.uint64(11)).astype(np.float64) * 2.0**-53
    bounds = np.cumsum(shares)
    bounds[-1] = 1.0  # rounding must not leave a sliver of u without a split
    index = np.searchsorted(bounds, u, side="right")
    return pc.take(pa.array(names, pa.string()), pa.array(index, pa.int32()))


def file_entry(dataset: PathLike, relpath: str) -> FileEntry:
    """A manifest entry for a file already in the dataset: its sha256, and its rows if it is Parquet."""
    path = join(dataset, relpath)
    rows = None
    if relpath.endswith(".parquet"):
        with open_parquet(path) as parquet:
            rows = parquet.metadata.num_rows
    return FileEntry(path=relpath, rows=rows, sha256=sha256_file(path))


def write_dataset_file(table: pa.Table, dataset: PathLike, relpath: str, **parquet_opts: Any) -> FileEntry:
    """Write classes.parquet, candidates/*, rejects/* or noise/* with their exact schema; return the entry."""
    schema = schema_for(relpath)
    if schema is None or schema is SHARD:
        raise ValueError(f"{relpath!r} is not a dataset file with a schema (shards: use write_shard)")
    path = join(dataset, relpath)
    atomic_write_table(conform(table, schema, path, extra="error"), path, **parquet_opts)
    return file_entry(dataset, relpath)


def write_shard(
    table: pa.Table, dataset: PathLike, split: str, index: int, count: int, **parquet_opts: Any
) -> ShardEntry:
    """Write one shard atomically with the SHARD schema; every row's `split` must be the shard's split."""
    relpath = shard_path(split, index, count)
    path = join(dataset, relpath)
    table = conform(table, SHARD, path, extra="error")
    _check_split_column(table.column("split"), split, path, 0)
    atomic_write_table(table, path, **parquet_opts)
    return ShardEntry(path=relpath, split=split, rows=table.num_rows, sha256=sha256_file(path))


# --- validation ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetSummary:
    """What `validate_dataset` checked; `warnings` counts legal but suspicious things."""

    path: str
    dataset_id: str
    schema_version: int
    images: int
    labels: int
    classes: int
    splits: dict[str, int]
    shards: int
    files: int
    warnings: dict[str, int] = field(default_factory=dict)

    @property
    def labels_per_image(self) -> float:
        return self.labels / self.images if self.images else 0.0


def _first(mask: pa.Array | pa.ChunkedArray) -> int | None:
    """Index of the first true value, or None."""
    index = pc.index(pc.fill_null(mask, True), True).as_py()
    return None if index < 0 else int(index)


def _check_split_column(split: pa.Array | pa.ChunkedArray, name: str, path: str, offset: int) -> None:
    row = _first(pc.not_equal(split, name))
    if row is not None:
        raise FormatError(
            path, "split", f"row {row + offset} says {split[row].as_py()!r} in a {name!r} shard"
        )


def _check_relpath(manifest: str, relpath: str) -> None:
    clean = posixpath.normpath(relpath)
    if relpath.startswith("/") or "\\" in relpath or clean != relpath or clean.startswith(".."):
        raise FormatError(manifest, "files", f"{relpath!r} is not a plain path inside the dataset")
    if relpath == MANIFEST:
        raise FormatError(manifest, "files", f"{MANIFEST} cannot list itself")


def _check_file(dataset: str, relpath: str, rows: int | None, sha256: str, verify_sha256: bool) -> str:
    """Existence, hash and row count of one listed file; returns its full path."""
    path = join(dataset, relpath)
    if not exists(path):
        raise FormatError(path, None, f"listed in {MANIFEST} but missing")
    if verify_sha256:
        actual = sha256_file(path)
        if actual != sha256:
            raise FormatError(path, None, f"sha256 {actual[:16]}… does not match {MANIFEST} ({sha256[:16]}…)")
    if relpath.endswith(".parquet"):
        with open_parquet(path) as parquet:
            found = parquet.metadata.num_rows
        if rows is not None and found != rows:
            raise FormatError(path, None, f"has {found} rows, {MANIFEST} says {rows}")
    return path


def _batches(
    path: str, schema: pa.Schema, columns: list[str] | None = None
) -> Iterator[tuple[int, pa.RecordBatch]]:
    """Stream a dataset file conformed to `schema` (or to the `columns` projection of it)."""
    wanted = schema if columns is None else pa.schema([schema.field(name) for name in columns])
    with open_parquet(path) as parquet:
        check_schema(parquet.schema_arrow, schema, path, extra="error")
        offset = 0
        try:
            for batch in parquet.iter_batches(batch_size=_BATCH_ROWS, columns=wanted.names):
                yield offset, conform(batch, wanted, path, row_offset=offset)
                offset += batch.num_rows
        except (pa.ArrowException, OSError) as exc:
            raise FormatError(path, None, f"unreadable data: {exc}") from exc


def _read_classes(path: str) -> pa.Table:
    table = pa.Table.from_batches([batch for _, batch in _batches(path, CLASSES)], schema=CLASSES)
    n = table.num_rows
    row = _first(pc.not_equal(table.column("class_id"), pa.array(np.arange(n, dtype=np.int32))))
    if row is not None:
        raise FormatError(
            path, "class_id", f"row {row} has class_id {table.column('class_id')[row]}, expected {row}"
        )
    parents = table.column("parents").combine_chunks()
    outside = _first(
        pc.or_(pc.less(pc.list_flatten(parents), 0), pc.greater_equal(pc.list_flatten(parents), n))
    )
    if outside is not None:
        row = pc.list_parent_indices(parents)[outside].as_py()
        raise FormatError(path, "parents", f"row {row} names a parent outside 0..{n - 1}")
    return table


def _check_shard_batch(batch: pa.RecordBatch, n_classes: int, path: str, offset: int) -> np.ndarray:
    """Row checks of one shard batch; returns its flattened labels (int64)."""
    labels, scores = batch.column("labels"), batch.column("scores")
    row = _first(pc.not_equal(pc.list_value_length(labels), pc.list_value_length(scores)))
    if row is not None:
        raise FormatError(
            path, "scores", f"row {row + offset} has {len(scores[row])} scores for {len(labels[row])} labels"
        )
    parent = pc.list_parent_indices(labels).to_numpy()
    flat = pc.list_flatten(labels).to_numpy().astype(np.int64)
    bad = np.flatnonzero((flat < 0) | (flat >= n_classes))
    if bad.size:
        raise FormatError(
            path,
            "labels",
            f"row {parent[bad[0]] + offset} has label {flat[bad[0]]}, outside 0..{n_classes - 1}",
        )
    keys = np.sort(parent * max(n_classes, 1) + flat)
    repeated = np.flatnonzero(keys[1:] == keys[:-1])
    if repeated.size:
        row, label = divmod(int(keys[repeated[0]]), max(n_classes, 1))
        raise FormatError(path, "labels", f"row {row + offset} lists label {label} twice")
    values = pc.list_flatten(scores)
    bad_score = _first(pc.invert(pc.and_(pc.greater_equal(values, 0), pc.less_equal(values, 1))))
    if bad_score is not None:
        row = pc.list_parent_indices(scores)[bad_score].as_py() + offset
        raise FormatError(path, "scores", f"row {row} has score {values[bad_score].as_py()}, outside [0, 1]")
    return flat


def _check_shard_layout(manifest_path: str, manifest: Manifest) -> None:
    """Shard names parse, agree with their split, and each split has indices 0..count-1 exactly once."""
    by_split: dict[str, list[tuple[int, int]]] = {}
    for entry in manifest.shards:
        try:
            split, index, count = parse_shard_path(entry.path)
        except ValueError as exc:
            raise FormatError(manifest_path, "shards", str(exc)) from exc
        if split != entry.split:
            raise FormatError(manifest_path, "shards", f"{entry.path} is listed with split {entry.split!r}")
        by_split.setdefault(split, []).append((index, count))
    for split, parts in by_split.items():
        counts = {count for _, count in parts}
        if len(counts) != 1:
            raise FormatError(manifest_path, "shards", f"split {split!r} mixes shard counts {sorted(counts)}")
        count = counts.pop()
        missing = sorted(set(range(count)) - {index for index, _ in parts})
        if missing or len(parts) != count:
            problem = (
                f"shard {missing[0]:05d}-of-{count:05d} missing" if missing else "a shard is listed twice"
            )
            raise FormatError(manifest_path, "shards", f"split {split!r}: {problem}")


def _check_unlisted(dataset: str, listed: set[str]) -> None:
    """Parquet files in shards/, candidates/ or rejects/ that the manifest does not list: another run's."""
    for folder in ("shards", "candidates", "rejects"):
        for path in list_files(join(dataset, folder)):
            relpath = f"{folder}/{posixpath.basename(path)}"
            if relpath not in listed:
                raise FormatError(path, None, f"not listed in {MANIFEST} (left from another run?)")


def _compare(manifest_path: str, column: str, said: int, found: int, what: str) -> None:
    if said != found:
        raise FormatError(manifest_path, column, f"says {said}, {what} {found}")


def validate_dataset(path: PathLike, verify_sha256: bool = True) -> DatasetSummary:
    """Check a dataset against its manifest: files, hashes, schemas, label ids, splits and counts.

    Reads every byte once for the hashes, and streams only the label, score and split columns of the
    shards, so memory stays at one batch plus a per-class counter.
    """
    dataset = os.fspath(path)
    if not exists(dataset):
        raise FormatError(dataset, None, "does not exist")
    manifest = read_manifest(dataset)
    manifest_path = join(dataset, MANIFEST)

    relpaths = [entry.path for entry in manifest.shards] + [entry.path for entry in manifest.files]
    for relpath in relpaths:
        _check_relpath(manifest_path, relpath)
    if len(set(relpaths)) != len(relpaths):
        duplicate = next(relpath for relpath in relpaths if relpaths.count(relpath) > 1)
        raise FormatError(manifest_path, "files", f"{duplicate} is listed twice")
    _check_shard_layout(manifest_path, manifest)
    _check_unlisted(dataset, set(relpaths))

    files = {entry.path: entry for entry in manifest.files}
    if "classes.parquet" not in files:
        raise FormatError(manifest_path, "files", "classes.parquet is not listed")
    for entry in manifest.files:
        file_path = _check_file(dataset, entry.path, entry.rows, entry.sha256, verify_sha256)
        schema = schema_for(entry.path)
        if schema is not None and entry.path != "classes.parquet":
            for _ in _batches(file_path, schema):
                pass
    classes = _read_classes(join(dataset, "classes.parquet"))
    n_classes = classes.num_rows

    per_class = np.zeros(n_classes, dtype=np.int64)
    images: dict[str, int] = {}
    labels: dict[str, int] = {}
    for entry in manifest.shards:
        shard = _check_file(dataset, entry.path, entry.rows, entry.sha256, verify_sha256)
        images[entry.split] = images.get(entry.split, 0) + entry.rows
        for offset, batch in _batches(shard, SHARD, ["labels", "scores", "split"]):
            _check_split_column(batch.column("split"), entry.split, shard, offset)
            flat = _check_shard_batch(batch, n_classes, shard, offset)
            per_class += np.bincount(flat, minlength=n_classes)
            labels[entry.split] = labels.get(entry.split, 0) + len(flat)

    counts = manifest.counts
    _compare(manifest_path, "counts.classes", counts.classes, n_classes, "classes.parquet has")
    _compare(manifest_path, "counts.images", counts.images, sum(images.values()), "shards hold")
    _compare(manifest_path, "counts.labels", counts.labels, int(per_class.sum()), "shards hold")
    for split in sorted(set(counts.splits) | set(images)):
        said = counts.splits.get(split, SplitCounts(images=0, labels=0))
        _compare(
            manifest_path, f"counts.splits.{split}.images", said.images, images.get(split, 0), "shards hold"
        )
        _compare(
            manifest_path, f"counts.splits.{split}.labels", said.labels, labels.get(split, 0), "shards hold"
        )
    selected = classes.column("selected").to_numpy()
    mismatch = np.flatnonzero(selected != per_class)
    if mismatch.size:
        class_id = int(mismatch[0])
        raise FormatError(
            join(dataset, "classes.parquet"),
            "selected",
            f"class {class_id} says {selected[class_id]}, shards hold {per_class[class_id]} labels",
        )

    warnings = {"classes_without_labels": int((per_class == 0).sum())}
    return DatasetSummary(
        path=dataset,
        dataset_id=manifest.dataset_id,
        schema_version=manifest.schema_version,
        images=counts.images,
        labels=counts.labels,
        classes=n_classes,
        splits=dict(sorted(images.items())),
        shards=len(manifest.shards),
        files=len(manifest.files),
        warnings={name: n for name, n in warnings.items() if n},
    )
