"""Nearest neighbours of every image among the others, and how many of them share each of its labels.

The second noise signal: a wrong label disagrees with the labels of the images that look like it, even when
the image sits near a centroid (a flipped label inside a look-alike class's cluster). Exact search below
`exact_max` images; above it an inverted file over the global k-means centroids, so the cost per image is
`nprobe / nlist` of the collection instead of all of it, searched in a PCA projection to `search_dim`
dimensions (neighbours for a label vote need not be exact; at 1M x 512 the full-width scan took 49 minutes
of the 54 on two cores). With a class hierarchy, a neighbour agrees with a label when it carries that class
or any class below it (`index.hierarchy.with_ancestors`): web labels rarely repeat every ancestor, so a
"dog" on a beagle photo would otherwise look unsupported among neighbours labelled "beagle".
"""

from __future__ import annotations

import math
from collections.abc import Callable

import faiss
import numpy as np
import pyarrow as pa
import torch

from index.hierarchy import gather_csr, relation
from index.kmeans import kmeans, resolve_backend
from index.signals import normalize_rows

Progress = Callable[[str, int, int], None]


def global_centroids_for(n: int) -> int:
    """Inverted lists for `n` vectors: about 2 * sqrt(n), between 1 and 16384."""
    return int(min(16_384, max(1, round(2 * math.sqrt(n)))))


def neighbours(
    x: np.ndarray,
    k: int,
    *,
    exact_max: int = 20_000,
    nprobe: int = 8,
    search_dim: int = 64,
    backend: str = "auto",
    seed: int = 0,
    chunk_rows: int = 16_384,
    progress: Progress | None = None,
    principal_axes: bool = False,
) -> np.ndarray:
    """(n, k) int64 row indices of each row's nearest other rows by inner product (-1 where fewer exist).

    `x` should be L2-normalised, so inner product ranks like Euclidean distance. With `principal_axes` its
    columns already are principal axes in order of variance (`index.whiten`), and the inverted file's
    projection keeps the first `search_dim` of them instead of fitting a PCA (which on whitened data, of
    equal variance in every direction, would pick arbitrary axes).
    """
    n = x.shape[0]
    out = np.full((n, k), -1, dtype=np.int64)
    if n <= 1 or k <= 0:
        return out
    backend = resolve_backend(backend)
    want = min(k + 1, n)
    if backend == "torch-cuda":
        search = _torch_search(x, want)
    elif n <= exact_max:
        index = faiss.IndexFlatIP(x.shape[1])
        index.add(np.ascontiguousarray(x, dtype=np.float32))
        search = index.search
    else:
        x = _first_columns(x, search_dim, chunk_rows) if principal_axes else _project(x, search_dim, seed, chunk_rows)
        search = _ivf(x, nprobe, backend, seed, chunk_rows).search
    for start in range(0, n, chunk_rows):
        stop = min(n, start + chunk_rows)
        _, found = search(np.ascontiguousarray(x[start:stop], dtype=np.float32), want)
        out[start:stop] = _drop_self(found, np.arange(start, stop), k)
        if progress:
            progress("neighbours", stop, n)
    return out


def _drop_self(found: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Remove each row's own index (or the last hit when the row was not found, e.g. a duplicate vector)."""
    keep = found != rows[:, None]
    too_many = keep.sum(1) > k
    keep[too_many, -1] = False
    kept = np.full((len(rows), k), -1, dtype=np.int64)
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    values = np.take_along_axis(found, order, 1)
    mask = np.take_along_axis(keep, order, 1)
    kept[mask] = values[mask]
    return kept


def _project(x: np.ndarray, dim: int, seed: int, chunk_rows: int) -> np.ndarray:
    """Rows projected on their top `dim` principal axes (fitted on at most 100k rows), re-normalised."""
    n, d = x.shape
    if d <= dim:
        return x
    sample = x[np.sort(np.random.default_rng(seed).choice(n, size=min(n, 100_000), replace=False))]
    pca = faiss.PCAMatrix(d, dim)
    pca.train(np.ascontiguousarray(sample, dtype=np.float32))
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk_rows):
        chunk = pca.apply(np.ascontiguousarray(x[start : start + chunk_rows], dtype=np.float32))
        norm = np.linalg.norm(chunk, axis=1, keepdims=True)
        out[start : start + len(chunk)] = chunk / np.where(norm > 0, norm, 1)
    return out


def _first_columns(x: np.ndarray, dim: int, chunk_rows: int) -> np.ndarray:
    """The first `dim` columns of every row, re-normalised."""
    return x if x.shape[1] <= dim else normalize_rows(x[:, :dim], center=False, chunk_rows=chunk_rows)


def _ivf(x: np.ndarray, nprobe: int, backend: str, seed: int, chunk_rows: int) -> faiss.Index:
    n, d = x.shape
    nlist = global_centroids_for(n)
    trained = kmeans(x, nlist, niter=10, seed=seed, max_points_per_centroid=64, backend=backend)
    quantizer = faiss.IndexFlatL2(d)  # lists are the k-means (L2) cells; faiss keeps a reference to it
    quantizer.add(trained.centroids)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.is_trained = True
    for start in range(0, n, chunk_rows):
        index.add(np.ascontiguousarray(x[start : start + chunk_rows], dtype=np.float32))
    index.nprobe = min(nprobe, nlist)
    return index


def _torch_search(x: np.ndarray, want: int) -> Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]:
    """Brute-force search on CUDA in bf16 (the whole collection stays on the GPU)."""
    base = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).cuda().to(torch.bfloat16)

    def search(chunk: np.ndarray, _: int) -> tuple[np.ndarray, np.ndarray]:
        scores = torch.from_numpy(chunk).cuda().to(torch.bfloat16) @ base.T
        top = scores.topk(want, dim=1)
        return top.values.float().cpu().numpy(), top.indices.cpu().numpy()

    return search


def label_agreement(
    nbrs: np.ndarray, label_offsets: np.ndarray, label_values: np.ndarray, pair_row: np.ndarray,
    pair_class: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per (image, class) pair: how many of the image's neighbours carry that class, and how many neighbours.

    Labels are CSR (`label_offsets`, `label_values`) over the same rows as `nbrs`. One sorted key per
    (row, class) label makes every membership test a binary search, so the cost is pairs x k lookups.
    """
    n_classes = int(label_values.max()) + 1 if len(label_values) else 1
    rows = np.repeat(np.arange(len(label_offsets) - 1, dtype=np.int64), np.diff(label_offsets))
    keys = np.sort(rows * n_classes + label_values.astype(np.int64))
    agree = np.zeros(len(pair_row), dtype=np.int32)
    valid = (nbrs >= 0).sum(1).astype(np.int32)[pair_row]
    for j in range(nbrs.shape[1]):
        other = nbrs[pair_row, j]
        probe = np.where(other >= 0, other, 0) * n_classes + pair_class.astype(np.int64)
        # Sorted probes walk `keys` in order (8x faster than random ones on 7M keys, measured).
        order = np.argsort(probe)
        at = np.empty(len(probe), dtype=np.int64)
        at[order] = np.minimum(np.searchsorted(keys, probe[order]), len(keys) - 1)
        agree += ((keys[at] == probe) & (other >= 0)).astype(np.int32)
    return agree, valid


def neighbour_rivals(
    nbrs: np.ndarray, label_offsets: np.ndarray, label_values: np.ndarray, pair_row: np.ndarray,
    pair_class: np.ndarray, parents: pa.ListArray | None = None, top: int = 4,
) -> np.ndarray:
    """Per (image, class) pair: how many of the image's neighbours carry the most common class among them
    that is not this class, nor (with `parents`) an ancestor or descendant of it; searched among the `top`
    most common classes of the neighbours.

    The visual counterpart of a look-alike: an image labelled "shears" whose neighbours are mostly labelled
    "clipper" is probably a clipper, even where a few other clippers also carry "shears" (so that agreement
    alone is not low), and the wrong reading of an ambiguous word sits among images of the right one.
    """
    n_rows, k = nbrs.shape
    n_classes = int(label_values.max(initial=0)) + 1
    slot_image = np.repeat(np.arange(n_rows, dtype=np.int64), k)
    other = nbrs.reshape(-1).astype(np.int64)
    slot_image, other = slot_image[other >= 0], other[other >= 0]
    seen, per_slot = gather_csr(label_offsets, label_values, other)
    keys = np.sort(np.repeat(slot_image, per_slot) * n_classes + seen.astype(np.int64))
    rivals = np.zeros(len(pair_row), dtype=np.int32)
    if not keys.size:
        return rivals
    starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
    count = np.diff(np.append(starts, len(keys)))
    image, cls = np.divmod(keys[starts], n_classes)
    # Most common first within each image, ties by class id (already ascending): one stable sort.
    order = np.argsort(image * (k + 1) + (k - np.minimum(count, k)), kind="stable")
    image, cls, count = image[order], cls[order], count[order]
    rank = np.arange(len(image)) - np.searchsorted(image, image, side="left")
    kept = rank < top
    candidates = np.full((n_rows, top), -1, dtype=np.int64)
    counts = np.zeros((n_rows, top), dtype=np.int32)
    candidates[image[kept], rank[kept]] = cls[kept]
    counts[image[kept], rank[kept]] = count[kept]
    related = relation(np.concatenate([label_values, pair_class.astype(label_values.dtype)]), parents)
    found = np.zeros(len(pair_row), dtype=bool)
    mine = pair_class.astype(np.int64)
    for slot in range(top):
        theirs = candidates[pair_row, slot]
        take = ~found & (theirs >= 0) & (theirs != mine) & ~related(mine, np.maximum(theirs, 0))
        rivals[take] = counts[pair_row[take], slot]
        found |= take
    return rivals
