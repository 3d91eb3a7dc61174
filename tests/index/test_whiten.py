"""PCA whitening: unit-variance principal axes (shrunk), rank and size limits, in place, deterministic."""

from __future__ import annotations

import numpy as np

from index.knn import neighbours
from index.whiten import apply_whitening, fit_whitening


def _stretched(n: int = 5000, seed: int = 0) -> np.ndarray:
    """Rows whose variance is 100 along one direction, 4 along another, 1 along the other six."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)) * np.array([10.0, 2.0, 1, 1, 1, 1, 1, 1])
    rotation, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    return (x @ rotation + 5.0).astype(np.float32)


def test_axes_come_out_with_unit_variance_in_order_and_shrunk_on_request():
    x = _stretched()
    full = fit_whitening(x, 8, shrink=0.0)
    assert full.dims == 8 and np.all(np.diff(full.variance) <= 0)
    assert abs(full.variance[0] / full.variance[1] - 25) < 3
    y = (x - full.mean) @ full.matrix
    np.testing.assert_allclose(y.var(0, ddof=1), 1.0, rtol=1e-3)
    shrunk = fit_whitening(x, 8, shrink=1.0)
    z = ((x - shrunk.mean) @ shrunk.matrix).var(0, ddof=1)
    expected = shrunk.variance / (shrunk.variance + shrunk.variance.mean())
    np.testing.assert_allclose(z, expected, rtol=1e-3)
    assert z[0] > 0.85 and z[-1] < 0.1  # the big axis is near unit variance, the small ones stay small


def test_rank_and_max_dims_limit_the_axes():
    rng = np.random.default_rng(1)
    flat = (rng.normal(size=(400, 3)) @ rng.normal(size=(3, 10))).astype(np.float32)  # rank 3 in 10 dims
    assert fit_whitening(flat, 256).dims == 3
    assert fit_whitening(_stretched(), 2).dims == 2


def test_apply_normalises_rows_and_can_write_over_its_input():
    x = _stretched()
    w = fit_whitening(x, 4)
    copy = apply_whitening(x, w)
    assert copy.shape == (5000, 4) and copy.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(copy, axis=1), 1.0, rtol=1e-5)
    same = apply_whitening(x.copy(), w, chunk_rows=333)
    np.testing.assert_array_equal(same, copy)
    target = x.copy()
    inplace = apply_whitening(target, w, inplace=True, chunk_rows=333)
    assert np.shares_memory(inplace, target)
    np.testing.assert_array_equal(inplace, copy)


def test_same_input_same_axes_and_a_seeded_sample():
    x = _stretched(n=3000)
    a, b = fit_whitening(x, 8, sample=1000, seed=3), fit_whitening(x.copy(), 8, sample=1000, seed=3)
    np.testing.assert_array_equal(a.matrix, b.matrix)
    other = fit_whitening(x, 8, sample=1000, seed=4)
    assert not np.array_equal(a.matrix, other.matrix)
    # A sample of a third of the rows finds the same main axis as all of them (up to sampling error).
    whole = fit_whitening(x, 8)
    first, best = a.matrix[:, 0], whole.matrix[:, 0]
    cosine = abs(first @ best) / np.linalg.norm(first) / np.linalg.norm(best)
    assert cosine > 0.99


def test_neighbours_on_principal_axes_search_their_first_columns():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 16)) * 3
    x = np.concatenate([centres[rng.integers(0, 20, 2000)] + 0.05 * rng.normal(size=(2000, 16)),
                        0.01 * rng.normal(size=(2000, 48))], axis=1).astype(np.float32)
    y = apply_whitening(x, fit_whitening(x, 64))
    found = neighbours(y, 5, backend="faiss-cpu", exact_max=100, nprobe=4, search_dim=16, principal_axes=True)
    assert not (found == np.arange(2000)[:, None]).any()
    assert ((y[found] * y[:, None, :]).sum(-1) > 0.8).mean() > 0.95
