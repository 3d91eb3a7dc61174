"""Turning scores into probabilities one can trust, and measuring how far they are from that.

Selection keeps, per class, the labels whose *mean calibrated score* reaches the target precision, so a
score of 0.8 has to mean "right 80% of the time". This module holds the calibrators (isotonic regression
by pool-adjacent-violators, Platt scaling), the expected calibration error written to the manifest, and a
reliability table for reports. Pure numpy; every calibrator is a small picklable object.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

__all__ = [
    "IsotonicCalibrator",
    "PlattCalibrator",
    "expected_calibration_error",
    "fit_isotonic",
    "fit_platt",
    "pav",
    "reliability_table",
]

_EPS = 1e-6


def _as_float(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape(-1)


def _bin_index(p: np.ndarray, bins: int) -> np.ndarray:
    return np.clip((p * bins).astype(np.int64), 0, bins - 1)


def expected_calibration_error(p: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Mean |predicted - observed| over equal-width score bins, weighted by bin size (0 for no data).

    The usual ECE (Naeini et al. 2015): what the manifest reports as how far scores are from probabilities.
    """
    p, y = _as_float(p), _as_float(y)
    if p.shape != y.shape:
        raise ValueError(f"p and y differ in length: {p.size} != {y.size}")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    if p.size == 0:
        return 0.0
    idx = _bin_index(np.clip(p, 0.0, 1.0), bins)
    count = np.bincount(idx, minlength=bins)
    gap = np.abs(np.bincount(idx, weights=p, minlength=bins) - np.bincount(idx, weights=y, minlength=bins))
    return float(gap.sum() / count.sum())


def reliability_table(p: np.ndarray, y: np.ndarray, bins: int = 15) -> pa.Table:
    """Per equal-width bin: edges, count, mean score and observed frequency (null when empty), for reports."""
    p, y = _as_float(p), _as_float(y)
    if p.shape != y.shape:
        raise ValueError(f"p and y differ in length: {p.size} != {y.size}")
    idx = _bin_index(np.clip(p, 0.0, 1.0), bins)
    count = np.bincount(idx, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(idx, weights=p, minlength=bins) / count
        freq = np.bincount(idx, weights=y, minlength=bins) / count
    empty = count == 0
    edges = np.arange(bins + 1) / bins
    return pa.table({
        "bin_low": pa.array(edges[:-1], pa.float64()),
        "bin_high": pa.array(edges[1:], pa.float64()),
        "count": pa.array(count, pa.int64()),
        "mean_score": pa.array(mean_p, pa.float64(), mask=empty),
        "observed": pa.array(freq, pa.float64(), mask=empty),
    })


def pav(y: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """Pool-adjacent-violators: the non-decreasing sequence closest to `y` in weighted least squares.

    `y` must already be ordered by the predictor. Returns the fitted value per element.
    """
    y = _as_float(y)
    w = np.ones_like(y) if w is None else _as_float(w)
    if w.shape != y.shape:
        raise ValueError(f"y and w differ in length: {y.size} != {w.size}")
    if (w <= 0).any():
        raise ValueError("weights must be positive")
    # Stack of blocks: (weighted mean, total weight, length); merge while the last two violate order.
    means: list[float] = []
    weights: list[float] = []
    sizes: list[int] = []
    for value, weight in zip(y.tolist(), w.tolist(), strict=True):
        means.append(value)
        weights.append(weight)
        sizes.append(1)
        while len(means) > 1 and means[-2] >= means[-1]:
            total = weights[-2] + weights[-1]
            means[-2] = (means[-2] * weights[-2] + means[-1] * weights[-1]) / total
            weights[-2] = total
            sizes[-2] += sizes[-1]
            del means[-1], weights[-1], sizes[-1]
    return np.repeat(np.asarray(means), np.asarray(sizes, dtype=np.int64))


@dataclass(frozen=True)
class IsotonicCalibrator:
    """A monotone map from raw score to probability, interpolated between fitted knots.

    `logit`: interpolate log-odds rather than probabilities. Calibration curves are close to logistic,
    so between two knots above 0.5 a straight line in probability lies below the curve (and above it
    below 0.5): selection near the top would be systematically too cautious.
    """

    x: np.ndarray  # increasing knots (raw scores)
    y: np.ndarray  # non-decreasing probabilities at the knots
    logit: bool = False

    def __call__(self, z: np.ndarray) -> np.ndarray:
        if not self.logit:
            return np.interp(_as_float(z), self.x, self.y)
        return _sigmoid(np.interp(_as_float(z), self.x, np.log(self.y / (1 - self.y))))

    def describe(self) -> dict:
        return {"kind": "isotonic", "knots": int(self.x.size), "interpolation": "logit" if self.logit else "linear"}


@dataclass(frozen=True)
class PlattCalibrator:
    """sigmoid(a * z + b): a two-parameter logistic map, robust on small samples."""

    a: float
    b: float

    def __call__(self, z: np.ndarray) -> np.ndarray:
        return _sigmoid(self.a * _as_float(z) + self.b)

    def describe(self) -> dict:
        return {"kind": "platt", "a": round(self.a, 6), "b": round(self.b, 6)}


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def fit_platt(z: np.ndarray, y: np.ndarray, w: np.ndarray | None = None, prior_strength: float = 1.0
              ) -> PlattCalibrator:
    """Platt scaling by Newton's method, with Platt's smoothed targets so a separable sample stays finite.

    `prior_strength` adds that many pseudo-counts split over the two classes (Platt 1999 uses 1 and 2).
    Newton starts from the constant fit (a = 0) and halves its step until the loss falls (Lin, Lin & Weng
    2007): full Newton steps from a = 1 ran away to a ~ 1e10 on a sample whose fit is a ~ 1, because the
    loss is nearly flat far from the data and the curvature there says nothing about the minimum.
    """
    z, y = _as_float(z), _as_float(y)
    w = np.ones_like(z) if w is None else _as_float(w)
    n_pos, n_neg = float((w * y).sum()), float((w * (1 - y)).sum())
    hi = (n_pos + prior_strength) / (n_pos + 2 * prior_strength)
    lo = prior_strength / (n_neg + 2 * prior_strength)
    t = np.where(y > 0.5, hi, lo)

    def loss(a: float, b: float) -> float:
        # Cross-entropy against the smoothed targets, log(1 + e^u) - t u, computed without overflow.
        u = a * z + b
        return float(np.sum(w * (np.logaddexp(0.0, u) - t * u)))

    a, b = 0.0, float(np.log((n_pos + prior_strength) / (n_neg + prior_strength)))
    current = loss(a, b)
    for _ in range(100):
        p = _sigmoid(a * z + b)
        r = w * (p - t)
        s = w * np.maximum(p * (1 - p), 1e-12)
        g = np.array([(r * z).sum(), r.sum()])
        h = np.array([[(s * z * z).sum() + 1e-9, (s * z).sum()], [(s * z).sum(), s.sum() + 1e-9]])
        step = np.linalg.solve(h, g)
        scale = 1.0
        while scale > 1e-10:
            value = loss(a - scale * float(step[0]), b - scale * float(step[1]))
            if value <= current - 1e-4 * scale * float(g @ step):  # Armijo: a real decrease, not a flat one
                break
            scale *= 0.5
        else:
            break  # no step decreases the loss: at the minimum up to rounding
        a, b = a - scale * float(step[0]), b - scale * float(step[1])
        previous, current = current, value
        if np.abs(scale * step).max() < 1e-10 or previous - current < 1e-12 * max(1.0, abs(current)):
            break
    return PlattCalibrator(a, b)


def fit_isotonic(z: np.ndarray, y: np.ndarray, w: np.ndarray | None = None, prior: np.ndarray | None = None,
                 prior_strength: float = 0.0, centered: bool = True) -> IsotonicCalibrator:
    """Isotonic regression of `y` on `z` (ties in `z` pooled first), as an interpolating calibrator.

    `centered` (Oron & Flournoy's centred isotonic regression) puts one knot at the weighted centre of
    each fitted block and interpolates log-odds between them: strictly increasing between the outermost
    centres, so scores keep their order and selection can cut anywhere, not only between flat steps.
    Otherwise knots sit at both ends of each block (flat steps joined by ramps).

    With `prior` (a probability per sample, e.g. a Platt fit) each fitted block is shrunk toward the
    prior's mean over the block by `prior_strength` pseudo-samples: the extreme blocks of a small sample
    otherwise claim probabilities of exactly 0 or 1.
    """
    z, y = _as_float(z), _as_float(y)
    w = np.ones_like(z) if w is None else _as_float(w)
    if z.size == 0:
        raise ValueError("cannot fit an isotonic calibrator on no data")
    order = np.argsort(z, kind="stable")
    z, y, w = z[order], y[order], w[order]
    ux, first = np.unique(z, return_index=True)
    wsum = np.add.reduceat(w, first)
    ymean = np.add.reduceat(w * y, first) / wsum
    fitted = pav(ymean, wsum)
    if prior is not None and prior_strength > 0:
        pmean = np.add.reduceat(w * _as_float(prior)[order], first) / wsum
        # Block-level shrinkage: blocks are runs of equal fitted value.
        block = np.concatenate([[0], np.cumsum(np.diff(fitted) != 0)])
        bw = np.bincount(block, weights=wsum)
        by = np.bincount(block, weights=wsum * fitted)
        bp = np.bincount(block, weights=wsum * pmean)
        shrunk = (by + prior_strength * bp / bw) / (bw + prior_strength)
        fitted = np.maximum.accumulate(shrunk[block])
    if centered:
        block = np.concatenate([[0], np.cumsum(np.diff(fitted) != 0)])
        bw = np.bincount(block, weights=wsum)
        centre = np.bincount(block, weights=wsum * ux) / bw
        value = np.bincount(block, weights=wsum * fitted) / bw
        return IsotonicCalibrator(centre, np.clip(value, _EPS, 1 - _EPS), logit=True)
    # Knots at both ends of every block keep steps flat and ramps between them.
    change = np.flatnonzero(np.diff(fitted) != 0)
    keep = np.unique(np.concatenate([[0, ux.size - 1], change, change + 1]))
    return IsotonicCalibrator(ux[keep].copy(), np.clip(fitted[keep], _EPS, 1 - _EPS))
