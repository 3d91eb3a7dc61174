import json
import pickle

import numpy as np
import pyarrow as pa
import pytest

from labeling.calibration import expected_calibration_error
from labeling.scoring import Scorer, fit_counts_baseline, fit_logistic, fit_scorer
from tests.labeling.candidates import simulate


@pytest.fixture(scope="module")
def data() -> tuple[pa.Table, np.ndarray, pa.Table, np.ndarray]:
    train, y = simulate(3000, seed=0)
    test, yt = simulate(40_000, seed=1)
    return train, y, test, yt


@pytest.fixture(scope="module")
def scorer(data) -> Scorer:
    train, y, _, _ = data
    return fit_scorer(train, y, seed=0)


def recall_at_precision(p: np.ndarray, y: np.ndarray, target: float) -> float:
    order = np.argsort(-p, kind="stable")
    right = np.cumsum(y[order])
    ok = np.flatnonzero(right / np.arange(1, y.size + 1) >= target)
    return float(right[ok[-1]] / y.sum()) if ok.size else 0.0


def test_logistic_irls_recovers_coefficients() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, 3))
    w = np.array([1.5, -2.0, 0.0])
    y = (rng.random(20_000) < 1 / (1 + np.exp(-(x @ w + 0.5)))).astype(float)
    coef, b = fit_logistic(x, y, penalty=1e-6)
    np.testing.assert_allclose(coef, w, atol=0.08)
    assert b == pytest.approx(0.5, abs=0.06)
    shrunk, _ = fit_logistic(x, y, penalty=5000.0)
    assert np.abs(shrunk).sum() < np.abs(coef).sum()  # L2 pulls toward zero


def test_scores_are_calibrated_probabilities(data, scorer: Scorer) -> None:
    _, _, test, yt = data
    p = scorer.predict(test)
    assert p.dtype == np.float32 and p.shape == (test.num_rows,)
    assert p.min() >= 0 and p.max() <= 1
    assert expected_calibration_error(p, yt) < 0.03


def test_beats_plain_logistic_regression_on_counts(data, scorer: Scorer) -> None:
    train, y, test, yt = data
    baseline = fit_counts_baseline(train, y, seed=0)
    assert baseline.describe()["method"] == "logistic_regression_counts"
    ours, theirs = scorer.predict(test), baseline.predict(test)
    for target in (0.7, 0.8, 0.9):
        assert recall_at_precision(ours, yt, target) > recall_at_precision(theirs, yt, target) + 0.02


def test_describe_is_json_ready(scorer: Scorer) -> None:
    d = scorer.describe()
    json.dumps(d)
    assert d["method"] == "logistic_regression"
    assert d["training_size"] == 3000 and d["training_positives"] > 0
    assert 0 <= d["cv_ece"] < 0.05
    assert "log_min_named" in d["features"]
    assert set(d["model"]["coefficients"]) == set(d["features"])
    assert d["calibration"]["kind"] == "isotonic"
    assert scorer.oof is not None and scorer.oof.shape == (3000,)


def test_pickle_round_trip_and_determinism(data, scorer: Scorer) -> None:
    train, y, test, _ = data
    back = pickle.loads(pickle.dumps(scorer))
    np.testing.assert_array_equal(back.predict(test), scorer.predict(test))
    again = fit_scorer(train, y, seed=0)
    np.testing.assert_array_equal(again.predict(test), scorer.predict(test))
    other = fit_scorer(train, y, seed=1)  # other folds: same model family, slightly different calibration
    assert other.describe()["method"] == "logistic_regression"


def test_small_samples(data) -> None:
    train, y, test, yt = data
    rows = np.concatenate([np.flatnonzero(y)[:12], np.flatnonzero(~y)[:38]])
    small = fit_scorer(train.take(pa.array(rows)), y[rows], seed=0)
    assert small.describe()["method"] == "logistic_regression"
    assert small.describe()["training_size"] == 50
    assert recall_at_precision(small.predict(test), yt, 0.8) > 0.3
    # Four correct rows are too few to learn from: the label model steps in and says why.
    rows = np.concatenate([np.flatnonzero(y)[:4], np.flatnonzero(~y)[:46]])
    tiny = fit_scorer(train.take(pa.array(rows)), y[rows], seed=0, unlabeled=test.slice(0, 5000))
    assert tiny.describe()["method"] == "label_model"
    assert "4 correct" in tiny.describe()["fallback_reason"]


@pytest.mark.parametrize("all_correct", [True, False])
def test_one_sided_sample_falls_back_to_label_model(data, all_correct: bool) -> None:
    train, y, test, _ = data
    rows = np.flatnonzero(y == all_correct)[:50]
    s = fit_scorer(train.take(pa.array(rows)), y[rows], seed=0, unlabeled=test.slice(0, 5000))
    d = s.describe()
    assert d["method"] == "label_model" and "too small" in d["fallback_reason"]
    assert d["verified_size"] == 50
    # Shifted so that the verified rows average the smoothed rate: 51/52 or 1/52.
    mean = float(s.predict(train.take(pa.array(rows))).mean())
    assert mean == pytest.approx(51 / 52 if all_correct else 1 / 52, abs=0.01)
    json.dumps(d)
    pickle.loads(pickle.dumps(s)).predict(test.slice(0, 10))


def test_empty_sample_and_bad_input(data) -> None:
    train, y, _, _ = data
    s = fit_scorer(train.slice(0, 0), np.zeros(0, bool), unlabeled=train)
    assert s.describe()["method"] == "label_model" and s.describe()["cv_ece"] is None
    with pytest.raises(ValueError):
        fit_scorer(train.slice(0, 0), np.zeros(0, bool))  # nothing to fit any model on
    with pytest.raises(ValueError):
        fit_scorer(train, y[:-1])
    with pytest.raises(KeyError):
        fit_scorer(train.drop_columns(["min_named"]), y)


def test_competing_readings_lower_the_score() -> None:
    """A candidate outweighed by an unrelated reading of its image is less likely right (simulated so)."""
    from labeling.design import engineered_design

    features, y = simulate(3000, seed=11)
    x, names = engineered_design(features)
    share, rival = x[:, names.index("image_share")], x[:, names.index("rival_share")]
    ratio = x[:, names.index("log_share_over_rival")]
    assert np.allclose(ratio, np.log(share + 0.01) - np.log(rival + 0.01))
    assert np.isfinite(x).all()
    scorer = fit_scorer(features, y, seed=0)
    coefs = scorer.describe()["model"]["coefficients"]
    assert coefs["log_share_over_rival"] > 0 or coefs["rival_share"] < 0
    # Same evidence, a stronger rival: the score must not rise.
    stronger = features.set_column(features.schema.get_field_index("rival_share"), "rival_share",
                                   pa.array(np.ones(features.num_rows, np.float32)))
    assert np.mean(scorer.predict(stronger)) < np.mean(scorer.predict(features))
