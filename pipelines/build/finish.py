"""The driver's last step: classes.parquet, the file list with hashes, the counts, manifest.json last.

Input fingerprints are sha256 of every crawl file the build reads (images, signals, taxonomy, verified):
content hashes survive copies between disks and object stores, which size+mtime do not, and cost one
sequential read per file, done in parallel threads before the pipeline starts. The dataset id is a
hash of the recorded config, the fingerprints and the code version: the same inputs give the same id.
"""

from __future__ import annotations

import functools
import hashlib
import json
import posixpath
import subprocess
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from labeling.taxonomy import DEFAULT_TAXONOMY_RESOURCE
from pipelines.build import layout
from pipelines.build.tables import read_table
from pipelines.formats import (
    CLASSES,
    Counts,
    FileEntry,
    Manifest,
    ShardEntry,
    SplitCounts,
    conform,
    exists,
    file_entry,
    join,
    list_files,
    parse_shard_path,
    resolve,
    sha256_file,
    write_dataset_file,
    write_manifest,
)

_HASH_THREADS = 8


@functools.cache
def code_version() -> str:
    """`webjft <version>` plus the git commit of the checkout when there is one."""
    try:
        version = metadata.version("webjft")
    except metadata.PackageNotFoundError:
        version = "unknown"
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"webjft {version}" + (f" (git {commit})" if commit else "")


def _parallel(function, items: list) -> list:
    if len(items) < 2:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(_HASH_THREADS, len(items))) as pool:
        return list(pool.map(function, items))


def fingerprints(crawl: str, paths: list[str], taxonomy_path: str | None) -> dict[str, str]:
    """`relative path -> sha256:<hex>` for the crawl files read, plus the taxonomy when it is not one of them."""
    base = crawl.rstrip("/") + "/"
    names = [path[len(base):] if path.startswith(base) else path for path in paths]
    digests = _parallel(sha256_file, list(paths))
    inputs = {name: f"sha256:{digest}" for name, digest in zip(names, digests, strict=True)}
    if taxonomy_path is None:
        data = resources.files("labeling").joinpath(DEFAULT_TAXONOMY_RESOURCE).read_bytes()
        inputs["taxonomy"] = f"embedded:sha256:{hashlib.sha256(data).hexdigest()}"
    elif not taxonomy_path.startswith(base):
        inputs["taxonomy"] = f"sha256:{sha256_file(taxonomy_path)}"
    return inputs


def dataset_id(config: Mapping[str, Any], inputs: Mapping[str, str]) -> str:
    """`webjft-<16 hex>`: a hash of what decides the output (not where the crawl or dataset lives)."""
    recorded = {key: value for key, value in config.items() if key != "crawl"}
    text = json.dumps({"config": recorded, "inputs": dict(inputs), "code": code_version()}, sort_keys=True)
    return "webjft-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def _shard_entry(args: tuple[str, str]) -> tuple[ShardEntry, np.ndarray]:
    dataset, relpath = args
    split, _, _ = parse_shard_path(relpath)
    path = join(dataset, relpath)
    labels = read_table(path, ["labels"]).column("labels").combine_chunks()
    flat = pc.list_flatten(labels).to_numpy().astype(np.int64)
    entry = ShardEntry(path=relpath, split=split, rows=len(labels), sha256=sha256_file(path))
    return entry, flat


def shard_entries(dataset: str, n_classes: int) -> tuple[list[ShardEntry], np.ndarray, dict[str, SplitCounts]]:
    """Every shard's entry, labels per class, and images and labels per split (read back from the shards)."""
    relpaths = [f"shards/{posixpath.basename(path)}" for path in list_files(join(dataset, "shards"))]
    results = _parallel(_shard_entry, [(dataset, relpath) for relpath in relpaths])
    per_class = np.zeros(n_classes, dtype=np.int64)
    images: Counter = Counter()
    labels: Counter = Counter()
    entries = []
    for entry, flat in results:
        entries.append(entry)
        per_class += np.bincount(flat, minlength=n_classes)
        images[entry.split] += entry.rows
        labels[entry.split] += len(flat)
    splits = {name: SplitCounts(images=images[name], labels=labels[name]) for name in sorted(images)}
    return entries, per_class, splits


def file_entries(dataset: str, relpaths: list[str]) -> list[FileEntry]:
    return _parallel(lambda relpath: file_entry(dataset, relpath), relpaths)


def folder_files(dataset: str, folder: str) -> list[str]:
    return [f"{folder}/{posixpath.basename(path)}" for path in list_files(join(dataset, folder))]


def rejects_by_reason(dataset: str, relpaths: list[str]) -> dict[str, int]:
    counts: Counter = Counter()
    for relpath in relpaths:
        reasons = read_table(join(dataset, relpath), ["reason"]).column("reason")
        if len(reasons):
            values = pc.value_counts(reasons)
            counts.update(dict(zip(values.field("values").to_pylist(), values.field("counts").to_pylist(),
                                   strict=True)))
    return dict(sorted(counts.items()))


def finished_classes(classes: pa.Table, per_class: np.ndarray) -> pa.Table:
    """The chosen thresholds with `selected` counted from the shards (what validation checks)."""
    index = classes.schema.get_field_index("selected")
    classes = classes.set_column(index, CLASSES.field("selected"), pa.array(per_class, pa.int64()))
    return conform(classes, CLASSES, layout.CLASSES, extra="error")


def selection_summary(classes: pa.Table) -> dict[str, Any]:
    """Overall selection statistics from the classes table."""
    selected = classes.column("selected").to_numpy()
    precision = np.nan_to_num(classes.column("precision").to_numpy(zero_copy_only=False).astype(np.float64))
    kept = int(selected.sum())
    return {
        "candidates": int(classes.column("candidates").to_numpy().sum()),
        "labels": kept,
        "classes_with_candidates": int((classes.column("candidates").to_numpy() > 0).sum()),
        "classes_with_labels": int((selected > 0).sum()),
        "expected_precision": round(float((precision * selected).sum() / kept), 6) if kept else None,
    }


def remove_work(dataset: str) -> None:
    fs, inner = resolve(join(dataset, layout.WORK))
    if fs.exists(inner):
        fs.rm(inner, recursive=True)


def finish(dataset: str, *, classes: pa.Table, config: Mapping[str, Any], inputs: Mapping[str, str],
           selection: Mapping[str, Any], extra_files: list[str]) -> Manifest:
    """Write classes.parquet, drop the scratch folder, then the manifest listing everything, last."""
    n_classes = classes.num_rows
    shards, per_class, splits = shard_entries(dataset, n_classes)
    for name, _ in config["splits"]:
        splits.setdefault(name, SplitCounts(images=0, labels=0))
    classes = finished_classes(classes, per_class)
    write_dataset_file(classes, dataset, layout.CLASSES)
    remove_work(dataset)
    relpaths = [layout.CLASSES, *folder_files(dataset, "candidates"), *folder_files(dataset, "rejects"),
                *[relpath for relpath in extra_files if exists(join(dataset, relpath))]]
    files = file_entries(dataset, sorted(set(relpaths)))
    rejects = [relpath for relpath in relpaths if relpath.startswith("rejects/")]
    by_reason = rejects_by_reason(dataset, rejects)
    counts = Counts(
        images=sum(split.images for split in splits.values()),
        labels=int(per_class.sum()),
        classes=n_classes,
        splits=dict(sorted(splits.items())),
    )
    manifest = Manifest(
        dataset_id=dataset_id(config, inputs),
        created_at=datetime.now(UTC),
        config=dict(config),
        inputs=dict(inputs),
        code_version=code_version(),
        counts=counts,
        shards=shards,
        files=files,
        selection={
            **selection,
            **selection_summary(classes),
            "rejects_by_reason": by_reason,
            "rejected_rows": sum(by_reason.values()),
        },
    )
    write_manifest(dataset, manifest)
    return manifest
