"""Tiny crawls and datasets built by hand for the format tests (3 classes, a dozen images)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from labeling.evidence import FEATURES, FEATURES_SCHEMA
from pipelines.formats import (
    CANDIDATES,
    CLASSES,
    REJECTS,
    SHARD,
    Counts,
    Manifest,
    SplitCounts,
    split_of,
    write_crawl_table,
    write_dataset_file,
    write_manifest,
    write_shard,
)

KEYS = ["n00015388", "n02084071", "n02121808"]  # animal, dog, domestic cat
N_IMAGES = 12


def taxonomy_table() -> pa.Table:
    return pa.table(
        {
            "class_id": pa.array([0, 1, 2], pa.int32()),
            "key": KEYS,
            "name": ["animal", "dog", "cat"],
            "synonyms": pa.array(
                [["beast"], ["domestic dog"], ["house cat", "kitty"]], pa.list_(pa.string())
            ),
            "parents": pa.array([[], [0], [0]], pa.list_(pa.int32())),
        }
    )


def image_ids(n: int = N_IMAGES) -> list[str]:
    return [f"img-{i:03d}" for i in range(n)]


def images_table(ids: list[str] | None = None) -> pa.Table:
    ids = image_ids() if ids is None else ids
    return pa.table(
        {
            "image_id": ids,
            "url": [f"https://example.com/{i}.jpg" for i in ids],
            "content": pa.array([b"\xff\xd8\xff" + i.encode() for i in ids], pa.binary()),
            "width": pa.array([4] * len(ids), pa.int32()),
            "height": pa.array([3] * len(ids), pa.int32()),
        }
    )


def signals_table() -> pa.Table:
    """Two signals per image, from the built-in sources, each naming a class in text."""
    ids = image_ids()
    sources = ["alt_text", "page_title", "surrounding_text", "anchor_text", "query_click", "user_feedback"]
    rows = {
        "image_id": [i for i in ids for _ in range(2)],
        "source": [sources[k % len(sources)] for k in range(2 * len(ids))],
        "text": [("a dog" if k % 3 else "a cat") for k in range(2 * len(ids))],
        "class_key": [None] * (2 * len(ids)),
        "weight": pa.array([1.0] * (2 * len(ids)), pa.float32()),
        "page_id": [f"page-{k % 5}" for k in range(2 * len(ids))],
    }
    return pa.table(rows)


def verified_table() -> pa.Table:
    return pa.table(
        {"image_id": ["img-000", "img-001"], "class_key": [KEYS[1], KEYS[2]], "correct": [True, False]}
    )


def truth_table() -> pa.Table:
    labels = [[1] if i % 2 else [2, 0] for i in range(N_IMAGES)]
    return pa.table({"image_id": image_ids(), "labels": pa.array(labels, pa.list_(pa.int32()))})


def make_crawl(root: Path, *, extras: bool = True) -> str:
    """A valid crawl: images and signals in two parts each, taxonomy, and (with `extras`) verified, truth."""
    crawl = str(root / "crawl")
    images, signals = images_table(), signals_table()
    for part, (table, half) in enumerate([(images, slice(0, 6)), (images, slice(6, 12))]):
        write_crawl_table(table[half], crawl, "images", part, 2)
    write_crawl_table(signals.slice(0, 10), crawl, "signals", 0, 2)
    write_crawl_table(signals.slice(10), crawl, "signals", 1, 2)
    write_crawl_table(taxonomy_table(), crawl, "taxonomy")
    if extras:
        write_crawl_table(verified_table(), crawl, "verified")
        write_crawl_table(truth_table(), crawl, "truth")
    return crawl


SPLITS = {"train": 0.5, "val": 0.25, "eval": 0.25}


def shard_rows(ids: list[str] | None = None) -> pa.Table:
    """Labelled images with their deterministic split (labels: class 1 or 2, plus 0 on even images)."""
    ids = image_ids() if ids is None else ids
    labels = [[1, 0] if k % 2 == 0 else [2] for k in range(len(ids))]
    scores = [[0.9, 0.6] if k % 2 == 0 else [0.75] for k in range(len(ids))]
    images = images_table(ids)
    return pa.table(
        {
            "image_id": ids,
            "url": images.column("url"),
            "content": images.column("content"),
            "labels": pa.array(labels, pa.list_(pa.int32())),
            "scores": pa.array(scores, pa.list_(pa.float32())),
            "split": split_of(pa.array(ids), SPLITS),
        },
        schema=SHARD,
    )


def classes_table(per_class: np.ndarray) -> pa.Table:
    tax = taxonomy_table()
    n = len(per_class)
    return pa.table(
        {
            "class_id": tax.column("class_id"),
            "key": tax.column("key"),
            "name": tax.column("name"),
            "parents": tax.column("parents"),
            "threshold": pa.array([0.5] * n, pa.float32()),
            "candidates": pa.array(per_class + 1, pa.int64()),
            "selected": pa.array(per_class, pa.int64()),
            "precision": pa.array([0.8] * n, pa.float32()),
            "precision_low": pa.array([0.7] * n, pa.float32()),
            "precision_high": pa.array([0.9] * n, pa.float32()),
        },
        schema=CLASSES,
    )


def candidates_table(rows: pa.Table) -> pa.Table:
    parents = pc.list_parent_indices(rows.column("labels"))
    n = len(parents)
    columns = {
        "image_id": pc.take(rows.column("image_id"), parents),
        "class_id": pc.list_flatten(rows.column("labels")),
        **{name: pa.array([1] * n, FEATURES_SCHEMA.field(name).type) for name in FEATURES},
        "score": pc.list_flatten(rows.column("scores")),
        "selected": pa.array([True] * n),
    }
    return pa.table(columns, schema=CANDIDATES)


def rejects_table() -> pa.Table:
    return pa.table(
        {
            "file": ["signals/part-00000-of-00002.parquet"],
            "row": pa.array([3], pa.int64()),
            "field": ["weight"],
            "reason": ["non-finite weight"],
            "value": ["nan"],
        },
        schema=REJECTS,
    )


def make_dataset(root: Path, *, manifest: bool = True, name: str = "dataset") -> str:
    """A valid dataset: train in two shards, val and eval in one each, classes, candidates, rejects."""
    dataset = str(root / name)
    rows = shard_rows()
    shards, counts = [], {}
    for split in SPLITS:
        part = rows.filter(pc.equal(rows.column("split"), split))
        n_shards = 2 if split == "train" else 1
        bounds = np.linspace(0, part.num_rows, n_shards + 1).astype(int)
        for index in range(n_shards):
            piece = part.slice(bounds[index], bounds[index + 1] - bounds[index])
            shards.append(write_shard(piece, dataset, split, index, n_shards, row_group_size=4))
        n_labels = int(pc.sum(pc.list_value_length(part.column("labels"))).as_py() or 0)
        counts[split] = SplitCounts(images=part.num_rows, labels=n_labels)
    flat = pc.list_flatten(rows.column("labels")).to_numpy()
    per_class = np.bincount(flat, minlength=3)
    files = [
        write_dataset_file(classes_table(per_class), dataset, "classes.parquet"),
        write_dataset_file(candidates_table(rows), dataset, "candidates/part-00000.parquet"),
        write_dataset_file(rejects_table(), dataset, "rejects/signals.parquet"),
    ]
    if manifest:
        write_manifest(dataset, make_manifest(shards, files, counts, int(per_class.sum()), rows.num_rows))
    return dataset


def make_manifest(shards, files, counts, labels: int, images: int) -> Manifest:
    return Manifest(
        dataset_id="tiny",
        created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        config={"target_precision": 0.8, "splits": SPLITS},
        inputs={"crawl": "0" * 64},
        code_version="0.1.0",
        counts=Counts(images=images, labels=labels, classes=3, splits=counts),
        shards=shards,
        files=files,
        selection={"labels_considered": 40},
    )
