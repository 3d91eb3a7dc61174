"""Stage 4: a calibrated probability that a candidate label is right, learnt from the verified sample.

The model is an L2-regularised logistic regression on engineered evidence features (`labeling.design`),
fitted by Newton's method (IRLS) in numpy, its penalty chosen by cross-validated log-loss; the linear
score is then mapped to a probability by a calibrator fitted on *out-of-fold* scores, so the calibration
is not flattered by the rows the model was fitted on. A verified sample too small or one-sided to learn
from falls back to the unsupervised label model, shifted to the sample's smoothed positive rate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from labeling.calibration import PlattCalibrator, expected_calibration_error, fit_isotonic, fit_platt
from labeling.design import count_design, engineered_design

__all__ = [
    "MIN_PER_CLASS",
    "MIN_ROWS",
    "Calibrator",
    "LinearModel",
    "RawModel",
    "Scorer",
    "ShiftedCalibrator",
    "fit_counts_baseline",
    "fit_logistic",
    "fit_scorer",
]

MIN_ROWS = 30
"""Fewer verified rows than this: fall back to the label model (no supervised fit)."""
MIN_PER_CLASS = 5
"""Fewer correct (or wrong) verified rows than this: fall back to the label model."""
ISOTONIC_MIN_PER_CLASS = 5
"""Isotonic calibration needs this many correct and wrong rows; below it (inside cross-fitting) Platt's.

Even on 600 verified rows (~40 correct) isotonic shrunk toward Platt beat Platt alone on the tuning
crawls: the logistic model's log-odds are too spread at the top, which Platt's two parameters cannot fix.
"""
ISOTONIC_PRIOR_STRENGTH = 10.0
"""Pseudo-rows shrinking each isotonic block toward Platt's fit.

Small blocks (the top and bottom of the score range) are noisy and PAV pools them toward the extremes;
10 put selected precision within +0.01 of the target on average over tuning seeds 0-9 (5: +0.02, 20: -0.01).
"""
PENALTIES = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
"""L2 penalties tried (on standardised coefficients, in units of summed log-likelihood)."""
FOLDS = 5

Design = Callable[[pa.Table], tuple[np.ndarray, list[str]]]


class RawModel(Protocol):
    """The part of a scorer that maps candidate features to an uncalibrated real score."""

    def decision(self, features: pa.Table) -> np.ndarray: ...

    def describe(self) -> dict: ...


class Calibrator(Protocol):
    def __call__(self, z: np.ndarray) -> np.ndarray: ...

    def describe(self) -> dict: ...


@dataclass(frozen=True)
class ShiftedCalibrator:
    """Another calibrator followed by a shift in log-odds (used to match a known positive rate)."""

    inner: Any
    shift: float

    def __call__(self, z: np.ndarray) -> np.ndarray:
        p = np.clip(self.inner(z), 1e-9, 1 - 1e-9)
        return 1.0 / (1.0 + np.exp(-(np.log(p / (1 - p)) + self.shift)))

    def describe(self) -> dict:
        return {**self.inner.describe(), "logit_shift": round(self.shift, 6)}


@dataclass(frozen=True)
class LinearModel:
    """w . standardise(clip(design(features))) + b.

    Inputs are clipped to the range seen in training: a linear model extrapolates without bound, and a
    candidate with, say, ten times the clicks of any verified one would otherwise get a certainty that
    no verified pair supports.
    """

    design: str  # "engineered" or "counts"
    names: tuple[str, ...]
    lo: np.ndarray
    hi: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    penalty: float

    def decision(self, features: pa.Table) -> np.ndarray:
        x, names = _DESIGNS[self.design](features)
        if tuple(names) != self.names:
            raise ValueError(f"feature design changed since fitting: {names} != {list(self.names)}")
        return ((np.clip(x, self.lo, self.hi) - self.mean) / self.scale) @ self.coef + self.intercept

    def describe(self) -> dict:
        order = np.argsort(-np.abs(self.coef), kind="stable")
        return {
            "design": self.design,
            "features": list(self.names),
            "penalty": self.penalty,
            "intercept": round(float(self.intercept), 6),
            # Per standardised feature, largest effect first: what the score leans on.
            "coefficients": {self.names[i]: round(float(self.coef[i]), 6) for i in order},
        }


@dataclass
class Scorer:
    """A fitted scorer: `predict` gives a calibrated P(label right) per candidate row.

    Picklable (Beam ships it to workers). `oof` holds cross-validated calibrated scores of the training
    rows, in their order: use those, not `predict`, to judge calibration on the verified sample.
    """

    method: str
    model: Any  # RawModel
    calibrator: Any  # Calibrator
    info: dict = field(default_factory=dict)
    oof: np.ndarray | None = None

    def decision(self, features: pa.Table) -> np.ndarray:
        """The uncalibrated score (monotone in `predict`)."""
        return self.model.decision(features)

    def predict(self, features: pa.Table) -> np.ndarray:
        p = self.calibrator(self.model.decision(features))
        return np.clip(p, 0.0, 1.0).astype(np.float32)

    def describe(self) -> dict:
        """JSON-ready summary for the manifest: method, features, coefficients, training size, CV ECE."""
        model = self.model.describe()
        return {
            "method": self.method,
            "features": list(model.get("features", [])),
            "model": model,
            "calibration": self.calibrator.describe(),
            **self.info,
        }


_DESIGNS: dict[str, Design] = {"engineered": engineered_design, "counts": count_design}


# ------------------------------------------------------------------------------------------ logistic regression


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _log_loss(z: np.ndarray, y: np.ndarray) -> float:
    # log(1 + e^z) - y z, stably
    return float(np.sum(np.logaddexp(0.0, z) - y * z))


def fit_logistic(x: np.ndarray, y: np.ndarray, penalty: float, max_iter: int = 100
                 ) -> tuple[np.ndarray, float]:
    """L2-penalised logistic regression by Newton/IRLS with step halving; the intercept is not penalised.

    Minimises sum(log-loss) + penalty/2 * |w|^2 on the columns of `x` as given (standardise first).
    """
    n, d = x.shape
    xa = np.hstack([x, np.ones((n, 1))])
    reg = np.full(d + 1, float(penalty))
    reg[-1] = 0.0
    rate = (y.sum() + 0.5) / (n + 1.0)
    beta = np.zeros(d + 1)
    beta[-1] = np.log(rate / (1 - rate))

    def objective(b: np.ndarray) -> float:
        return _log_loss(xa @ b, y) + 0.5 * float(np.sum(reg * b * b))

    current = objective(beta)
    for _ in range(max_iter):
        p = _sigmoid(xa @ beta)
        grad = xa.T @ (p - y) + reg * beta
        # einsum, not BLAS: on small matrices threaded BLAS can cost 20x more than it saves on a busy host.
        hess = np.einsum("ni,nj->ij", xa * (p * (1 - p))[:, None], xa) + np.diag(reg + 1e-8)
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while t > 1e-6:
            candidate = beta - t * step
            value = objective(candidate)
            if value <= current + 1e-12:
                break
            t *= 0.5
        beta, previous, current = candidate, current, value
        if abs(previous - current) < 1e-10 * max(1.0, abs(current)) or np.abs(t * step).max() < 1e-9:
            break
    return beta[:-1], float(beta[-1])


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0) if x.shape[0] else np.zeros(x.shape[1])
    scale = x.std(axis=0) if x.shape[0] else np.ones(x.shape[1])
    scale = np.where(scale > 1e-12, scale, 1.0)
    return mean, scale


def _folds(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Stratified fold index per row: each class dealt round-robin over folds in a seeded random order."""
    rng = np.random.default_rng(seed)
    fold = np.empty(y.size, dtype=np.int64)
    for label in (0, 1):
        rows = np.flatnonzero(y == label)
        rows = rows[rng.permutation(rows.size)]
        fold[rows] = (np.arange(rows.size) + int(rng.integers(k))) % k
    return fold


def _oof_decisions(x: np.ndarray, y: np.ndarray, fold: np.ndarray, penalty: float) -> np.ndarray:
    out = np.empty(y.size)
    for f in np.unique(fold):
        test = fold == f
        mean, scale = _standardise(x[~test])
        coef, b = fit_logistic((x[~test] - mean) / scale, y[~test], penalty)
        seen = np.clip(x[test], x[~test].min(axis=0), x[~test].max(axis=0))
        out[test] = ((seen - mean) / scale) @ coef + b
    return out


def _fit_calibrator(z: np.ndarray, y: np.ndarray) -> Calibrator:
    platt = fit_platt(z, y)
    if min(y.sum(), (1 - y).sum()) < ISOTONIC_MIN_PER_CLASS:
        return platt
    return fit_isotonic(z, y, prior=platt(z), prior_strength=ISOTONIC_PRIOR_STRENGTH)


def _cross_fitted(z: np.ndarray, y: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """Calibrated out-of-fold scores: each fold calibrated by a calibrator fitted on the other folds."""
    out = np.empty(y.size)
    for f in np.unique(fold):
        test = fold == f
        out[test] = _fit_calibrator(z[~test], y[~test])(z[test])
    return out


def _fit_linear(features: pa.Table, correct: np.ndarray, seed: int, design: str, calibrate: bool,
                penalties: tuple[float, ...]) -> Scorer:
    x, names = _DESIGNS[design](features)
    y = np.asarray(correct, dtype=np.float64).reshape(-1)
    k = int(min(FOLDS, y.sum(), (1 - y).sum()))
    fold = _folds(y, k, seed)
    losses = {}
    oof_by_penalty = {}
    for penalty in penalties:
        oof_by_penalty[penalty] = _oof_decisions(x, y, fold, penalty)
        losses[penalty] = _log_loss(oof_by_penalty[penalty], y)
    best = min(penalties, key=lambda p: (losses[p], -p))
    mean, scale = _standardise(x)
    coef, intercept = fit_logistic((x - mean) / scale, y, best)
    model = LinearModel(design, tuple(names), x.min(axis=0), x.max(axis=0), mean, scale, coef, intercept, best)
    z_oof = oof_by_penalty[best]
    if calibrate:
        calibrator = _fit_calibrator(z_oof, y)
        oof = _cross_fitted(z_oof, y, fold)
    else:
        calibrator = PlattCalibrator(1.0, 0.0)  # the logistic model's own probability
        oof = _sigmoid(z_oof)
    info = {
        "training_size": int(y.size),
        "training_positives": int(y.sum()),
        "folds": k,
        "seed": seed,
        "cv_ece": round(expected_calibration_error(oof, y), 6),
        "cv_log_loss": round(float(losses[best] / y.size), 6),
    }
    method = "logistic_regression" if design == "engineered" else "logistic_regression_counts"
    return Scorer(method, model, calibrator, info, oof.astype(np.float32))


def _fallback(features: pa.Table, y: np.ndarray, seed: int, unlabeled: pa.Table | None, reason: str) -> Scorer:
    from labeling.label_model import fit_label_model  # late: label_model builds on this module's Scorer

    base = fit_label_model(unlabeled if unlabeled is not None and unlabeled.num_rows else features, seed)
    shift = 0.0
    if y.size:
        # Move the label model's probabilities on the verified rows to the sample's smoothed rate.
        target = (y.sum() + 1.0) / (y.size + 2.0)
        z = base.model.decision(features)
        shift = _match_mean(lambda s: ShiftedCalibrator(base.calibrator, s)(z), target)
    calibrator = ShiftedCalibrator(base.calibrator, shift)
    oof = calibrator(base.model.decision(features)) if y.size else None
    info = {
        **base.info,
        "fallback_from": "supervised",
        "fallback_reason": reason,
        "verified_size": int(y.size),
        "verified_positives": int(y.sum()),
        "cv_ece": round(expected_calibration_error(oof, y), 6) if oof is not None else None,
    }
    return Scorer("label_model", base.model, calibrator, info, None if oof is None else oof.astype(np.float32))


def _match_mean(mean_at: Callable[[float], np.ndarray], target: float) -> float:
    """The log-odds shift s with mean(mean_at(s)) == target (bisection; the mean is increasing in s)."""
    lo, hi = -30.0, 30.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if float(np.mean(mean_at(mid))) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def fit_scorer(features: pa.Table, correct: np.ndarray, seed: int = 0, unlabeled: pa.Table | None = None
               ) -> Scorer:
    """Fit the supervised scorer on verified candidates (`features` rows aligned with `correct`).

    Folds are dealt by `seed` over the rows in the order given: pass them in a canonical order (e.g.
    sorted by image_id, class_id) and the same sample gives the same scorer.

    Below MIN_ROWS rows or MIN_PER_CLASS of either outcome the fit would be noise: the unsupervised label
    model is used instead (fitted on `unlabeled` candidates when given, else on `features`), shifted so its
    mean on the verified rows is the sample's smoothed positive rate; `describe()` names the fallback.
    """
    y = np.asarray(correct, dtype=bool).reshape(-1).astype(np.float64)
    if y.size != features.num_rows:
        raise ValueError(f"correct has {y.size} values for {features.num_rows} feature rows")
    n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
    if y.size < MIN_ROWS or min(n_pos, n_neg) < MIN_PER_CLASS:
        reason = (f"verified sample too small to fit: {y.size} rows, {n_pos} correct, {n_neg} wrong "
                  f"(need {MIN_ROWS} rows and {MIN_PER_CLASS} of each)")
        return _fallback(features, y, seed, unlabeled, reason)
    return _fit_linear(features, y, seed, "engineered", calibrate=True, penalties=PENALTIES)


def fit_counts_baseline(features: pa.Table, correct: np.ndarray, seed: int = 0) -> Scorer:
    """Baseline: plain logistic regression on the raw per-source sums, its own sigmoid as probability."""
    y = np.asarray(correct, dtype=bool).reshape(-1).astype(np.float64)
    if min(y.sum(), y.size - y.sum()) < 2:
        raise ValueError("the counts baseline needs at least 2 correct and 2 wrong rows")
    return _fit_linear(features, y, seed, "counts", calibrate=False, penalties=(1e-3,))

