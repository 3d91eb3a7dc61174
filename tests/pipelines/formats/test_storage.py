import hashlib
import os

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.formats import (
    FormatError,
    atomic_write_bytes,
    atomic_write_table,
    exists,
    list_files,
    makedirs,
    resolve,
    sha256_file,
    storage,
)


def _table(n: int = 1000) -> pa.Table:
    return pa.table({"image_id": [f"img-{i}" for i in range(n)], "value": pa.array(range(n), pa.int32())})


def _visible(folder) -> list[str]:
    return sorted(os.listdir(folder))


def test_resolve_local_and_file_url(tmp_path):
    fs, inner = resolve(str(tmp_path / "x"))
    fs_url, inner_url = resolve(f"file://{tmp_path}/x")
    assert isinstance(fs, fsspec.implementations.local.LocalFileSystem)
    assert type(fs_url) is type(fs) and inner_url == inner == f"{tmp_path}/x"


def test_resolve_unknown_protocol_is_one_line():
    with pytest.raises(FormatError) as info:
        resolve("nosuchproto://bucket/crawl")
    message = str(info.value)
    assert message.startswith("nosuchproto://bucket/crawl: no file system for protocol 'nosuchproto'")
    assert "\n" not in message


def test_atomic_write_bytes_replaces_and_leaves_no_tmp(tmp_path):
    target = tmp_path / "sub" / "manifest.json"
    atomic_write_bytes(str(target), b"one")
    atomic_write_bytes(str(target), b"two")
    assert target.read_bytes() == b"two"
    assert _visible(target.parent) == ["manifest.json"]


def test_atomic_write_table_is_byte_identical(tmp_path):
    table = _table()
    atomic_write_table(table, str(tmp_path / "a.parquet"))
    atomic_write_table(table, str(tmp_path / "b.parquet"))
    rechunked = pa.concat_tables([table.slice(0, 123), table.slice(123, 400), table.slice(523)])
    atomic_write_table(rechunked, str(tmp_path / "c.parquet"))
    a, b, c = ((tmp_path / f"{n}.parquet").read_bytes() for n in "abc")
    assert a == b == c
    assert _visible(tmp_path) == ["a.parquet", "b.parquet", "c.parquet"]
    metadata = pq.ParquetFile(tmp_path / "a.parquet").metadata
    column = metadata.row_group(0).column(1)
    assert column.compression == "ZSTD" and column.statistics.has_min_max
    assert pq.read_table(tmp_path / "a.parquet").equals(table)


def test_atomic_write_table_row_groups(tmp_path):
    atomic_write_table(_table(1000), str(tmp_path / "t.parquet"), row_group_size=300)
    assert pq.ParquetFile(tmp_path / "t.parquet").metadata.num_row_groups == 4


def test_failed_write_leaves_no_visible_target(tmp_path, monkeypatch):
    def broken(table, where, **options):
        where.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(storage.pq, "write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_table(_table(), str(tmp_path / "t.parquet"))
    assert _visible(tmp_path) == []


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "t.parquet"
    atomic_write_table(_table(10), str(target))
    before = target.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(storage.pq, "write_table", broken)
    with pytest.raises(OSError):
        atomic_write_table(_table(20), str(target))
    assert target.read_bytes() == before
    assert _visible(tmp_path) == ["t.parquet"]


def test_file_url_round_trip(tmp_path):
    url = f"file://{tmp_path}/crawl/images"
    makedirs(url)
    atomic_write_table(_table(5), f"{url}/part-1.parquet")
    atomic_write_table(_table(5), f"{url}/part-0.parquet")
    atomic_write_bytes(f"{url}/notes.txt", b"x")
    assert list_files(url) == [f"{url}/part-0.parquet", f"{url}/part-1.parquet"]
    assert list_files(url, suffix=".txt") == [f"{url}/notes.txt"]
    assert exists(f"{url}/part-0.parquet") and not exists(f"{url}/part-9.parquet")


def test_list_files_skips_hidden_and_missing(tmp_path):
    for name in ["b.parquet", "a.parquet", ".a.parquet.tmp-1", "_SUCCESS", ".hidden.parquet", "c.json"]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "dir.parquet").mkdir()
    assert list_files(str(tmp_path)) == [f"{tmp_path}/a.parquet", f"{tmp_path}/b.parquet"]
    assert list_files(str(tmp_path / "missing")) == []


def test_sha256_file(tmp_path):
    data = os.urandom(3 << 20)
    (tmp_path / "blob").write_bytes(data)
    assert sha256_file(str(tmp_path / "blob")) == hashlib.sha256(data).hexdigest()
    assert sha256_file(f"file://{tmp_path}/blob") == hashlib.sha256(data).hexdigest()
