import pickle

import numpy as np
import pytest

from labeling.calibration import (
    expected_calibration_error,
    fit_isotonic,
    fit_platt,
    pav,
    reliability_table,
)


def logistic_data(n: int, seed: int, a: float = 2.0, b: float = -1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, n)
    y = rng.random(n) < 1 / (1 + np.exp(-(a * z + b)))
    return z, y.astype(float)


def test_ece_hand_case() -> None:
    p = np.array([0.1, 0.1, 0.9, 0.9])
    y = np.array([0, 0, 1, 0])
    # bin [0, .5): |0.2 - 0| ; bin [.5, 1]: |1.8 - 1| -> (0.2 + 0.8) / 4
    assert expected_calibration_error(p, y, bins=2) == pytest.approx(0.25)


def test_ece_small_for_calibrated_large_for_distorted() -> None:
    rng = np.random.default_rng(0)
    p = rng.random(40_000)
    y = rng.random(p.size) < p
    assert expected_calibration_error(p, y) < 0.015
    assert expected_calibration_error(p**3, y) > 0.15
    assert expected_calibration_error(np.array([]), np.array([])) == 0.0
    with pytest.raises(ValueError):
        expected_calibration_error(p, y[:-1])


def test_pav_exact_hand_cases() -> None:
    np.testing.assert_allclose(pav(np.array([1, 3, 2, 4, 3, 5.0])), [1, 2.5, 2.5, 3.5, 3.5, 5])
    np.testing.assert_allclose(pav(np.array([3.0, 1.0]), np.array([1.0, 3.0])), [1.5, 1.5])
    np.testing.assert_allclose(pav(np.array([4, 3, 2, 1.0])), [2.5] * 4)
    np.testing.assert_allclose(pav(np.array([0, 1, 1, 2.0])), [0, 1, 1, 2])


def test_pav_is_monotone_and_least_squares() -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(size=200).cumsum() * 0.1 + rng.normal(size=200)
    fit = pav(y)
    assert np.all(np.diff(fit) >= -1e-12)
    assert fit.sum() == pytest.approx(y.sum())  # blocks keep their means
    # Any other monotone sequence (here: a shifted copy, a constant) fits no better.
    for other in (np.maximum.accumulate(y), np.full_like(y, y.mean()), fit + 0.01):
        assert np.sum((y - fit) ** 2) <= np.sum((y - other) ** 2) + 1e-9


def test_isotonic_calibrates_logistic_data() -> None:
    z, y = logistic_data(6000, 0)
    zt, yt = logistic_data(40_000, 1)
    for centered in (True, False):
        cal = fit_isotonic(z, y, centered=centered)
        grid = np.linspace(-8, 8, 2001)
        assert np.all(np.diff(cal(grid)) >= 0)
        p = cal(zt)
        assert p.min() >= 0 and p.max() <= 1
        assert expected_calibration_error(p, yt) < 0.02
    assert pickle.loads(pickle.dumps(cal)).x.tolist() == cal.x.tolist()


def test_centered_isotonic_is_strictly_increasing_between_knots() -> None:
    z, y = logistic_data(3000, 2)
    cal = fit_isotonic(z, y, centered=True)
    inner = np.linspace(cal.x[0], cal.x[-1], 500)[1:-1]
    assert np.all(np.diff(cal(inner)) > 0)


def test_isotonic_shrinkage_keeps_extremes_off_zero_and_one() -> None:
    z = np.arange(20.0)
    y = (z >= 10).astype(float)  # separable: plain isotonic says exactly 0 and 1
    prior = np.full(20, 0.5)
    cal = fit_isotonic(z, y, prior=prior, prior_strength=5.0)
    assert 0.05 < cal(np.array([0.0]))[0] < 0.3
    assert 0.7 < cal(np.array([19.0]))[0] < 0.95


def test_platt_recovers_logistic_parameters() -> None:
    z, y = logistic_data(20_000, 3)
    cal = fit_platt(z, y)
    assert cal.a == pytest.approx(2.0, abs=0.12)
    assert cal.b == pytest.approx(-1.0, abs=0.1)
    zt, yt = logistic_data(40_000, 4)
    assert expected_calibration_error(cal(zt), yt) < 0.015


def test_platt_separable_sample_stays_finite() -> None:
    cal = fit_platt(np.array([-2.0, -1.0, 1.0, 2.0]), np.array([0, 0, 1, 1.0]))
    p = cal(np.array([-2.0, 2.0]))
    assert np.isfinite([cal.a, cal.b]).all()
    assert 0 < p[0] < 0.5 < p[1] < 1


def test_platt_does_not_run_away_on_spread_scores_with_rare_positives() -> None:
    # Like a scorer's out-of-fold log-odds: 10% positives, scores spread over ~[-13, 12], calibrated (a = 1,
    # b = 0). Full Newton steps from a = 1 overshot here to a ~ 6e10 (a step function).
    rng = np.random.default_rng(0)
    z = np.concatenate([rng.normal(-7, 2, 900), rng.normal(3, 3, 100)])
    y = (rng.random(z.size) < 1 / (1 + np.exp(-z))).astype(float)
    cal = fit_platt(z, y)
    assert cal.a == pytest.approx(1.0, abs=0.2)
    assert abs(cal.b) < 0.5


def test_platt_separated_sample_with_a_gap_stays_soft() -> None:
    # Perfectly separated with a wide gap: the smoothed targets (1/7 and 6/7) bound the fit; it must not
    # become a step function that claims 0 and 1.
    z = np.array([-9.0, -8, -7, -6, -5, 4, 5, 6, 7, 8])
    y = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1.0])
    cal = fit_platt(z, y)
    assert 0 < cal.a < 1
    p = cal(np.array([-9.0, 8.0]))
    assert 0.02 < p[0] < 0.3 and 0.7 < p[1] < 0.98


def test_reliability_table() -> None:
    p = np.array([0.05, 0.1, 0.95])
    y = np.array([0, 1, 1])
    table = reliability_table(p, y, bins=4)
    assert table.column("count").to_pylist() == [2, 0, 0, 1]
    assert table.column("observed").to_pylist() == [0.5, None, None, 1.0]
    assert table.column("mean_score").to_pylist()[0] == pytest.approx(0.075)
