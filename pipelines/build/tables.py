"""Arrow helpers shared by the build's Beam steps: hash bucketing, packing, order-free concatenation, sorting.

Tables travel between Beam steps pickled, and pickling a slice of a table pickles its whole buffers, so
every table handed to Beam here is built with `take` (a compact copy), never sliced. Evidence, the bulk of
the build's shuffles, travels packed instead (`pack`): compressed Arrow IPC bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from pipelines.formats import hash_ids, resolve


def bucket_of(ids: pa.Array | pa.ChunkedArray, n_buckets: int) -> np.ndarray:
    """Bucket of each id: stable 64-bit hash mod `n_buckets` (same on every machine and runner)."""
    return (hash_ids(ids) % np.uint64(n_buckets)).astype(np.int64)


def by_bucket(table: pa.Table, column: str, n_buckets: int) -> Iterator[tuple[int, pa.Table]]:
    """(bucket, rows of that bucket) for every non-empty bucket, rows in their input order."""
    if table.num_rows == 0:
        return
    buckets = bucket_of(table.column(column), n_buckets)
    order = np.argsort(buckets, kind="stable")
    present, starts = np.unique(buckets[order], return_index=True)
    ends = np.append(starts[1:], len(order))
    for bucket, start, end in zip(present.tolist(), starts.tolist(), ends.tolist(), strict=True):
        yield bucket, table.take(pa.array(order[start:end]))


SHUFFLE_IPC = pa.ipc.IpcWriteOptions(compression="zstd")


def pack(table: pa.Table) -> bytes:
    """`table` as zstd-compressed Arrow IPC stream bytes, the form evidence crosses a shuffle in.

    The local FnApiRunner holds a whole shuffle in the driver process, as decoded values, and encodes it
    again to hand it on: as bytes, evidence takes about 12 bytes a row there instead of about 60 as a
    pickled table, which keeps the million-image build's peak memory down (docs/benchmarks.md).
    """
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=SHUFFLE_IPC) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def unpack(data: bytes) -> pa.Table:
    """The table `pack` made."""
    return pa.ipc.open_stream(data).read_all()


def concat(tables: Iterable[pa.Table | None], schema: pa.Schema) -> pa.Table:
    """One table from the non-None pieces (an empty table of `schema` when there are none)."""
    pieces = [table for table in tables if table is not None and table.num_rows]
    if not pieces:
        return schema.empty_table()
    pieces = [piece if piece.schema == schema else piece.select(schema.names).cast(schema) for piece in pieces]
    return pa.concat_tables(pieces).combine_chunks()


def canonical_order(table: pa.Table, keys: Iterable[str] | None = None) -> pa.Table:
    """Rows sorted by `keys` (default every column): the same rows give the same table in any input order.

    Sorting on every column makes ties exact duplicates, so a group's float sums never depend on the
    order in which a runner delivered its pieces.
    """
    names = list(keys) if keys is not None else table.column_names
    if table.num_rows < 2:
        return table
    order = pc.sort_indices(table, sort_keys=[(name, "ascending", "at_end") for name in names])
    return table.take(order)


def read_table(path: str, columns: list[str] | None = None, filters: pc.Expression | None = None) -> pa.Table:
    """A Parquet file the build wrote (local path or fsspec URL), optionally pruned to columns and rows."""
    fs, inner = resolve(path)
    filesystem = None if isinstance(fs, LocalFileSystem) else fs
    return pq.read_table(inner, columns=columns, filters=filters, filesystem=filesystem)
