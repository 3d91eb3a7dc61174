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


cuda = pytest.mark.skipif(not km.torch.cuda.is_available(), reason="needs a CUDA device (run on a lent GPU machine)")


@cuda
@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
def test_torch_cuda_matches_faiss_cpu(precision):
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(64, 32))
    x = (centres[rng.integers(0, 64, 20_000)] + 0.3 * rng.normal(size=(20_000, 32))).astype(np.float32)
    # Lloyd's iterations amplify any assignment that rounding flips, so lower precisions are compared after one.
    niter = 8 if precision == "fp32" else 1
    ours = kmeans(x, 64, niter=niter, backend="torch-cuda", precision=precision)
    theirs = kmeans(x, 64, niter=niter, backend="faiss-cpu")
    assert ours.backend == "torch-cuda"
    # One flipped point moves its two clusters' means by about 1/300 of a distance (seen on an H200: 0.021).
    np.testing.assert_allclose(ours.centroids, theirs.centroids, atol=1e-4 if precision == "fp32" else 5e-2)
    labels, dist = assign(x, ours.centroids, backend="torch-cuda", precision=precision)
    ref_labels, ref_dist = assign(x, ours.centroids, backend="faiss-cpu")
    same = labels == ref_labels
    assert same.mean() > 0.999
    # bf16 re-ranks its two candidates with exact float32 distances; tf32 reads them off its own matmul.
    np.testing.assert_allclose(dist[same], ref_dist[same], rtol=1e-3, atol=1e-3 if precision != "tf32" else 5e-2)


@cuda
def test_fused_bf16_assignment_on_cuda_matches_float32_but_near_ties():
    from index import fused_assign

    assert fused_assign.available(km.torch.device("cuda"))
    gen = km.torch.Generator().manual_seed(4)
    x = km.torch.randn(50_000, 128, generator=gen).cuda()
    centroids = km.torch.randn(1_000, 128, generator=gen).cuda()
    _, fused, fused_dist = km.lloyd_step(x, centroids, precision="bf16", chunk_rows=16_384)
    _, plain, plain_dist = km.lloyd_step(x, centroids, precision="fp32", chunk_rows=16_384)
    differ = fused != plain
    assert int(differ.sum()) < 50
    km.torch.testing.assert_close(fused_dist[differ], plain_dist[differ], rtol=1e-3, atol=1e-3)
