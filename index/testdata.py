"""Labelled embedding sets whose wrong labels are known: the yardstick for the noise estimator.

`gaussian_classes` draws look-alike class pairs in embedding space and mislabels a class-dependent share of
each class, mostly as its look-alike (structured noise, the hard case for distance alone). `digits` does the
same to sklearn's bundled 8x8 digits with look-alike flips (1/7, 3/8, 4/9, 5/6, ...). Only the benchmarks and
tests read `wrong`; the estimator sees embeddings, labels and the small verified sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from index.noise import Labels, Verified

DIGIT_LOOKALIKES = {0: 6, 1: 7, 2: 3, 3: 8, 4: 9, 5: 6, 6: 5, 7: 1, 8: 3, 9: 4}


@dataclass(frozen=True)
class NoisySet:
    """Embeddings, noisy labels (one per image), the verified sample, and the truth for evaluation."""

    embeddings: np.ndarray
    labels: Labels
    verified: Verified
    true_class: np.ndarray
    seed: int

    @property
    def wrong(self) -> np.ndarray:
        """Per label (in `labels.pairs()` order): is it wrong?"""
        return self.labels.values != self.true_class


def _single_labels(labelled: np.ndarray, n_classes: int, prefix: str) -> Labels:
    n = len(labelled)
    ids = pa.array([f"{prefix}{i:07d}" for i in range(n)], pa.string())
    return Labels(ids, np.arange(n + 1, dtype=np.int64), labelled.astype(np.int32), n_classes)


def _verified(labelled: np.ndarray, true_class: np.ndarray, n_verified: int, rng: np.random.Generator) -> Verified:
    rows = np.sort(rng.choice(len(labelled), size=min(n_verified, len(labelled)), replace=False))
    return Verified(rows, labelled[rows].astype(np.int32), labelled[rows] == true_class[rows])


def _flip(true_class: np.ndarray, rates: np.ndarray, lookalike: np.ndarray, structured: float,
          rng: np.random.Generator) -> np.ndarray:
    """Mislabel each image with its class's rate: as the look-alike with probability `structured`, else
    as a uniformly drawn other class."""
    n_classes = len(rates)
    labelled = true_class.copy()
    flip = rng.random(len(true_class)) < rates[true_class]
    to_lookalike = rng.random(len(true_class)) < structured
    other = (true_class + rng.integers(1, n_classes, len(true_class))) % n_classes
    labelled[flip] = np.where(to_lookalike, lookalike[true_class], other)[flip]
    return labelled


def gaussian_classes(
    seed: int = 0, n_classes: int = 40, n_images: int = 8_000, dim: int = 64, max_rate: float = 0.4,
    structured: float = 0.7, n_verified: int = 600, spread: float = 0.7,
) -> NoisySet:
    """Classes in look-alike pairs (means close to each other), Zipf-like sizes, per-class flip rates drawn
    from U(0, max_rate)."""
    rng = np.random.default_rng(seed)
    pair_means = rng.normal(size=(n_classes // 2 + 1, dim))
    means = np.repeat(pair_means, 2, axis=0)[:n_classes] + 0.6 * rng.normal(size=(n_classes, dim))
    sizes = 1.0 / np.arange(1, n_classes + 1) ** 0.6
    true_class = rng.choice(n_classes, size=n_images, p=sizes / sizes.sum())
    x = means[true_class] + spread * rng.normal(size=(n_images, dim)) * rng.uniform(0.6, 1.4, (n_images, 1))
    lookalike = np.arange(n_classes) ^ 1
    lookalike[lookalike >= n_classes] = 0
    rates = rng.uniform(0, max_rate, n_classes)
    labelled = _flip(true_class, rates, lookalike, structured, rng)
    return NoisySet(x.astype(np.float32), _single_labels(labelled, n_classes, "g"),
                    _verified(labelled, true_class, n_verified, rng), true_class, seed)


def digits(seed: int = 0, max_rate: float = 0.35, structured: float = 0.8, n_verified: int = 200) -> NoisySet:
    """sklearn's 1,797 8x8 digits (pixels, centred) with per-digit flip rates drawn from U(0.02, max_rate)."""
    from sklearn.datasets import load_digits  # benchmark and test dependency only

    data = load_digits()
    rng = np.random.default_rng(seed)
    x = data.data.astype(np.float32)
    x -= x.mean(0)
    true_class = data.target.astype(np.int64)
    lookalike = np.array([DIGIT_LOOKALIKES[d] for d in range(10)])
    rates = rng.uniform(0.02, max_rate, 10)
    labelled = _flip(true_class, rates, lookalike, structured, rng)
    return NoisySet(x, _single_labels(labelled, 10, "digit"), _verified(labelled, true_class, n_verified, rng),
                    true_class, seed)


def evaluate(noisy: NoisySet, classes: pa.Table, images: pa.Table, min_images: int = 50) -> dict[str, float]:
    """`score_estimates` of an estimate for `noisy` (images in `labels.pairs()` order)."""
    return score_estimates(classes, noisy.labels.values, images.column("p_noisy").to_numpy(), noisy.wrong,
                           min_images)


def score_estimates(classes: pa.Table, label_class: np.ndarray, p_noisy: np.ndarray, wrong: np.ndarray,
                    min_images: int = 50) -> dict[str, float]:
    """Per-class noise-rate MAE and 95%-interval coverage over classes with >= `min_images` labels, and AUROC
    of p_noisy for the wrong labels over all labels (`auroc`) and over those classes' labels (`auroc_big`).

    `classes` is a noise classes table; `label_class`, `p_noisy` and `wrong` are per label, in any order.
    """
    label_class = np.asarray(label_class, dtype=np.int64)
    n_classes = int(max(label_class.max(initial=-1), classes.column("class_id").to_numpy().max(initial=-1))) + 1
    count = np.bincount(label_class, minlength=n_classes)
    true_rate = np.bincount(label_class, wrong, n_classes) / np.maximum(count, 1)
    class_id = classes.column("class_id").to_numpy()
    keep = classes.column("n_images").to_numpy() >= min_images
    estimate = classes.column("noise_rate").to_numpy()
    low, high = classes.column("noise_low").to_numpy(), classes.column("noise_high").to_numpy()
    truth = true_rate[class_id]
    in_big = np.isin(label_class, class_id[keep])
    return {
        "classes": int(keep.sum()),
        "labels": len(label_class),
        "mae": float(np.abs(estimate - truth)[keep].mean()) if keep.any() else float("nan"),
        "coverage": float(((low <= truth) & (truth <= high))[keep].mean()) if keep.any() else float("nan"),
        "auroc": auroc(p_noisy, wrong),
        "auroc_big": auroc(p_noisy[in_big], wrong[in_big]),
        "noise": float(np.mean(wrong)),
    }


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (ties count half), by the rank-sum formula."""
    positive = np.asarray(positive, bool)
    n_pos, n_neg = positive.sum(), (~positive).sum()
    if not n_pos or not n_neg:
        return float("nan")
    order = np.argsort(score, kind="stable")
    ranks = np.empty(len(score))
    sorted_score = np.asarray(score)[order]
    _, start, counts = np.unique(sorted_score, return_index=True, return_counts=True)
    average = start + (counts + 1) / 2.0
    ranks[order] = np.repeat(average, counts)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
