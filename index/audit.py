"""Which labels to verify next: a sample of the kept labels aimed where the class estimates are least sure.

The calibrated estimate is limited by how many labels were checked (docs/benchmarks.md: per-class MAE on
webjft's synthetic datasets fell from 0.04-0.06 to 0.02-0.025 with a uniform audit of a quarter of the
labels). Spending the same audit where it narrows the most intervals helps further: each class gets labels
in proportion to its labels x its interval width. Classes with fewer than `MIN_LABELS` labels get none: their
intervals are the widest, so they took much of the budget, and a handful of checked labels leaves a class of
ten rough anyway. On tuning crawls (seeds 0-6, 3,400 labels beside the crawl's sample) leaving them out took
MAE over classes with >= 50 labels from 0.021 / 0.025 to 0.018 / 0.019 (pixels / random ViT), and over
classes with >= 20 from 0.032 / 0.035 to 0.025 / 0.026; a uniform draw gave 0.022 / 0.025 and 0.038 / 0.040.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from index.noise import NoiseResult

MIN_LABELS = 20  # classes with fewer labels get no audit labels (module docstring)

AUDIT = pa.schema(
    [
        pa.field("image_id", pa.string(), False),
        pa.field("class_key", pa.string(), False),
        pa.field("class_name", pa.string()),
        pa.field("url", pa.string()),
        pa.field("p_noisy", pa.float32(), False),
        pa.field("correct", pa.bool_()),  # empty: for a person to fill in; then the file is a verified sample
    ]
)


def allocate(weights: np.ndarray, capacity: np.ndarray, budget: int) -> np.ndarray:
    """Integer counts per class, in proportion to `weights`, none above its `capacity`, summing to
    min(budget, total capacity): whole shares first, then one at a time to the largest remainders."""
    weights = np.where(capacity > 0, np.maximum(weights, 0), 0).astype(np.float64)
    counts = np.zeros(len(weights), dtype=np.int64)
    left = int(min(budget, capacity.sum()))
    while left > 0:
        room = capacity - counts
        share = np.where(room > 0, weights, 0)
        if share.sum() <= 0:
            share = (room > 0).astype(np.float64)  # nothing left to rank by: spread evenly
        ideal = left * share / share.sum()
        whole = np.minimum(np.floor(ideal).astype(np.int64), room)
        if whole.sum() == 0:
            order = np.lexsort((np.arange(len(ideal)), -(ideal - np.floor(ideal))))
            take = order[room[order] > 0][:left]
            whole = np.zeros_like(counts)
            whole[take] = 1
        counts += whole
        left -= int(whole.sum())
    return counts


def choose_audit(result: NoiseResult, budget: int, seed: int = 0, min_labels: int = MIN_LABELS) -> np.ndarray:
    """Rows of `result.images` to verify next: not verified already, of classes with at least `min_labels`
    labels, `allocate`d over those classes by labels x interval width, drawn uniformly within each class;
    sorted. Fewer than `budget` when those classes have fewer labels left to check."""
    classes = result.classes
    class_id = classes.column("class_id").to_numpy()
    width = classes.column("noise_high").to_numpy() - classes.column("noise_low").to_numpy()
    label_class = result.images.column("class_id").to_numpy()
    open_label = np.ones(len(label_class), dtype=bool)
    open_label[result.verified_labels] = False
    n_classes = int(max(class_id.max(initial=-1), label_class.max(initial=-1))) + 1
    n_labels = classes.column("n_images").to_numpy()
    capacity = np.bincount(label_class[open_label], minlength=n_classes)[class_id]
    counts = allocate(n_labels * width, np.where(n_labels >= min_labels, capacity, 0), budget)
    rng = np.random.default_rng([seed, 13])
    order = np.argsort(label_class, kind="stable")
    order = order[open_label[order]]
    starts = np.searchsorted(label_class[order], class_id)
    picks = [rng.choice(order[start:start + size], count, replace=False)
             for start, size, count in zip(starts, capacity, counts, strict=True) if count]
    return np.sort(np.concatenate(picks)) if picks else np.zeros(0, dtype=np.int64)


def audit_table(result: NoiseResult, rows: np.ndarray, class_keys: pa.Array, class_names: pa.Array | None,
                urls: pa.Array | None = None) -> pa.Table:
    """The chosen labels as an AUDIT table: keys and names by class id, `urls` aligned with `rows` if known."""
    chosen = result.images.take(pa.array(rows, pa.int64()))
    class_ids = chosen.column("class_id")
    return pa.table({
        "image_id": chosen.column("image_id"),
        "class_key": class_keys.take(class_ids).cast(pa.string()),
        "class_name": class_names.take(class_ids).cast(pa.string()) if class_names is not None
        else pa.nulls(len(rows), pa.string()),
        "url": urls if urls is not None else pa.nulls(len(rows), pa.string()),
        "p_noisy": chosen.column("p_noisy"),
        "correct": pa.nulls(len(rows), pa.bool_()),
    }, schema=AUDIT)
