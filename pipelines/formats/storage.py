"""File access through fsspec: local paths, `file://` URLs and any protocol whose back end is installed.

Paths stay in the caller's notation (a `file://` URL stays a URL) so that messages name what the user typed.
Writes go to a hidden temporary name in the target folder and are renamed into place, so a reader never
sees a half-written file. On local disks the rename is atomic; on object stores `mv` is copy-then-delete,
which is why a dataset's manifest is written last and is what marks it complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import uuid
from collections.abc import Iterator
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.formats.errors import FormatError

PathLike = str | os.PathLike[str]

DEFAULT_ROW_GROUP_ROWS = 65_536
"""Rows per Parquet row group unless the caller passes `row_group_size` (shards with image bytes should)."""

PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 3,
    "write_statistics": True,
    "use_dictionary": True,
    "row_group_size": DEFAULT_ROW_GROUP_ROWS,
    "store_schema": True,
}
"""Fixed writer settings: the same table always gives the same bytes (with the same pyarrow version)."""

_CHUNK = 1 << 20


def resolve(path: PathLike) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return the file system serving `path` and the path within it."""
    text = os.fspath(path)
    try:
        fs, inner = fsspec.core.url_to_fs(text)
    except (ImportError, ValueError) as exc:
        protocol = text.split("://", 1)[0] if "://" in text else "file"
        raise FormatError(text, None, f"no file system for protocol {protocol!r}: {exc}") from exc
    return fs, inner


def join(base: PathLike, *parts: str) -> str:
    """Join path parts with "/" keeping the base's notation (plain path or URL)."""
    text = os.fspath(base).rstrip("/")
    tail = "/".join(part.strip("/") for part in parts if part.strip("/"))
    return f"{text}/{tail}" if tail else (text or "/")


def exists(path: PathLike) -> bool:
    fs, inner = resolve(path)
    return bool(fs.exists(inner))


def isdir(path: PathLike) -> bool:
    fs, inner = resolve(path)
    return bool(fs.isdir(inner))


def makedirs(path: PathLike) -> None:
    fs, inner = resolve(path)
    fs.makedirs(inner, exist_ok=True)


def list_files(directory: PathLike, suffix: str = ".parquet") -> list[str]:
    """Files directly in `directory` ending in `suffix`, sorted by name; hidden and temporary files skipped.

    A missing folder has no files (callers decide whether that is an error).
    """
    fs, inner = resolve(directory)
    if not fs.isdir(inner):
        return []
    names = sorted(
        posixpath.basename(entry["name"].rstrip("/"))
        for entry in fs.ls(inner, detail=True)
        if entry.get("type") == "file"
    )
    return [
        join(directory, name) for name in names if name.endswith(suffix) and not name.startswith((".", "_"))
    ]


def read_bytes(path: PathLike) -> bytes:
    fs, inner = resolve(path)
    return bytes(fs.cat_file(inner))


def sha256_file(path: PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB pieces so that memory stays flat on large shards."""
    fs, inner = resolve(path)
    digest = hashlib.sha256()
    with fs.open(inner, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _temporary(fs: fsspec.AbstractFileSystem, inner: str) -> str:
    folder, name = posixpath.split(inner)
    fs.makedirs(folder, exist_ok=True)
    return posixpath.join(folder, f".{name}.tmp-{uuid.uuid4().hex}")


def _discard(fs: fsspec.AbstractFileSystem, tmp: str) -> None:
    try:
        if fs.exists(tmp):
            fs.rm(tmp)
    except OSError:
        pass  # the write already failed; its error is the one worth reporting


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one, never a part."""
    fs, inner = resolve(path)
    tmp = _temporary(fs, inner)
    try:
        with fs.open(tmp, "wb") as handle:
            handle.write(data)
        fs.mv(tmp, inner)
    except BaseException:
        _discard(fs, tmp)
        raise


def atomic_write_table(table: pa.Table, path: PathLike, **parquet_opts: Any) -> None:
    """Write `table` as Parquet to `path` atomically, with deterministic settings (`PARQUET_OPTIONS`).

    Chunks are combined first: page boundaries follow the input's chunking, so without this the same
    rows could give different bytes and a different sha256 in the manifest.
    """
    fs, inner = resolve(path)
    options = {**PARQUET_OPTIONS, **parquet_opts}
    table = table.combine_chunks()
    tmp = _temporary(fs, inner)
    try:
        with fs.open(tmp, "wb") as handle:
            pq.write_table(table, handle, **options)
        fs.mv(tmp, inner)
    except BaseException:
        _discard(fs, tmp)
        raise


@contextlib.contextmanager
def open_parquet(path: PathLike) -> Iterator[pq.ParquetFile]:
    """Open a Parquet file for reading its footer and batches; unreadable files are a FormatError."""
    text = os.fspath(path)
    fs, inner = resolve(text)
    try:
        handle = fs.open(inner, "rb")
    except FileNotFoundError as exc:
        raise FormatError(text, None, "file not found") from exc
    except OSError as exc:
        raise FormatError(text, None, f"cannot open: {exc}") from exc
    with handle:
        try:
            parquet = pq.ParquetFile(handle)
        except (pa.ArrowException, OSError) as exc:
            raise FormatError(text, None, f"not a Parquet file ({exc})") from exc
        yield parquet


def iter_parquet_batches(parquet: pq.ParquetFile, path: str, **options: Any) -> Iterator[pa.RecordBatch]:
    """`parquet.iter_batches(**options)`, with a corrupt page reported as one FormatError naming `path`."""
    batches = parquet.iter_batches(**options)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (pa.ArrowException, OSError) as exc:
            raise FormatError(path, None, f"unreadable data: {exc}") from exc
        yield batch
