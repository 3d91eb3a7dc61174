"""From noise signals to P(label wrong): a logistic model fitted on the verified sample, or a mixture without one.

The supervised model is the Fig. 2 curve made explicit: one weight per distance bucket (noise as a function
of quantised distance) plus the kNN agreement, and a logit offset per class with a Gaussian prior. A class
with much verified data gets its own shift of the curve; one with little or none backs off to the global
curve, smoothly, by the prior. Class noise rates are the mean P(wrong) of the class's labels, with an
interval from the model's uncertainty (delta method) and the binomial spread of the labels themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_Z = 1.959964  # two-sided 95% normal quantile


def sigmoid(eta: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * eta))


@dataclass(frozen=True)
class Logistic:
    """Fitted weights `w` (global), class offsets `b`, and the inverse Hessians that give intervals."""

    w: np.ndarray
    b: np.ndarray
    w_cov: np.ndarray
    b_var: np.ndarray
    group_prior_sd: float = 1.0
    evidence: float = 0.0

    def predict(self, features: np.ndarray, groups: np.ndarray) -> np.ndarray:
        return sigmoid(features @ self.w + self.b[groups])


def fit_logistic(
    features: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    n_groups: int,
    *,
    ridge: float = 0.1,
    group_prior_sd: float = 1.0,
    iters: int = 100,
    tol: float = 1e-8,
) -> Logistic:
    """Penalised logistic regression with per-group intercepts, by alternating Newton steps.

    Column 0 of `features` is the intercept (not penalised); the other weights have an L2 penalty `ridge`, and
    group offsets a N(0, group_prior_sd^2) prior, which is what makes a group with no data use the global fit.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    p_dim = x.shape[1]
    penalty = np.full(p_dim, ridge)
    penalty[0] = 1e-6
    prior = 1.0 / group_prior_sd**2
    w = np.zeros(p_dim)
    b = np.zeros(n_groups)
    for _ in range(iters):
        prob = sigmoid(x @ w + b[groups])
        weight = prob * (1 - prob)
        hessian = x.T @ (x * weight[:, None]) + np.diag(penalty)
        step = np.linalg.solve(hessian, x.T @ (y - prob) - penalty * w)
        w = w + step
        prob = sigmoid(x @ w + b[groups])
        weight = prob * (1 - prob)
        grad_b = np.bincount(groups, y - prob, n_groups) - prior * b
        hess_b = np.bincount(groups, weight, n_groups) + prior
        b = b + grad_b / hess_b
        if np.abs(step).max() < tol and np.abs(grad_b / hess_b).max() < tol:
            break
    prob = sigmoid(x @ w + b[groups])
    weight = prob * (1 - prob)
    hessian = x.T @ (x * weight[:, None]) + np.diag(penalty)
    hess_b = np.bincount(groups, weight, n_groups) + prior
    loglik = float(np.sum(y * np.log(np.maximum(prob, 1e-12)) + (1 - y) * np.log(np.maximum(1 - prob, 1e-12))))
    # Laplace approximation of the evidence for the group prior (constants in sd dropped; groups without
    # data contribute nothing): what `fit_logistic_eb` maximises.
    evidence = loglik - prior * float(b @ b) / 2 - n_groups * np.log(group_prior_sd) - 0.5 * float(np.log(hess_b).sum())
    return Logistic(w, b, np.linalg.inv(hessian), 1.0 / hess_b, group_prior_sd, evidence)


def fit_logistic_eb(
    features: np.ndarray, y: np.ndarray, groups: np.ndarray, n_groups: int,
    sds: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 3.0, 4.0), **kwargs,
) -> Logistic:
    """`fit_logistic` with the spread of class offsets chosen by empirical Bayes (the best Laplace evidence):
    classes that really differ get their own curve, and noise in a few verified labels does not."""
    fits = [fit_logistic(features, y, groups, n_groups, group_prior_sd=sd, **kwargs) for sd in sds]
    return max(fits, key=lambda fit: fit.evidence)


@dataclass(frozen=True)
class ClassRates:
    """Per class: number of labels, estimated noise rate and its 95% interval."""

    n: np.ndarray
    rate: np.ndarray
    low: np.ndarray
    high: np.ndarray


def class_rates_supervised(
    model: Logistic, features: np.ndarray, groups: np.ndarray, n_groups: int, p: np.ndarray
) -> ClassRates:
    """Mean P(wrong) per class, with variance from the weights, the class offset and the labels' spread."""
    n = np.bincount(groups, minlength=n_groups).astype(np.float64)
    safe = np.maximum(n, 1)
    rate = np.bincount(groups, p, n_groups) / safe
    slope = p * (1 - p)
    # d rate_c / d w = mean over the class of p(1-p) x; d rate_c / d b_c = mean of p(1-p).
    grad_w = np.stack([np.bincount(groups, slope * features[:, j], n_groups) for j in range(features.shape[1])], 1)
    grad_w /= safe[:, None]
    grad_b = np.bincount(groups, slope, n_groups) / safe
    var = np.einsum("cj,jk,ck->c", grad_w, model.w_cov, grad_w) + grad_b**2 * model.b_var
    var += np.bincount(groups, slope, n_groups) / safe**2
    return _with_interval(n, rate, var)


def _with_interval(n: np.ndarray, rate: np.ndarray, var: np.ndarray) -> ClassRates:
    sd = np.sqrt(np.maximum(var, 0))
    return ClassRates(n.astype(np.int64), rate, np.clip(rate - _Z * sd, 0, 1), np.clip(rate + _Z * sd, 0, 1))


@dataclass(frozen=True)
class Mixture:
    """Clean (index 0) and noisy (index 1) components: neighbour agreement ~ Binomial(neighbours, theta),
    log distance ~ Normal(mean, sd); and per-class noisy weights."""

    theta: np.ndarray
    mean: np.ndarray
    sd: np.ndarray
    weights: np.ndarray


def _log_component(agree: np.ndarray, valid: np.ndarray, log_z: np.ndarray, theta: float, mean: float,
                   sd: float) -> np.ndarray:
    theta = min(max(theta, 1e-4), 1 - 1e-4)
    binomial = agree * np.log(theta) + (valid - agree) * np.log1p(-theta)
    return binomial - 0.5 * ((log_z - mean) / sd) ** 2 - np.log(sd)


def fit_mixture(
    agree: np.ndarray, valid: np.ndarray, log_z: np.ndarray, groups: np.ndarray, n_groups: int, *,
    prior: float = 20.0, iters: int = 200, tol: float = 1e-7,
) -> tuple[Mixture, np.ndarray]:
    """EM for a two-component mixture over (neighbour agreement, log distance) with a per-class noisy weight.

    Starts from "noisy = fewer than half the neighbours agree"; a class's weight is the Beta-smoothed mean of
    its responsibilities (`prior` pseudo-labels at the global weight). The component whose neighbours agree
    less is the noisy one. Returns the model and P(noisy) per label.
    """
    agree = np.asarray(agree, dtype=np.float64)
    valid = np.asarray(valid, dtype=np.float64)
    resp = np.where(agree < valid / 2, 0.9, 0.1)
    n = np.bincount(groups, minlength=n_groups).astype(np.float64)
    previous = -np.inf
    for _ in range(iters):
        params = []
        for r in (1 - resp, resp):
            total = r.sum() + 1e-12
            theta = float((r * agree).sum() / max((r * valid).sum(), 1e-12))
            mean = float((r * log_z).sum() / total)
            sd = float(np.sqrt((r * (log_z - mean) ** 2).sum() / total) + 1e-3)
            params.append((theta, mean, sd))
        global_weight = float(resp.mean())
        weights = (np.bincount(groups, resp, n_groups) + prior * global_weight) / (n + prior)
        pi = np.clip(weights[groups], 1e-6, 1 - 1e-6)
        log_clean = _log_component(agree, valid, log_z, *params[0]) + np.log1p(-pi)
        log_noisy = _log_component(agree, valid, log_z, *params[1]) + np.log(pi)
        resp = sigmoid(log_noisy - log_clean)
        loglik = float(np.logaddexp(log_clean, log_noisy).sum())
        if abs(loglik - previous) < tol * abs(loglik):
            break
        previous = loglik
    if params[1][0] > params[0][0]:  # the "noisy" component agrees more with its neighbours: swap roles
        params, resp = params[::-1], 1 - resp
        weights = 1 - weights
    theta, mean, sd = (np.array(values) for values in zip(*params, strict=True))
    return Mixture(theta, mean, sd, weights), resp


def class_rates_mixture(groups: np.ndarray, n_groups: int, p: np.ndarray, prior: float = 20.0) -> ClassRates:
    """Mean posterior per class; the interval treats the class as `n + prior` Bernoulli draws (no verified
    data means no calibration error can be measured: these intervals say how stable, not how right)."""
    n = np.bincount(groups, minlength=n_groups).astype(np.float64)
    rate = np.bincount(groups, p, n_groups) / np.maximum(n, 1)
    var = rate * (1 - rate) / (n + prior)
    return _with_interval(n, rate, var)


def wilson(wrong: np.ndarray, total: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """95% Wilson interval of a proportion (NaN where total is 0)."""
    total = np.asarray(total, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        phat = wrong / total
        centre = (phat + _Z**2 / (2 * total)) / (1 + _Z**2 / total)
        half = _Z * np.sqrt(phat * (1 - phat) / total + _Z**2 / (4 * total**2)) / (1 + _Z**2 / total)
    return centre - half, centre + half
