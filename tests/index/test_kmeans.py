"""k-means: the torch loop gives FAISS's answer on the same problem, assignment streams, and sizes are checked."""

from __future__ import annotations

import numpy as np
import pytest

import index.kmeans as km
from index.kmeans import assign, clusters_for, initial_centroids, kmeans, resolve_backend, training_sample


def _blobs(n: int = 3000, d: int = 16, centres: int = 10, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    means = 4 * rng.normal(size=(centres, d))
    return (rng.normal(size=(n, d)) + means[rng.integers(0, centres, n)]).astype(np.float32)


def test_torch_cpu_matches_faiss_cpu():
    x = _blobs()
    a = kmeans(x, 50, niter=10, seed=2, backend="faiss-cpu")
    b = kmeans(x, 50, niter=10, seed=2, backend="torch-cpu")
    assert a.backend == "faiss-cpu" and b.backend == "torch-cpu"
    np.testing.assert_allclose(a.centroids, b.centroids, rtol=0, atol=1e-4)
    np.testing.assert_allclose(a.objective, b.objective, rtol=1e-5)
    assert len(a.objective) == 10 and a.objective[-1] <= a.objective[0]


def test_empty_clusters_are_split_like_faiss(monkeypatch):
    x = _blobs()
    x[:40] = x[0]  # duplicates: some initial centroids coincide and one of each pair ends up empty
    splits = []
    original = km._split_clusters

    def spy(hassign, centroids, n):
        splits.append(original(hassign, centroids, n))
        return splits[-1]

    monkeypatch.setattr(km, "_split_clusters", spy)
    a = kmeans(x, 100, niter=10, seed=3, backend="faiss-cpu")
    b = kmeans(x, 100, niter=10, seed=3, backend="torch-cpu")
    assert sum(splits) > 0
    np.testing.assert_allclose(a.centroids, b.centroids, rtol=0, atol=1e-4)


def test_assignment_streams_and_agrees_across_backends(tmp_path):
    x = _blobs(2000)
    centroids = kmeans(x, 20, niter=5, backend="faiss-cpu").centroids
    path = tmp_path / "x.npy"
    np.save(path, x)
    mapped = np.load(path, mmap_mode="r")
    seen = []
    la, da = assign(mapped, centroids, backend="faiss-cpu", chunk_rows=300, progress=lambda *a: seen.append(a))
    lb, db = assign(x, centroids, backend="torch-cpu", chunk_rows=7)
    whole, _ = assign(x, centroids, backend="faiss-cpu")
    np.testing.assert_array_equal(la, whole)
    np.testing.assert_array_equal(la, lb)
    np.testing.assert_allclose(da, db, rtol=1e-4, atol=1e-3)
    exact = ((x - centroids[la]) ** 2).sum(1)
    np.testing.assert_allclose(da, exact, rtol=1e-4, atol=1e-3)
    assert seen[-1] == ("assign", 2000, 2000) and len(seen) == 7


def test_training_sample_is_bounded_and_deterministic():
    rows = training_sample(10_000, 10, 64, seed=1)
    assert len(rows) == 640 and np.all(np.diff(rows) > 0)
    np.testing.assert_array_equal(rows, training_sample(10_000, 10, 64, seed=1))
    assert len(training_sample(500, 10, 64, seed=1)) == 500
    sample = np.arange(20, dtype=np.float32).reshape(10, 2)
    init = initial_centroids(sample, 4, seed=0)
    assert len({tuple(r) for r in init}) == 4


def test_k_equal_to_n_returns_the_points_and_larger_k_is_an_error():
    x = _blobs(30)
    result = kmeans(x, 30, backend="torch-cpu")
    assert sorted(map(tuple, result.centroids)) == sorted(map(tuple, x))
    with pytest.raises(ValueError, match="1 <= k <= 30"):
        kmeans(x, 31)


def test_backend_choice():
    assert resolve_backend("auto") in ("faiss-gpu", "torch-cuda", "faiss-cpu")
    with pytest.raises(ValueError, match="unknown k-means backend"):
        resolve_backend("cuml")
    if km.faiss_gpus() == 0:
        with pytest.raises(ValueError, match="no GPU support"):
            resolve_backend("faiss-gpu")


def test_non_finite_input_is_refused():
    x = _blobs(100)
    x[5, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        kmeans(x, 4)


def test_clusters_scale_with_group_size():
    assert [clusters_for(n, 50, 8) for n in (0, 1, 49, 100, 260, 10_000)] == [0, 1, 1, 2, 5, 8]
