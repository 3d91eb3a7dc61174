"""Stage 4 without a verified sample: source reliabilities estimated from agreement alone.

Each candidate's evidence is a handful of discrete voters (`labeling.design.voter_states`: every source
absent / weak / strong, feedback for / against, keyword stuffing, share of the image's evidence). As in
Dawid & Skene (1979) and Snorkel's label model, voters are taken to be independent given the hidden truth
of the label, and EM fits the truth's prior (with a Beta class-balance prior) and each voter's state
probabilities under "right" and "wrong". The posterior is the score; it is only as calibrated as the
independence assumption allows, which `describe()` says.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from labeling.calibration import PlattCalibrator
from labeling.design import STUFFED_NAMED, column, voter_states
from labeling.scoring import Scorer

__all__ = ["LabelModel", "LatentClassFit", "fit_label_model", "fit_latent_class"]

N_STATES = 3
"""States per voter (0 = absent / abstain)."""
SMOOTHING = 1.0
"""Dirichlet pseudo-count per voter state and truth value."""
CONTEXT_VOTERS = ("named", "image_share")
"""Voters that describe context rather than name the class: they do not orient the latent classes."""


@dataclass(frozen=True)
class LatentClassFit:
    """P(right), and per voter and state P(state | right), P(state | wrong)."""

    prior: float
    p_right: np.ndarray  # (n_voters, n_states)
    p_wrong: np.ndarray
    log_likelihood: float
    iterations: int

    def log_odds(self, states: np.ndarray) -> np.ndarray:
        """Posterior log-odds of "right" for each row of voter states."""
        ratio = np.log(self.p_right) - np.log(self.p_wrong)
        z = np.full(states.shape[0], np.log(self.prior / (1 - self.prior)))
        for v in range(states.shape[1]):
            z += ratio[v, states[:, v]]
        return z

    def accuracy(self) -> np.ndarray:
        """P(right | voter in state s) for every voter and state, at the fitted prior."""
        right = self.prior * self.p_right
        return right / (right + (1 - self.prior) * self.p_wrong)


def _e_step(fit_prior: float, p_right: np.ndarray, p_wrong: np.ndarray, patterns: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """Posterior P(right) per pattern and per-pattern log-likelihood."""
    log1 = np.full(patterns.shape[0], np.log(fit_prior))
    log0 = np.full(patterns.shape[0], np.log(1 - fit_prior))
    for v in range(patterns.shape[1]):
        log1 += np.log(p_right[v, patterns[:, v]])
        log0 += np.log(p_wrong[v, patterns[:, v]])
    total = np.logaddexp(log1, log0)
    return np.exp(log1 - total), total


def _m_step(q: np.ndarray, weight: np.ndarray, patterns: np.ndarray, n_states: int,
            balance: tuple[float, float]) -> tuple[float, np.ndarray, np.ndarray]:
    a, b = balance
    w1, w0 = weight * q, weight * (1 - q)
    prior = (w1.sum() + a - 1) / (weight.sum() + a + b - 2)
    p_right = np.empty((patterns.shape[1], n_states))
    p_wrong = np.empty_like(p_right)
    for v in range(patterns.shape[1]):
        p_right[v] = np.bincount(patterns[:, v], weights=w1, minlength=n_states) + SMOOTHING
        p_wrong[v] = np.bincount(patterns[:, v], weights=w0, minlength=n_states) + SMOOTHING
    p_right /= p_right.sum(axis=1, keepdims=True)
    p_wrong /= p_wrong.sum(axis=1, keepdims=True)
    return float(np.clip(prior, 1e-4, 1 - 1e-4)), p_right, p_wrong


def fit_latent_class(states: np.ndarray, n_states: int = N_STATES, seed: int = 0,
                     balance: tuple[float, float] = (2.0, 2.0), orient: np.ndarray | None = None,
                     max_iter: int = 500, restarts: int = 3, tol: float = 1e-8) -> LatentClassFit:
    """EM for a two-class latent class model over discrete voters (Dawid-Skene with binary truth).

    `states` is n_rows x n_voters with values in [0, n_states), 0 meaning "abstain". `balance` is the
    Beta(a, b) prior on P(right). The first start treats more non-abstaining voters as more likely right;
    further starts (seeded) perturb it, and the best penalised likelihood wins. Label switching is
    resolved so that "right" is the class whose `orient` voters (default all) abstain less.
    """
    states = np.asarray(states)
    if states.ndim != 2:
        raise ValueError(f"states must be 2-d, got shape {states.shape}")
    if states.size and (states.min() < 0 or states.max() >= n_states):
        raise ValueError(f"voter states must lie in [0, {n_states})")
    patterns, inverse, weight = np.unique(states.astype(np.int64), axis=0, return_inverse=True,
                                          return_counts=True)
    weight = weight.astype(np.float64)
    orient = np.ones(states.shape[1], dtype=bool) if orient is None else np.asarray(orient, dtype=bool)
    rng = np.random.default_rng(seed)
    votes = (patterns[:, orient] > 0).sum(axis=1) if patterns.size else np.zeros(0)
    spread = max(float(votes.max(initial=0) - votes.min(initial=0)), 1.0)
    base_q = 0.1 + 0.8 * (votes - votes.min(initial=0)) / spread
    best: LatentClassFit | None = None
    for start in range(max(restarts, 1)):
        q = base_q if start == 0 else np.clip(base_q + rng.normal(0, 0.2, base_q.size), 0.02, 0.98)
        prior, p_right, p_wrong = _m_step(q, weight, patterns, n_states, balance)
        previous = -np.inf
        iterations = 0
        for iterations in range(1, max_iter + 1):  # noqa: B007 - the count is reported
            q, per_pattern = _e_step(prior, p_right, p_wrong, patterns)
            ll = float((weight * per_pattern).sum())
            prior, p_right, p_wrong = _m_step(q, weight, patterns, n_states, balance)
            if ll - previous < tol * max(1.0, abs(ll)):
                break
            previous = ll
        present_right = 1 - p_right[orient, 0]
        present_wrong = 1 - p_wrong[orient, 0]
        if present_right.sum() < present_wrong.sum():
            prior, p_right, p_wrong = 1 - prior, p_wrong, p_right
        fit = LatentClassFit(prior, p_right, p_wrong, ll, iterations)
        if best is None or fit.log_likelihood > best.log_likelihood + 1e-9:
            best = fit
    assert best is not None
    return best


@dataclass(frozen=True)
class LabelModel:
    """The fitted latent class model plus the voter binning learnt on its training candidates."""

    voters: tuple[str, ...]
    edges: dict
    fit: LatentClassFit

    def decision(self, features: pa.Table) -> np.ndarray:
        states, names, _ = voter_states(features, self.edges)
        if tuple(names) != self.voters:
            raise ValueError(f"voters changed since fitting: {names} != {list(self.voters)}")
        z = self.fit.log_odds(states)
        named = column(features, "min_named")
        listed = named >= STUFFED_NAMED
        if listed.any():
            # Evidence only from lists naming k classes: a caption's reliability shared among the k.
            p = 0.5 * (1.0 + np.tanh(0.5 * z[listed])) / named[listed]
            z[listed] = np.log(p) - np.log1p(-p)
        return z

    def describe(self) -> dict:
        acc = self.fit.accuracy()
        return {
            "features": list(self.voters),
            "class_balance": round(self.fit.prior, 6),
            "iterations": self.fit.iterations,
            "log_likelihood": round(self.fit.log_likelihood, 3),
            # P(right | voter in state), per non-abstaining state: the estimated reliability of each source.
            "accuracy": {v: [round(float(a), 4) for a in acc[i, 1:]] for i, v in enumerate(self.voters)},
            "p_state_right": {v: [round(float(a), 4) for a in self.fit.p_right[i]] for i, v in
                              enumerate(self.voters)},
            "p_state_wrong": {v: [round(float(a), 4) for a in self.fit.p_wrong[i]] for i, v in
                              enumerate(self.voters)},
            "edges": {k: [float(x) for x in np.atleast_1d(v)] for k, v in self.edges.items()},
        }


def fit_label_model(features: pa.Table, seed: int = 0, balance: tuple[float, float] = (2.0, 2.0)) -> Scorer:
    """Fit the unsupervised label model on candidate features (no verified data); a `Scorer`.

    Fit it on all candidates or a uniform sample of them (a few hundred thousand rows are plenty: EM
    runs on the distinct voter patterns). `balance` is the Beta prior on the share of right candidates.
    """
    if features.num_rows == 0:
        raise ValueError("cannot fit the label model on no candidates")
    states, names, edges = voter_states(features)
    orient = np.array([n not in CONTEXT_VOTERS for n in names])
    # Candidates known only from long lists (keyword stuffing) are left out of EM: their sources agree
    # because one text names them all, which a conditionally independent model would take for truth.
    fit_rows = column(features, "min_named") < STUFFED_NAMED
    if not fit_rows.any():
        fit_rows[:] = True
    fit = fit_latent_class(states[fit_rows], seed=seed, balance=balance, orient=orient)
    model = LabelModel(tuple(names), edges, fit)
    info = {
        "training_size": int(fit_rows.sum()),
        "listed_only": int((~fit_rows).sum()),
        "seed": seed,
        "cv_ece": None,  # no labels to measure it with
        "calibration_note": "posterior of a conditionally independent voter model; not checked against labels",
    }
    return Scorer("label_model", model, PlattCalibrator(1.0, 0.0), info, None)
