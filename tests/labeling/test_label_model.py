import json
import pickle

import numpy as np
import pytest

from labeling.label_model import fit_label_model, fit_latent_class
from tests.labeling.candidates import RATES, accuracy, simulate


def simulate_votes(n: int, prior: float, p_right: np.ndarray, p_wrong: np.ndarray, seed: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.random(n) < prior
    states = np.empty((n, p_right.shape[0]), dtype=np.int64)
    for v in range(p_right.shape[0]):
        u = rng.random(n)
        states[:, v] = np.where(y, np.searchsorted(np.cumsum(p_right[v]), u, side="right"),
                                np.searchsorted(np.cumsum(p_wrong[v]), u, side="right"))
    return np.minimum(states, p_right.shape[1] - 1), y


P_RIGHT = np.array([[0.3, 0.5, 0.2], [0.4, 0.3, 0.3], [0.5, 0.4, 0.1], [0.2, 0.4, 0.4], [0.6, 0.3, 0.1]])
P_WRONG = np.array([[0.8, 0.15, 0.05], [0.7, 0.2, 0.1], [0.85, 0.1, 0.05], [0.6, 0.3, 0.1], [0.9, 0.08, 0.02]])


def test_em_recovers_known_voter_parameters() -> None:
    states, y = simulate_votes(40_000, 0.3, P_RIGHT, P_WRONG, seed=0)
    fit = fit_latent_class(states, seed=0)
    assert fit.prior == pytest.approx(0.3, abs=0.02)
    np.testing.assert_allclose(fit.p_right, P_RIGHT, atol=0.03)
    np.testing.assert_allclose(fit.p_wrong, P_WRONG, atol=0.03)
    # Accuracies P(right | voter state) follow.
    truth = 0.3 * P_RIGHT / (0.3 * P_RIGHT + 0.7 * P_WRONG)
    np.testing.assert_allclose(fit.accuracy(), truth, atol=0.04)


def test_em_orientation_and_determinism() -> None:
    states, y = simulate_votes(20_000, 0.7, P_RIGHT, P_WRONG, seed=1)  # right is the majority here
    a, b = fit_latent_class(states, seed=3), fit_latent_class(states, seed=3)
    assert a.prior == pytest.approx(0.7, abs=0.03)
    assert a.prior == b.prior and np.array_equal(a.p_right, b.p_right)
    posterior = a.log_odds(states) > 0
    assert (posterior == y).mean() > 0.8
    with pytest.raises(ValueError):
        fit_latent_class(states + 5)


@pytest.fixture(scope="module")
def candidates():
    return simulate(30_000, seed=2, prior=0.25)


def test_label_model_recovers_source_accuracies(candidates) -> None:
    features, y = candidates
    scorer = fit_label_model(features, seed=0)
    d = scorer.describe()
    json.dumps(d)
    assert d["method"] == "label_model"
    assert d["training_size"] + d["listed_only"] == features.num_rows
    for source in RATES:
        # Estimated P(right | source present), averaged over its weak and strong states, vs the truth
        # among the candidates the model was fitted on (keyword-stuffed lists are scored separately).
        fitted = d["model"]["accuracy"][source]
        weights = np.array(d["model"]["p_state_right"][source][1:]) * d["model"]["class_balance"] + np.array(
            d["model"]["p_state_wrong"][source][1:]) * (1 - d["model"]["class_balance"])
        estimate = float(np.dot(fitted, weights) / weights.sum())
        honest = features.column("min_named").to_numpy() < 4
        assert estimate == pytest.approx(accuracy(features.filter(honest), y[honest], source), abs=0.08)


def test_label_model_ranks_and_is_roughly_calibrated(candidates) -> None:
    features, y = candidates
    scorer = fit_label_model(features, seed=0)
    p = scorer.predict(features)
    assert p.dtype == np.float32 and p.min() >= 0 and p.max() <= 1
    order = np.argsort(-p)
    top = y[order[: int(y.sum())]].mean()  # precision at the size of the truth
    assert top > 0.75
    stuffed = features.column("min_named").to_numpy() >= 4
    assert p[stuffed].max() < 0.2  # keyword-stuffed lists never look right
    assert abs(float(p.mean()) - float(y.mean())) < 0.08


def test_label_model_pickles_and_is_deterministic(candidates) -> None:
    features, _ = candidates
    a = fit_label_model(features, seed=5)
    b = pickle.loads(pickle.dumps(fit_label_model(features, seed=5)))
    np.testing.assert_array_equal(a.predict(features), b.predict(features))
    with pytest.raises(ValueError):
        fit_label_model(features.slice(0, 0))
