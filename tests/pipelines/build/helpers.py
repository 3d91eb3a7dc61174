"""Small crawls made by hand for the build tests, and ways to compare two datasets byte by byte."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.build import BuildConfig
from pipelines.formats import write_crawl_table
from tests.pipelines.formats.builders import KEYS, taxonomy_table

IN_MEMORY = ("--direct_running_mode=in_memory",)


def config(**overrides) -> BuildConfig:
    """Test settings: few buckets, small shards (several per split), the in-process runner."""
    settings = {"n_buckets": 8, "rows_per_shard": 100, "pipeline_args": IN_MEMORY, **overrides}
    return BuildConfig(**settings)


def digests(dataset: Path) -> dict[str, str]:
    """sha256 of every file under `dataset`; the manifest's without its creation time."""
    out = {}
    for path in sorted(dataset.rglob("*")):
        if not path.is_file():
            continue
        relpath = path.relative_to(dataset).as_posix()
        data = path.read_bytes()
        if relpath == "manifest.json":
            manifest = json.loads(data)
            manifest.pop("created_at")
            data = json.dumps(manifest, sort_keys=True).encode()
        out[relpath] = hashlib.sha256(data).hexdigest()
    return out


def manifest(dataset: Path) -> dict:
    return json.loads((dataset / "manifest.json").read_text())


def image_ids(n: int) -> list[str]:
    return [f"img-{i:05d}" for i in range(n)]


def write_images(crawl: Path, ids: list[str]) -> None:
    table = pa.table(
        {
            "image_id": ids,
            "url": [f"https://example.com/{i}.jpg" for i in ids],
            "content": pa.array([b"\xff\xd8\xff" + i.encode() for i in ids], pa.binary()),
            "width": pa.array([4] * len(ids), pa.int32()),
            "height": pa.array([3] * len(ids), pa.int32()),
        }
    )
    write_crawl_table(table, str(crawl), "images")


def signals(rows: list[tuple]) -> pa.Table:
    """Signal rows (image_id, source, text, class_key, weight, page_id), nulls allowed anywhere."""
    columns = list(zip(*rows, strict=True)) if rows else [[]] * 6
    return pa.table(
        {
            "image_id": pa.array(columns[0], pa.string()),
            "source": pa.array(columns[1], pa.string()),
            "text": pa.array(columns[2], pa.string()),
            "class_key": pa.array(columns[3], pa.string()),
            "weight": pa.array(columns[4], pa.float32()),
            "page_id": pa.array(columns[5], pa.string()),
        }
    )


def write_signals(crawl: Path, tables: list[pa.Table]) -> list[Path]:
    """Written raw (not through the contract writer) so that bad rows reach the build as they are."""
    folder = crawl / "signals"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for part, table in enumerate(tables):
        path = folder / f"part-{part:05d}-of-{len(tables):05d}.parquet"
        pq.write_table(table, path, row_group_size=16)  # several row groups: rows numbered across them
        paths.append(path)
    return paths


def small_crawl(crawl: Path, n_images: int, signal_tables: list[pa.Table], verified: pa.Table | None = None) -> Path:
    """A crawl over the 3-class taxonomy (animal > dog, cat) of the format tests."""
    crawl.mkdir(parents=True, exist_ok=True)
    write_crawl_table(taxonomy_table(), str(crawl), "taxonomy")
    write_images(crawl, image_ids(n_images))
    write_signals(crawl, signal_tables)
    if verified is not None:
        write_crawl_table(verified, str(crawl), "verified")
    return crawl


def good_rows(ids: list[str], seed: int = 0) -> list[tuple]:
    """Plausible evidence: alt texts and clicks naming dog or cat, pages shared by a few images."""
    rng = np.random.default_rng(seed)
    rows = []
    for k, image in enumerate(ids):
        name = "dog" if k % 3 else "cat"
        rows.append((image, "alt_text", f"a photo of a {name}", None, 1.0, None))
        rows.append((image, "query_click", name, None, float(rng.integers(1, 5)), None))
        rows.append((image, "page_title", "animals", None, 1.0, f"page-{k % 7}"))
    return rows


__all__ = ["KEYS"]
