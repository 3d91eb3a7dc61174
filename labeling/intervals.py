"""Credible intervals for proportions (precision, noise rates) from a Beta posterior, in numpy only.

`beta_interval(p, n)` is the equal-tailed interval of Beta(p n + 1/2, (1 - p) n + 1/2): the Jeffreys
posterior of a proportion observed as p over n trials (n may be fractional: an effective sample size).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["beta_cdf", "beta_interval", "beta_ppf"]


def _betacf(a: np.ndarray, b: np.ndarray, x: np.ndarray, iterations: int = 2000) -> np.ndarray:
    """Continued fraction of the incomplete beta function (modified Lentz), vectorised.

    Converges fast for x < (a + 1) / (a + b + 2), in about sqrt(max(a, b)) terms; the caller orients it.
    """
    tiny = 1e-300

    def guard(v: np.ndarray) -> np.ndarray:
        return np.where(np.abs(v) < tiny, tiny, v)

    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = np.ones_like(x)
    d = 1.0 / guard(1.0 - qab * x / qap)
    h = d.copy()
    for m in range(1, iterations + 1):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 / guard(1.0 + aa * d)
        c = guard(1.0 + aa / c)
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 / guard(1.0 + aa * d)
        c = guard(1.0 + aa / c)
        delta = d * c
        h *= delta
        if np.all(np.abs(delta - 1.0) < 1e-12):
            break
    return h


_lgamma = np.frompyfunc(math.lgamma, 1, 1)


def _log_beta(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (_lgamma(a) + _lgamma(b) - _lgamma(a + b)).astype(np.float64)


def beta_cdf(x: np.ndarray, a: np.ndarray, b: np.ndarray, log_beta: np.ndarray | None = None) -> np.ndarray:
    """Regularised incomplete beta I_x(a, b), elementwise (numpy only)."""
    x, a, b = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (x, a, b)))
    lb = _log_beta(a, b) if log_beta is None else log_beta
    xc = np.clip(x, 1e-300, 1 - 1e-16)
    front = np.exp(a * np.log(xc) + b * np.log1p(-xc) - lb)
    direct = xc < (a + 1.0) / (a + b + 2.0)
    # One continued fraction per element, in whichever orientation converges.
    cf = _betacf(np.where(direct, a, b), np.where(direct, b, a), np.where(direct, xc, 1.0 - xc))
    out = np.where(direct, front * cf / a, 1.0 - front * cf / b)
    return np.where(x <= 0, 0.0, np.where(x >= 1, 1.0, out))


def beta_ppf(q: np.ndarray | float, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Quantile of Beta(a, b): Newton's method on `beta_cdf`, safeguarded by bisection."""
    q, a, b = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (q, a, b)))
    lb = _log_beta(a, b)
    lo, hi = np.zeros(a.shape), np.ones(a.shape)
    mean, var = a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1))
    z = np.sqrt(2.0) * _erfinv(2 * q - 1)
    x = np.clip(mean + z * np.sqrt(var), 1e-9, 1 - 1e-9)
    for _ in range(60):
        f = beta_cdf(x, a, b, lb) - q
        lo, hi = np.where(f < 0, x, lo), np.where(f < 0, hi, x)
        pdf = np.exp((a - 1) * np.log(x) + (b - 1) * np.log1p(-x) - lb)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            step = np.where(pdf > 0, f / pdf, np.inf)
        new = x - step
        bad = ~np.isfinite(new) | (new <= lo) | (new >= hi)
        new = np.where(bad, 0.5 * (lo + hi), new)
        if np.all(np.abs(new - x) < 1e-12):
            return new
        x = new
    return x


def _erfinv(y: np.ndarray) -> np.ndarray:
    """Inverse error function (Giles 2012 single-precision approximation; a starting point only)."""
    w = -np.log((1.0 - y) * (1.0 + y))
    small = w < 5.0
    ws, wl = w - 2.5, np.sqrt(np.maximum(w, 5.0)) - 3.0
    ps = 2.81022636e-08
    for coef in (3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087, -0.00125372503,
                 -0.00417768164, 0.246640727, 1.50140941):
        ps = coef + ps * ws
    pl = -0.000200214257
    for coef in (0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773, -0.0076224613,
                 0.00943887047, 1.00167406, 2.83297682):
        pl = coef + pl * wl
    return np.where(small, ps, pl) * y


def beta_interval(p: np.ndarray, n: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) equal-tailed `level` interval of the Jeffreys posterior for proportion p seen over n trials."""
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    p, n = np.broadcast_arrays(p, np.maximum(np.asarray(n, dtype=np.float64), 0.0))
    a, b = (p * n + 0.5).ravel(), ((1 - p) * n + 0.5).ravel()
    alpha = (1.0 - level) / 2
    both = beta_ppf(np.r_[np.full(a.size, alpha), np.full(a.size, 1 - alpha)], np.r_[a, a], np.r_[b, b])
    return both[: a.size].reshape(p.shape), both[a.size:].reshape(p.shape)
