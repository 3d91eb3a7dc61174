"""Calibration: the logistic model with class offsets, and the unsupervised mixture."""

from __future__ import annotations

import numpy as np
import pytest

from index.calibrate import fit_logistic, fit_mixture, sigmoid
from index.testdata import auroc


def test_logistic_recovers_weights_and_offsets():
    rng = np.random.default_rng(0)
    n = 20_000
    features = np.column_stack([np.ones(n), rng.normal(size=n)])
    groups = rng.integers(0, 3, n)
    offsets = np.array([-1.0, 0.0, 1.0])
    y = rng.random(n) < sigmoid(features @ np.array([-0.5, 2.0]) + offsets[groups])
    model = fit_logistic(features, y, groups, 4, ridge=1e-3, group_prior_sd=3.0)
    assert model.w[1] == pytest.approx(2.0, abs=0.1)
    assert model.b[2] - model.b[0] == pytest.approx(2.0, abs=0.2)
    assert model.b[3] == 0.0  # no data: the global curve


def test_mixture_names_the_less_agreeing_component_noisy():
    rng = np.random.default_rng(0)
    noisy = rng.random(4000) < 0.2
    valid = np.full(4000, 10.0)
    agree = np.where(noisy, rng.binomial(10, 0.2, 4000), rng.binomial(10, 0.9, 4000)).astype(float)
    log_z = np.where(noisy, rng.normal(0.5, 0.2, 4000), rng.normal(0, 0.2, 4000))
    model, p = fit_mixture(agree, valid, log_z, np.zeros(4000, dtype=np.int64), 1)
    assert model.theta[1] < model.theta[0]
    assert model.weights[0] == pytest.approx(0.2, abs=0.03)
    assert auroc(p, noisy) > 0.97

