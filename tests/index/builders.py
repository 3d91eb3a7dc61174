"""Small inputs for the noise index tests: a dataset folder made by hand from a synthetic crawl, and labels and
embeddings files of a labelled set."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from index.testdata import NoisySet
from pipelines.formats import (
    Counts,
    Manifest,
    SplitCounts,
    read_images,
    read_taxonomy,
    read_truth,
    split_of,
    write_crawl_table,
    write_dataset_file,
    write_manifest,
    write_shard,
)


def make_dataset(crawl: Path, out: Path, flip: float = 0.25, seed: int = 0, verified_share: float = 0.4) -> dict:
    """A dataset whose labels are the crawl's truth with `flip` of the first labels moved to another active
    class; a verified sample of `verified_share` of the labels is written to the crawl folder `out/crawl`,
    which the manifest names. Returns the truth per label for checks."""
    rng = np.random.default_rng(seed)
    taxonomy = read_taxonomy(crawl)
    images = read_images(crawl, ["image_id", "url", "content"])
    truth = read_truth(crawl)
    truth = truth.take(pc.index_in(images.column("image_id"), value_set=truth.column("image_id")))
    true_lists = truth.column("labels").to_pylist()
    active = np.unique(np.concatenate([np.asarray(t) for t in true_lists if t]))
    labels, wrong = [], []
    for true in true_lists:
        row = list(true)
        flags = [False] * len(row)
        if row and rng.random() < flip:
            other = int(rng.choice(active[~np.isin(active, row)]))
            row[0], flags[0] = other, True
        labels.append(row)
        wrong.append(flags)
    splits = split_of(images.column("image_id"))
    table = pa.table({
        "image_id": images.column("image_id"), "url": images.column("url"), "content": images.column("content"),
        "labels": pa.array(labels, pa.list_(pa.int32())),
        # A labeller that half knows: wrong labels score lower on average, with overlap.
        "scores": pa.array([[float(np.clip((0.55 if f else 0.85) + rng.normal(0, 0.1), 0, 1)) for f in flags]
                            for flags in wrong], pa.list_(pa.float32())),
        "split": splits,
    })
    out.mkdir(parents=True, exist_ok=True)
    shards, split_counts = [], {}
    for split in sorted(set(splits.to_pylist())):
        part = table.filter(pc.equal(table.column("split"), split))
        shards.append(write_shard(part, str(out), split, 0, 1, row_group_size=64))
        n_labels = int(pc.sum(pc.list_value_length(part.column("labels"))).as_py() or 0)
        split_counts[split] = SplitCounts(images=part.num_rows, labels=n_labels)
    flat = np.concatenate([np.asarray(r, dtype=np.int64) for r in labels if r])
    per_class = np.bincount(flat, minlength=len(taxonomy))
    tax = taxonomy.to_table()
    classes = pa.table({
        "class_id": tax.column("class_id"), "key": tax.column("key"), "name": tax.column("name"),
        "parents": tax.column("parents"), "threshold": pa.array(np.full(len(taxonomy), 0.5, np.float32)),
        "candidates": pa.array(per_class), "selected": pa.array(per_class),
        "precision": pa.nulls(len(taxonomy), pa.float32()), "precision_low": pa.nulls(len(taxonomy), pa.float32()),
        "precision_high": pa.nulls(len(taxonomy), pa.float32()),
    })
    entry = write_dataset_file(classes, str(out), "classes.parquet")
    crawl_copy = out.parent / f"{out.name}-crawl"
    pairs = [(i, c, not w) for i, (row, flags) in enumerate(zip(labels, wrong, strict=True))
             for c, w in zip(row, flags, strict=True)]
    chosen = rng.random(len(pairs)) < verified_share
    keys = taxonomy.keys
    ids = images.column("image_id").to_pylist()
    verified = pa.table({
        "image_id": [ids[i] for (i, _, _), keep in zip(pairs, chosen, strict=True) if keep],
        "class_key": [str(keys[c]) for (_, c, _), keep in zip(pairs, chosen, strict=True) if keep],
        "correct": [ok for (_, _, ok), keep in zip(pairs, chosen, strict=True) if keep],
    })
    crawl_copy.mkdir(parents=True, exist_ok=True)
    write_crawl_table(verified, str(crawl_copy), "verified")
    manifest = Manifest(
        dataset_id="tiny-noise-test", created_at=dt.datetime.now(dt.UTC), config={"crawl": str(crawl_copy)},
        inputs={}, code_version="test",
        counts=Counts(images=table.num_rows, labels=int(len(flat)), classes=len(taxonomy), splits=split_counts),
        shards=shards, files=[entry],
    )
    write_manifest(str(out), manifest)
    return {"labels": labels, "wrong": wrong, "ids": ids, "verified": crawl_copy / "verified.parquet"}


def write_labelled_set(noisy: NoisySet, folder: Path) -> tuple[Path, Path, Path]:
    """labels.parquet, embeddings.parquet and verified.parquet (class_key = class id as text) of a set."""
    folder.mkdir(parents=True, exist_ok=True)
    labels = noisy.labels
    lists = pa.ListArray.from_arrays(pa.array(labels.offsets.astype(np.int32)), pa.array(labels.values, pa.int32()))
    pq.write_table(pa.table({"image_id": labels.image_ids, "labels": lists}), folder / "labels.parquet")
    x = noisy.embeddings
    vectors = pa.ListArray.from_arrays(pa.array(np.arange(0, x.size + 1, x.shape[1], dtype=np.int32)),
                                       pa.array(x.reshape(-1), pa.float32()))
    # Rows in another order than the labels, to exercise alignment.
    order = np.random.default_rng(1).permutation(len(x))
    pq.write_table(pa.table({"image_id": labels.image_ids.take(pa.array(order)), "embedding": vectors.take(order)}),
                   folder / "embeddings.parquet")
    v = noisy.verified
    pq.write_table(pa.table({"image_id": labels.image_ids.take(pa.array(v.row)),
                             "class_key": pa.array([str(c) for c in v.class_id]),
                             "correct": pa.array(v.correct, pa.bool_())}), folder / "verified.parquet")
    return folder / "labels.parquet", folder / "embeddings.parquet", folder / "verified.parquet"
