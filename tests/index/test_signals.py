"""The noise index's per-pair signals: distances against the labels' centroids, shared names."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from index.noise import NoiseConfig
from index.signals import class_distances, shares_name


def test_shares_name_ignores_case_and_spaces_and_needs_the_same_image():
    names = pa.array(["Crane", "crane ", "heron"])
    rows = np.array([0, 0, 0, 1, 2])
    classes = np.array([0, 1, 2, 0, 1])
    assert shares_name(rows, classes, names).tolist() == [True, True, False, False, False]
    assert shares_name(rows, classes, pa.chunked_array([names[:1], names[1:]])).tolist() == [True, True, False,
                                                                                              False, False]


def test_probe_distances_use_the_labels_centroids():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 0.1, (10, 4)) + 1, rng.normal(0, 0.1, (200, 4)) - 1]).astype(np.float32)
    rows = np.arange(210)
    classes = np.array([0] * 10 + [1] * 200, dtype=np.int32)
    config = NoiseConfig(backend="faiss-cpu", points_per_centroid=50)
    plain = class_distances(x, rows, classes, 3, config)
    dist, _, _, probe = class_distances(x, rows, classes, 3, config, probe_rows=np.array([0, 15, 5]),
                                        probe_classes=np.array([1, 0, 2]))
    assert np.array_equal(dist, plain[0])  # probes do not move the labels' distances
    assert probe[0] > 3 and probe[1] > 3 and np.isnan(probe[2])  # far from the other class; class 2 has no labels
    assert abs(probe[0] - np.linalg.norm(x[0] - x[10:].mean(0))) < 0.5


def test_a_pair_not_kept_shares_a_name_only_with_labels_of_its_own_image():
    from index.signals import name_among_labels

    names = pa.array(["Crane", "crane ", "heron", "egret"])
    rows, classes = np.array([0, 0, 1]), np.array([0, 2, 2])  # labels: image 0 crane + heron, image 1 heron
    probes = name_among_labels(rows, classes, names, np.array([0, 1, 0, 2]), np.array([1, 1, 3, 1]))
    assert probes.tolist() == [True, False, False, False]
    assert name_among_labels(rows[:0], classes[:0], names, np.array([0]), np.array([1])).tolist() == [False]
