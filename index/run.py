"""The two ways to run the noise index, as library calls the command line and the service share.

`noise_for_dataset`: a built dataset (DESIGN.md); embeddings from an open_clip tower (cached per shard) or a
given file; the verified sample from `--verified` or the crawl named in the manifest; results written to
`noise/` and listed in the manifest. `noise_for_labels`: any labelled image set given as a labels file and an
embeddings file; results written to an output folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from index.audit import MIN_LABELS, audit_table, choose_audit
from index.embed import Embedder, ModelChoice, embed_shards
from index.figure import write_curve_png
from index.noise import ClassSpace, NoiseConfig, NoiseResult, Verified, estimate_noise
from index.tables import align, read_embeddings, read_labels, read_verified_file, write_noise_tables
from pipelines.formats import (
    FormatError,
    atomic_write_bytes,
    atomic_write_table,
    exists,
    file_entry,
    join,
    open_parquet,
    read_manifest,
    read_taxonomy,
    write_dataset_file,
    write_manifest,
)

Progress = Callable[[str, int, int], None]
NOISE_DIR = "noise"
FIGURE = "fig2.png"
REPORT = "report.json"
AUDIT_SAMPLE = "audit-sample.parquet"


@dataclass
class NoiseRun:
    """What a run produced: the estimates, where they went, and what fed them."""

    result: NoiseResult
    out: str
    files: list[str]
    figure: str
    class_names: pa.Array | None = None
    model: str | None = None
    notes: list[str] = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    audit: str | None = None  # the labels to verify next, when asked for
    audit_min_labels: int | None = None  # ... drawn from classes with at least this many labels


def _report(run: NoiseRun) -> bytes:
    body = {
        "method": run.result.method,
        "model": run.model,
        "notes": run.notes + run.result.notes,
        "stats": {**run.result.stats, **run.stats},
        "curve": run.result.curve.to_dict(),
        "audit_sample": os.path.basename(run.audit) if run.audit else None,
        "audit_min_labels": run.audit_min_labels,
    }
    return (json.dumps(body, indent=2, sort_keys=True, default=str) + "\n").encode()


def _verified(paths: str | Sequence[str] | None, ids: pa.Array, keys: pa.Array | None, n_classes: int,
              notes: list[str]) -> Verified | None:
    """The verified rows of one file or several (concatenated; a label verified twice keeps its first verdict).
    Rows of a file without scores get NaN scores when another file has them."""
    if paths is None:
        return None
    parts = []
    for path in [paths] if isinstance(paths, str) else paths:
        verified, unknown = read_verified_file(path, ids, keys, n_classes)
        if unknown:
            notes.append(f"{unknown:,} verified rows of {os.path.basename(path)} name an image or class outside "
                         "this set")
        parts.append(verified)
    if not parts:
        return None
    scored = any(part.score is not None for part in parts)
    scores = [part.score if part.score is not None else np.full(len(part.row), np.nan, np.float32) for part in parts]
    return Verified(*(np.concatenate([getattr(v, name) for v in parts]) for name in ("row", "class_id", "correct")),
                    score=np.concatenate(scores) if scored else None)


def _keep_filled_audit(path: str) -> None:
    """Refuse to replace an audit sample someone has started to fill in: their verdicts would be lost."""
    if not exists(path):
        return
    with open_parquet(path) as parquet:
        if "correct" not in parquet.schema_arrow.names:
            return
        filled = parquet.read(columns=["correct"]).column("correct")
    done = len(filled) - filled.null_count
    if done:
        raise FormatError(path, "correct", f"{done:,} labels are already checked here; move the file away (and "
                                           "pass it with --verified) before asking for a new sample")


def _write_audit(run: NoiseRun, size: int, min_labels: int, seed: int, keys: pa.Array, names: pa.Array | None,
                 urls_of: Callable[[pa.Array], pa.Array] | None = None) -> None:
    """`size` labels to verify next, of classes with at least `min_labels` labels, as OUT/audit-sample.parquet
    (`index.audit`)."""
    rows = choose_audit(run.result, size, seed, min_labels)
    run.audit_min_labels = min_labels
    if len(rows) < size:
        run.notes.append(f"audit sample: {len(rows):,} of the {size:,} labels asked for; classes with at least "
                         f"{min_labels} labels have no more labels that are not verified yet")
    ids = run.result.images.column("image_id").take(pa.array(rows, pa.int64()))
    table = audit_table(run.result, rows, keys, names, urls_of(ids) if urls_of else None)
    path = join(run.out, AUDIT_SAMPLE)
    atomic_write_table(table, path)
    run.files.append(path)
    run.audit = path


def noise_for_labels(
    labels: str, embeddings: str, out: str, *, verified: str | Sequence[str] | None = None,
    taxonomy: str | None = None, config: NoiseConfig | None = None, progress: Progress | None = None,
    audit_size: int = 0, audit_min_labels: int = MIN_LABELS,
) -> NoiseRun:
    """Noise of a labelled set: LABELS (image_id, labels) and EMBEDDINGS (image_id, embedding) -> OUT; with
    `audit_size`, also OUT/audit-sample.parquet: that many labels to verify next, of classes with at least
    `audit_min_labels` labels."""
    if audit_size:
        _keep_filled_audit(join(out, AUDIT_SAMPLE))
    keys = names = parents = None
    n_classes = None
    if taxonomy is not None:
        tax = read_taxonomy(taxonomy)
        keys, names, n_classes = pa.array(tax.keys), pa.array(tax.names), len(tax)
        parents = tax.to_table().column("parents").combine_chunks()
    label_ids, lists, n_classes, scores = read_labels(labels, n_classes)
    emb_ids, x = read_embeddings(embeddings, progress)
    labelled, x = align(label_ids, lists, n_classes, emb_ids, x, embeddings, scores)
    notes: list[str] = []
    found = _verified(verified, labelled.image_ids, keys, n_classes, notes)
    result = estimate_noise(x, labelled, found, config, progress=progress, inplace=True,
                            class_space=ClassSpace(parents, names))
    files = write_noise_tables(result.classes, result.images, out)
    figure = join(out, FIGURE)
    write_curve_png(result.curve, figure, f"label noise vs distance: {os.path.basename(labels)}")
    run = NoiseRun(result, out, files + [figure], figure, names, None, notes)
    if audit_size:
        class_keys = keys if keys is not None else pa.array([str(c) for c in range(n_classes)])
        _write_audit(run, audit_size, audit_min_labels, config.seed if config else 0, class_keys, names)
    atomic_write_bytes(join(out, REPORT), _report(run))
    run.files.append(join(out, REPORT))
    return run


def _dataset_labels(dataset: str, shards: list[str]) -> tuple[pa.Array, pa.ListArray, pa.ListArray]:
    """Image ids, labels and the build's scores (calibrated P(label right)) of every shard, in order."""
    columns = ("image_id", "labels", "scores")
    parts: dict[str, list] = {name: [] for name in columns}
    for relpath in shards:
        with open_parquet(join(dataset, relpath)) as parquet:
            table = parquet.read(columns=list(columns))
        for name in columns:
            parts[name].extend(table.column(name).chunks)
    types = (pa.string(), pa.list_(pa.int32()), pa.list_(pa.float32()))
    ids, lists, scores = (pa.chunked_array(parts[name], kind).combine_chunks()
                          for name, kind in zip(columns, types, strict=True))
    return ids, lists, scores


def default_verified(dataset: str) -> str | None:
    """A dataset's verified sample: its own `verified.parquet` (the crawl's verified pairs that were candidates,
    with the build's out-of-fold scores), else the crawl's when the manifest names a crawl that has one."""
    own = join(dataset, "verified.parquet")
    if exists(own):
        return own
    crawl = read_manifest(dataset).config.get("crawl")
    if not isinstance(crawl, str):
        return None
    path = join(crawl, "verified.parquet")
    return path if exists(path) else None


def noise_for_dataset(
    dataset: str, *, embeddings: str | None = None, verified: str | Sequence[str] | None = None,
    use_verified: bool = True, audit_size: int = 0, audit_min_labels: int = MIN_LABELS,
    model: ModelChoice | None = None, device: str | None = None, batch_size: int = 256,
    workers: int | None = None, config: NoiseConfig | None = None, progress: Progress | None = None,
    decode_on: str = "auto",
    log: Callable[[str], None] | None = None,
) -> NoiseRun:
    """Noise of a built dataset, written to DATASET/noise/ and listed in its manifest (written last); with
    `audit_size`, also noise/audit-sample.parquet: that many kept labels to verify next (of classes with at
    least `audit_min_labels` labels), with their URLs."""
    dataset = os.fspath(dataset).rstrip("/")
    manifest = read_manifest(dataset)
    if audit_size:
        _keep_filled_audit(join(dataset, NOISE_DIR, AUDIT_SAMPLE))
    with open_parquet(join(dataset, "classes.parquet")) as parquet:
        classes = parquet.read(columns=["class_id", "key", "name", "parents"])
    n_classes = classes.num_rows
    shards = [entry.path for entry in manifest.shards]
    label_ids, lists, scores = _dataset_labels(dataset, shards)
    notes: list[str] = []
    stats: dict = {}
    description = None
    if embeddings is not None:
        emb_ids, x = read_embeddings(embeddings, progress)
        source = embeddings
    else:
        model = model or ModelChoice("webjft-tiny-vit", None, "no --weights given")
        description = model.describe()
        if log:
            log(f"model: {description}")
        embedder = Embedder.load(model, device, batch_size, workers, decode_on)
        source = join(dataset, NOISE_DIR, "embeddings")
        files, stats = embed_shards(embedder, [join(dataset, s) for s in shards], source, progress=progress,
                                    total_images=manifest.counts.images)
        emb_ids, x = read_embeddings(files, progress)
    labelled, x = align(label_ids, lists, n_classes, emb_ids, x, source, scores)
    if use_verified and verified is None:
        verified = default_verified(dataset)
        notes.append(f"verified sample: {verified}" if verified else "no verified sample found for this dataset")
    found = _verified(verified if use_verified else None, labelled.image_ids, classes.column("key"), n_classes, notes)
    space = ClassSpace(classes.column("parents").combine_chunks(), classes.column("name").combine_chunks())
    result = estimate_noise(x, labelled, found, config, progress=progress, inplace=True, class_space=space)

    entries = [write_dataset_file(result.classes, dataset, f"{NOISE_DIR}/classes.parquet"),
               write_dataset_file(result.images, dataset, f"{NOISE_DIR}/images.parquet")]
    figure = join(dataset, NOISE_DIR, FIGURE)
    write_curve_png(result.curve, figure, f"label noise vs distance: dataset {manifest.dataset_id}")
    run = NoiseRun(result, join(dataset, NOISE_DIR), [], figure, classes.column("name").combine_chunks(),
                   description, notes, stats)
    if audit_size:
        _write_audit(run, audit_size, audit_min_labels, (config or NoiseConfig()).seed,
                     classes.column("key").combine_chunks(), run.class_names, lambda ids: _urls(dataset, shards, ids))
        entries.append(file_entry(dataset, f"{NOISE_DIR}/{AUDIT_SAMPLE}"))
    atomic_write_bytes(join(dataset, NOISE_DIR, REPORT), _report(run))
    entries += [file_entry(dataset, f"{NOISE_DIR}/{FIGURE}"), file_entry(dataset, f"{NOISE_DIR}/{REPORT}")]
    kept = [entry for entry in manifest.files if not entry.path.startswith(f"{NOISE_DIR}/")]
    write_manifest(dataset, manifest.model_copy(update={"files": kept + entries}))
    run.files = [join(dataset, entry.path) for entry in entries]
    return run


def _urls(dataset: str, shards: list[str], ids: pa.Array) -> pa.Array:
    """The URL of each of `ids`, from the dataset's shards."""
    found = []
    for relpath in shards:
        with open_parquet(join(dataset, relpath)) as parquet:
            found.append(parquet.read(columns=["image_id", "url"]))
    table = pa.concat_tables(found)
    return table.column("url").take(pc.index_in(ids, value_set=table.column("image_id")))


def worst_classes(run: NoiseRun, top: int = 10, min_images: int = 20) -> pa.Table:
    """The `top` classes with the highest estimated noise among those with at least `min_images` labels."""
    table = run.result.classes
    big = table.filter(pc.greater_equal(table.column("n_images"), min_images))
    if big.num_rows == 0:
        big = table
    order = pc.sort_indices(big, sort_keys=[("noise_rate", "descending"), ("class_id", "ascending")])
    worst = big.take(order[:top])
    if run.class_names is not None:
        worst = worst.append_column("name", run.class_names.take(worst.column("class_id")))
    return worst
