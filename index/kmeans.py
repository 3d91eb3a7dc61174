"""k-means and nearest-centroid assignment on FAISS or torch, with one algorithm whatever runs it.

Backends: `faiss-gpu` (faiss built with GPU support and a GPU present), `torch-cuda` (torch sees CUDA but faiss
has no GPU support: the lent GPU machines), `faiss-cpu` otherwise; `torch-cpu` exists to test that the torch
code gives FAISS's answer. webjft draws the training sample and the initial centroids itself, so every
backend starts from the same points; the torch loop then mirrors FAISS's `Clustering::train` step for step
(exact L2 assignment, means, FAISS's empty-cluster splitting with the same random stream), and the results
agree up to float rounding.

Assignment streams fixed-size row chunks, so memory is one chunk times the centroids, whatever the input
size; the input may be a memory-mapped array.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import faiss
import numpy as np
import torch

from index import fused_assign

Backend = Literal["auto", "faiss-gpu", "torch-cuda", "faiss-cpu", "torch-cpu"]
BACKENDS: tuple[str, ...] = ("auto", "faiss-gpu", "torch-cuda", "faiss-cpu", "torch-cpu")
Precision = Literal["fp32", "tf32", "bf16"]
Progress = Callable[[str, int, int], None]

_SPLIT_EPS = 1 / 1024.0  # FAISS's symmetric perturbation when it splits a cluster
_SPLIT_SEED = 1234  # FAISS seeds split_clusters' generator with this on every call
_MT_MAX = np.float32(4294967295.0)


@functools.cache
def faiss_gpus() -> int:
    """GPUs FAISS can use (0 for faiss-cpu builds)."""
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


def resolve_backend(backend: str = "auto") -> str:
    """The concrete backend for `backend`; ValueError naming the choices for an unknown or unusable one."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown k-means backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        if faiss_gpus() > 0:
            return "faiss-gpu"
        return "torch-cuda" if torch.cuda.is_available() else "faiss-cpu"
    if backend == "faiss-gpu" and faiss_gpus() == 0:
        raise ValueError("k-means backend faiss-gpu: this faiss has no GPU support or sees no GPU")
    if backend == "torch-cuda" and not torch.cuda.is_available():
        raise ValueError("k-means backend torch-cuda: torch sees no CUDA device")
    return backend


@dataclass(frozen=True)
class KMeans:
    """Trained centroids (float32, k x d), the objective per iteration on the training sample, and who ran it."""

    centroids: np.ndarray
    objective: list[float] = field(default_factory=list)
    backend: str = "faiss-cpu"
    n_train: int = 0

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])


def _as_float32(x: np.ndarray) -> np.ndarray:
    if x.ndim != 2:
        raise ValueError(f"expected a 2-d array of vectors, got shape {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float32)


def training_sample(n: int, k: int, max_points_per_centroid: int, seed: int) -> np.ndarray:
    """Sorted row indices of the training sample: all rows, or k * max_points_per_centroid drawn without
    replacement (FAISS's own subsampling, done here so every backend trains on the same rows)."""
    limit = k * max_points_per_centroid
    if n <= limit:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=limit, replace=False)).astype(np.int64)


def initial_centroids(sample: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k distinct sample rows chosen at random (FAISS's default initialisation, with numpy's generator)."""
    rng = np.random.default_rng(seed + 1)
    return sample[np.sort(rng.permutation(len(sample))[:k])].copy()


def kmeans(
    x: np.ndarray,
    k: int,
    *,
    niter: int = 20,
    seed: int = 0,
    max_points_per_centroid: int = 256,
    backend: str = "auto",
    precision: Precision = "fp32",
    chunk_rows: int = 16_384,
) -> KMeans:
    """Lloyd's k-means with FAISS semantics on the chosen backend.

    Trains on at most `k * max_points_per_centroid` rows (sampled once); `k` larger than the number of rows
    is an error, as in FAISS. `precision` applies to torch on CUDA only (see `assign`).
    """
    backend = resolve_backend(backend)
    n, d = x.shape
    if k < 1 or k > n:
        raise ValueError(f"k-means with k={k} needs 1 <= k <= {n} (the number of points)")
    rows = training_sample(n, k, max_points_per_centroid, seed)
    sample = _as_float32(x[rows] if len(rows) < n else x)
    if not np.isfinite(sample).all():
        raise ValueError("k-means input has NaN or infinite values")
    init = initial_centroids(sample, k, seed)
    if len(sample) == k:
        return KMeans(init, [0.0], backend, len(sample))
    if backend.startswith("faiss"):
        centroids, objective = _train_faiss(sample, init, niter, backend == "faiss-gpu")
    else:
        device = "cuda" if backend == "torch-cuda" else "cpu"
        centroids, objective = _train_torch(sample, init, niter, device, precision, chunk_rows)
    return KMeans(centroids, objective, backend, len(sample))


def _train_faiss(sample: np.ndarray, init: np.ndarray, niter: int, gpu: bool) -> tuple[np.ndarray, list[float]]:
    k, d = init.shape
    clus = faiss.Clustering(d, k)
    clus.niter = niter
    clus.max_points_per_centroid = len(sample)  # already sampled: no second subsampling
    clus.min_points_per_centroid = 1  # small classes are legitimate here; FAISS would only warn
    clus.verbose = False
    faiss.copy_array_to_vector(init.ravel(), clus.centroids)
    index = _faiss_flat(d, gpu)
    clus.train(sample, index)
    stats = clus.iteration_stats
    objective = [float(stats.at(i).obj) for i in range(stats.size())]
    return faiss.vector_to_array(clus.centroids).reshape(k, d).astype(np.float32), objective


def _faiss_flat(d: int, gpu: bool) -> faiss.Index:
    index = faiss.IndexFlatL2(d)
    if gpu:
        return faiss.index_cpu_to_gpu(_gpu_resources(), 0, index)
    return index


@functools.cache
def _gpu_resources():
    return faiss.StandardGpuResources()


def _train_torch(
    sample: np.ndarray, init: np.ndarray, niter: int, device: str, precision: Precision, chunk_rows: int
) -> tuple[np.ndarray, list[float]]:
    xs = torch.from_numpy(sample).to(device)
    centroids = torch.from_numpy(init).to(device)
    objective = []
    for _ in range(niter):
        centroids, _, dist = lloyd_step(xs, centroids, precision=precision, chunk_rows=chunk_rows)
        objective.append(float(dist.double().sum()))
    return centroids.cpu().numpy(), objective


def lloyd_step(
    xs: torch.Tensor,
    centroids: torch.Tensor,
    *,
    precision: Precision = "fp32",
    chunk_rows: int = 16_384,
    fused: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One k-means iteration on the tensors' device: assign, average, split empty clusters as FAISS does.

    Returns the new centroids and the assignment (labels, squared distances) to the old ones. `fused`
    lets bf16 use the Triton kernel (`index.fused_assign`) where it can run.
    """
    k, d = centroids.shape
    labels, dist = _assign_torch(xs, centroids, precision, chunk_rows, fused)
    sums = torch.zeros((k, d), dtype=torch.float32, device=xs.device).index_add_(0, labels, xs)
    counts = torch.bincount(labels, minlength=k).to(torch.float32)
    new = sums * torch.where(counts > 0, 1.0 / counts.clamp(min=1), 0.0)[:, None]
    hassign = counts.cpu().numpy()
    if (hassign == 0).any():
        host = new.cpu().numpy()
        _split_clusters(hassign, host, xs.shape[0])
        new = torch.from_numpy(host).to(xs.device)
    return new, labels, dist


def _split_clusters(hassign: np.ndarray, centroids: np.ndarray, n: int) -> int:
    """FAISS's `split_clusters`, in place: each empty cluster copies a big one (picked with probability
    proportional to its size, from the same Mersenne Twister stream) and the two move apart by 1/1024."""
    k = len(hassign)
    rng = np.random.RandomState(_SPLIT_SEED)
    denominator = float(np.float32(n - k))
    nsplit = 0
    for ci in range(k):
        if hassign[ci] != 0:
            continue
        cj = 0
        while True:
            p = np.float32((float(hassign[cj]) - 1.0) / denominator)
            r = np.float32(np.float32(rng.randint(0, 2**32, dtype=np.uint64)) / _MT_MAX)
            if r < p:
                break
            cj = (cj + 1) % k
        centroids[ci] = centroids[cj]
        up = (centroids[ci].astype(np.float64) * (1 + _SPLIT_EPS)).astype(np.float32)
        down = (centroids[ci].astype(np.float64) * (1 - _SPLIT_EPS)).astype(np.float32)
        even = np.arange(centroids.shape[1]) % 2 == 0
        centroids[ci] = np.where(even, up, down)
        centroids[cj] = np.where(even, down, up)
        hassign[ci] = hassign[cj] / 2
        hassign[cj] -= hassign[ci]
        nsplit += 1
    return nsplit


def _assign_torch(
    x: torch.Tensor, centroids: torch.Tensor, precision: Precision, chunk_rows: int, fused: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid and squared distance per row of a tensor already on the centroids' device.

    bf16 runs the fused Triton kernel (`index.fused_assign`) where it can; elsewhere bf16 means tf32, since an
    unfused bf16 `addmm` is slower than tf32 and, with the centroid norms rounded to bf16, less exact.
    """
    labels = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    dist = torch.empty(x.shape[0], dtype=torch.float32, device=x.device)
    c_norm = (centroids * centroids).sum(1)
    low = None
    if precision == "bf16" and fused and fused_assign.available(x.device):
        # The Triton interpreter (CPU tests) has no bfloat16; it runs the same kernel in float32.
        low = centroids.to(torch.bfloat16) if x.is_cuda else centroids
    elif precision == "bf16":
        precision = "tf32"
    for start in range(0, x.shape[0], chunk_rows):
        chunk = x[start : start + chunk_rows]
        if low is not None:
            got = _nearest_fused(chunk, centroids, c_norm, low)
        else:
            got = _nearest(chunk, centroids, c_norm, precision)
        labels[start : start + len(chunk)], dist[start : start + len(chunk)] = got
    return labels, dist


def _nearest_fused(
    chunk: torch.Tensor, centroids: torch.Tensor, c_norm: torch.Tensor, low: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel shortlists two centroids from low-precision dot products and picks between them by exact
    float32 distance, so the answer differs from float32's only at near-ties."""
    return fused_assign.nearest_exact(chunk, chunk.to(low.dtype), centroids, low, c_norm)


def _nearest(
    chunk: torch.Tensor, centroids: torch.Tensor, c_norm: torch.Tensor, precision: str
) -> tuple[torch.Tensor, torch.Tensor]:
    x_norm = (chunk * chunk).sum(1)
    allow = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    try:
        scores = torch.addmm(c_norm, chunk, centroids.T, alpha=-2)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allow
    labels = scores.argmin(1)
    return labels, (scores.gather(1, labels[:, None])[:, 0] + x_norm).clamp_(min=0)


def assign(
    x: np.ndarray,
    centroids: np.ndarray,
    *,
    backend: str = "auto",
    precision: Precision = "fp32",
    chunk_rows: int = 65_536,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid (int64) and squared L2 distance (float32) for every row, `chunk_rows` at a time.

    Only one chunk of `x` is converted or moved to the device at once, so `x` can be a memory-mapped array
    far larger than memory.
    """
    backend = resolve_backend(backend)
    n = x.shape[0]
    centroids = _as_float32(centroids)
    labels = np.empty(n, dtype=np.int64)
    dist = np.empty(n, dtype=np.float32)
    if backend.startswith("faiss"):
        index = _faiss_flat(centroids.shape[1], backend == "faiss-gpu")
        index.add(centroids)
        search = index.search
    else:
        device = "cuda" if backend == "torch-cuda" else "cpu"
        cent = torch.from_numpy(centroids).to(device)

        def search(chunk: np.ndarray, _: int) -> tuple[np.ndarray, np.ndarray]:
            got_labels, got_dist = _assign_torch(torch.from_numpy(chunk).to(device), cent, precision, 8_192)
            return got_dist.cpu().numpy()[:, None], got_labels.cpu().numpy()[:, None]

    for start in range(0, n, chunk_rows):
        stop = min(n, start + chunk_rows)
        got_dist, got_labels = search(_as_float32(x[start:stop]), 1)
        labels[start:stop], dist[start:stop] = got_labels[:, 0], got_dist[:, 0]
        if progress:
            progress("assign", stop, n)
    return labels, dist


def clusters_for(n: int, points_per_centroid: int, max_centroids: int) -> int:
    """Centroids for a group of `n` points: one per `points_per_centroid`, at least 1, at most `max_centroids`."""
    if n <= 0:
        return 0
    return int(min(max_centroids, max(1, math.floor(n / points_per_centroid)), n))
