"""The signals of the noise index, per (image, class) pair, and the model inputs made of them.

Distance to the class's k-means centroids (normalised within the class), whether another label of the
image has the same name, and `design`, which lays every signal out as the columns of the calibrated model
(`index.calibrate`). Neighbour agreement and rivals are in `index.knn`; `index.noise.estimate_noise` puts
them together.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from index.kmeans import assign, clusters_for, kmeans, resolve_backend

if TYPE_CHECKING:
    from index.noise import NoiseConfig

Progress = Callable[[str, int, int], None]


def normalize_rows(x: np.ndarray, inplace: bool = False, center: bool = True, chunk_rows: int = 65_536) -> np.ndarray:
    """Subtract the mean vector (features of one model share a large common component that hides the
    differences between images), then L2-normalise rows (zero rows stay zero), chunk by chunk; float32."""
    out = x if inplace and x.dtype == np.float32 and x.flags.writeable else np.empty(x.shape, np.float32)
    mean = np.zeros(x.shape[1], dtype=np.float64)
    if center:
        for start in range(0, x.shape[0], chunk_rows):
            mean += np.asarray(x[start : start + chunk_rows], dtype=np.float64).sum(0)
        mean /= max(x.shape[0], 1)
    for start in range(0, x.shape[0], chunk_rows):
        chunk = np.asarray(x[start : start + chunk_rows], dtype=np.float32) - mean.astype(np.float32)
        norm = np.linalg.norm(chunk, axis=1, keepdims=True)
        out[start : start + chunk_rows] = chunk / np.where(norm > 0, norm, 1)
    return out


def class_distances(
    x: np.ndarray, rows: np.ndarray, classes: np.ndarray, n_classes: int, config: NoiseConfig,
    progress: Progress | None = None, probe_rows: np.ndarray | None = None, probe_classes: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per label: Euclidean distance to the nearest centroid of its class; per class: centroids and median;
    per probe (image row, class) that is not a label: its distance to that class's centroids, fitted on the
    labels only.

    A class small enough for one centroid uses its mean, with the image itself left out (a class of two
    would otherwise put each image half-way to itself); a class of one, or a probe of a class without labels,
    has no distance (NaN).
    """
    if probe_rows is None or probe_classes is None:
        probe_rows, probe_classes = np.zeros(0, np.int64), np.zeros(0, np.int32)
    probe_order = np.argsort(probe_classes, kind="stable")
    probe_bounds = np.searchsorted(probe_classes[probe_order], np.arange(n_classes + 1))
    probe_dist = np.full(len(probe_rows), np.nan, dtype=np.float32)
    backend = resolve_backend(config.backend)
    order = np.argsort(classes, kind="stable")
    bounds = np.searchsorted(classes[order], np.arange(n_classes + 1))
    dist = np.full(len(rows), np.nan, dtype=np.float32)
    centroids = np.zeros(n_classes, dtype=np.int32)
    median = np.full(n_classes, np.nan)
    active = np.flatnonzero(np.diff(bounds))
    for done, c in enumerate(active):
        members = order[bounds[c] : bounds[c + 1]]
        probes = probe_order[probe_bounds[c] : probe_bounds[c + 1]]
        sub = np.asarray(x[rows[members]], dtype=np.float32)
        n = len(sub)
        k = clusters_for(n, config.points_per_centroid, config.max_class_centroids)
        centroids[c] = k
        if k == 1:
            if n > 1:
                d = np.linalg.norm(sub - sub.mean(0), axis=1) * (n / (n - 1))
                dist[members] = d
                median[c] = np.median(d)
                if len(probes):
                    probe_dist[probes] = np.linalg.norm(np.asarray(x[probe_rows[probes]]) - sub.mean(0), axis=1)
        else:
            trained = kmeans(sub, k, niter=config.niter, seed=config.seed + int(c), backend=backend)
            _, sq = assign(sub, trained.centroids, backend=backend)
            dist[members] = np.sqrt(sq)
            median[c] = np.median(dist[members])
            if len(probes):
                _, sq = assign(np.asarray(x[probe_rows[probes]], dtype=np.float32), trained.centroids, backend=backend)
                probe_dist[probes] = np.sqrt(sq)
        if progress and (done % 64 == 0 or done == len(active) - 1):
            progress("class k-means", done + 1, len(active))
    return dist, centroids, median, probe_dist


def normalised_distance(
    dist: np.ndarray, classes: np.ndarray, median: np.ndarray, n_per_class: np.ndarray, prior: float,
    global_median: float | None = None,
) -> np.ndarray:
    """Distance over the class's median distance, the median shrunk to the global one (of `dist`, unless
    given) for small classes.

    Labels without a distance (single-image classes) get 1, the typical value: no evidence either way.
    """
    finite = np.isfinite(dist)
    if global_median is None:
        global_median = float(np.median(dist[finite])) if finite.any() else 1.0
    med = np.where(np.isfinite(median), median, global_median)
    scale = (n_per_class * med + prior * global_median) / (n_per_class + prior)
    scale = np.where(scale > 0, scale, global_median if global_median > 0 else 1.0)
    z = dist / scale[classes]
    return np.where(finite, z, 1.0).astype(np.float32)


def bucket_edges(z: np.ndarray, buckets: int) -> np.ndarray:
    """Inner edges of `buckets` equal-count distance buckets."""
    return np.unique(np.quantile(z, np.arange(1, buckets) / buckets)) if len(z) else np.zeros(0)


def design(
    z: np.ndarray, agree_logit: np.ndarray, edges: np.ndarray, score_logit: np.ndarray | None = None,
    same_name: np.ndarray | None = None, rival_logit: np.ndarray | None = None, label: np.ndarray | None = None,
    class_same_name: np.ndarray | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Model inputs per (image, class) pair and their names: intercept, one indicator per distance bucket but
    the first, kNN agreement, and when known the labeller's own log-odds that the pair is right, whether
    another label of the image has the same name, how many neighbours carry the strongest unrelated class,
    whether the pair is a label (verified candidates the labeller did not keep are not), and the share of
    its class's labels that share their name (a class that lives on one ambiguous word)."""
    bucket = np.searchsorted(edges, z, side="right")
    onehot = np.zeros((len(z), len(edges)), dtype=np.float64)
    above = bucket > 0
    onehot[np.flatnonzero(above), bucket[above] - 1] = 1.0
    optional = {"score": score_logit, "same_name": same_name, "rivals": rival_logit, "label": label,
                "class_same_name": class_same_name}
    names = ["intercept", *(f"bucket_{b + 1}" for b in range(len(edges))), "agreement"]
    names += [name for name, column in optional.items() if column is not None]
    columns = [column for column in optional.values() if column is not None]
    return np.column_stack([np.ones(len(z)), onehot, agree_logit, *columns]), names


def _name_codes(names: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """One integer per class name, equal for names equal up to case and surrounding spaces."""
    if isinstance(names, pa.ChunkedArray):
        names = names.combine_chunks()
    folded = pc.utf8_lower(pc.utf8_trim_whitespace(names.cast(pa.string())))
    return pc.dictionary_encode(folded).indices.to_numpy(zero_copy_only=False).astype(np.int64)


def name_among_labels(rows: np.ndarray, classes: np.ndarray, names: pa.Array | pa.ChunkedArray,
                      probe_rows: np.ndarray, probe_classes: np.ndarray) -> np.ndarray:
    """Per probe (image row, class) that is not a label: does a label of that image have the class's name?"""
    code = _name_codes(names)
    width = int(code.max(initial=0)) + 1
    keys = np.sort(rows.astype(np.int64) * width + code[classes])
    probe = probe_rows.astype(np.int64) * width + code[probe_classes]
    at = np.minimum(np.searchsorted(keys, probe), max(len(keys) - 1, 0))
    return (keys[at] == probe) if len(keys) else np.zeros(len(probe), dtype=bool)


def shares_name(rows: np.ndarray, classes: np.ndarray, names: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Per label: does another label of the same image have the same class name (case and spaces ignored)?"""
    code = _name_codes(names)
    width = int(code.max(initial=0)) + 1
    key = rows.astype(np.int64) * width + code[classes]
    order = np.argsort(key, kind="stable")
    ordered = key[order]
    repeated = np.zeros(len(key), dtype=bool)
    if len(key) > 1:
        same = ordered[1:] == ordered[:-1]
        repeated[order[1:][same]] = True
        repeated[order[:-1][same]] = True
    return repeated
