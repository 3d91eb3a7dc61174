"""PCA whitening of embeddings before any distance is taken.

A few directions carry most of the variance of an image model's features (overall brightness, a random
tower's dominant channels), and Euclidean distances, k-means and nearest neighbours then mostly measure
those. Rotating onto the principal axes and dividing each by its spread makes every direction count
alike, a standard step before retrieval (Jégou and Chum, "Negative evidence and co-occurrences in image
retrieval", ECCV 2012).

Full whitening also blows up the directions that hold only noise (on sklearn's digits it made the noise
estimates worse), so each axis is divided by sqrt(variance + `shrink` x mean variance) instead: axes well
above the mean are equalised, axes far below it stay small. Directions below `rank_tol` of the largest
variance are dropped, and at most `max_dims` kept, in order of variance, so `x[:, :d]` of the result is its
own best d-dimensional projection. The gains and the choice of `shrink` are in docs/benchmarks.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Whitening:
    """`(x - mean) @ matrix`: projection on the kept principal axes, each scaled to unit variance."""

    mean: np.ndarray  # (d_in,) float64
    matrix: np.ndarray  # (d_in, d_out) float64
    variance: np.ndarray  # (d_out,) the axes' variances, descending

    @property
    def dims(self) -> int:
        return self.matrix.shape[1]


def fit_whitening(
    x: np.ndarray, max_dims: int, *, sample: int = 100_000, seed: int = 0, rank_tol: float = 1e-6,
    shrink: float = 1.0, chunk_rows: int = 65_536,
) -> Whitening:
    """Principal axes and variances of (a seeded sample of at most `sample` rows of) `x`, each axis divided
    by sqrt(its variance + `shrink` x the mean variance of the kept axes)."""
    n, d = x.shape
    rows = np.arange(n) if n <= sample else np.sort(np.random.default_rng(seed).choice(n, sample, replace=False))
    mean = np.zeros(d)
    for start in range(0, len(rows), chunk_rows):
        mean += np.asarray(x[rows[start : start + chunk_rows]], dtype=np.float64).sum(0)
    mean /= max(len(rows), 1)
    scatter = np.zeros((d, d))
    for start in range(0, len(rows), chunk_rows):
        chunk = np.asarray(x[rows[start : start + chunk_rows]], dtype=np.float64) - mean
        scatter += chunk.T @ chunk
    variance, axes = np.linalg.eigh(scatter / max(len(rows) - 1, 1))
    order = np.argsort(variance)[::-1]
    variance, axes = variance[order], axes[:, order]
    # eigh's sign of each axis is arbitrary: fix it (largest component positive) for identical outputs.
    axes *= np.where(axes[np.abs(axes).argmax(0), np.arange(d)] < 0, -1.0, 1.0)
    kept = min(max_dims, int((variance > rank_tol * max(variance[0], 0.0)).sum())) if d else 0
    kept = max(kept, 1) if d else 0
    variance, axes = variance[:kept], axes[:, :kept]
    floor = shrink * float(variance.mean()) if kept else 0.0
    return Whitening(mean, axes / np.sqrt(np.maximum(variance + floor, 1e-30)), variance)


def apply_whitening(x: np.ndarray, whitening: Whitening, *, inplace: bool = False,
                    chunk_rows: int = 65_536) -> np.ndarray:
    """Whitened rows, L2-normalised (zero rows stay zero), float32, chunk by chunk.

    With `inplace` and a writable float32 `x` of at least as many columns, the result is written over the
    first columns of `x` and returned as a view of them, so a 1M x 512 matrix is not copied.
    """
    n = x.shape[0]
    dims = whitening.dims
    if inplace and x.dtype == np.float32 and x.flags.writeable and x.shape[1] >= dims:
        out = x[:, :dims]
    else:
        out = np.empty((n, dims), dtype=np.float32)
    mean = whitening.mean.astype(np.float32)
    matrix = whitening.matrix.astype(np.float32)
    for start in range(0, n, chunk_rows):
        chunk = (np.asarray(x[start : start + chunk_rows], dtype=np.float32) - mean) @ matrix
        norm = np.linalg.norm(chunk, axis=1, keepdims=True)
        out[start : start + chunk_rows] = chunk / np.where(norm > 0, norm, 1)
    return out
