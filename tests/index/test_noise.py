"""Noise estimation: signals, calibration, tables and quality against truth the estimator never reads."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pytest
import torch

from index.calibrate import sigmoid
from index.figure import curve_lines, curve_png
from index.knn import label_agreement, neighbours
from index.noise import (
    SUPERVISED,
    UNSUPERVISED,
    ClassSpace,
    Labels,
    NoiseConfig,
    Verified,
    estimate_noise,
)
from index.signals import normalize_rows
from index.testdata import digits, evaluate, gaussian_classes, score_estimates
from pipelines.formats import NOISE_CLASSES, NOISE_IMAGES

CPU = NoiseConfig(backend="faiss-cpu")


@pytest.fixture(scope="module")
def small_set():
    return gaussian_classes(seed=0, n_classes=16, n_images=3000, n_verified=300)


def test_calibrated_estimates_track_the_truth(small_set):
    result = estimate_noise(small_set.embeddings, small_set.labels, small_set.verified, CPU)
    assert result.classes.schema == NOISE_CLASSES and result.images.schema == NOISE_IMAGES
    assert result.method == SUPERVISED
    quality = evaluate(small_set, result.classes, result.images)
    assert quality["mae"] < 0.04 and quality["auroc"] > 0.97, quality
    assert result.images.num_rows == len(small_set.labels.values)
    assert set(result.classes.column("method").to_pylist()) <= {"calibrated", "calibrated-global"}
    low, rate, high = (result.classes.column(c).to_numpy() for c in ("noise_low", "noise_rate", "noise_high"))
    assert np.all((low <= rate) & (rate <= high))
    assert result.stats["verified_used"] == 300


def test_unsupervised_estimate_says_so(small_set):
    result = estimate_noise(small_set.embeddings, small_set.labels, None, CPU)
    assert result.method == UNSUPERVISED
    assert any("unsupervised" in note for note in result.notes)
    assert set(result.classes.column("method").to_pylist()) == {UNSUPERVISED}
    quality = evaluate(small_set, result.classes, result.images)
    assert quality["auroc"] > 0.95 and quality["mae"] < 0.08, quality


def test_too_few_verified_labels_fall_back(small_set):
    v = small_set.verified
    few = Verified(v.row[:5], v.class_id[:5], v.correct[:5])
    result = estimate_noise(small_set.embeddings, small_set.labels, few, CPU)
    assert result.method == UNSUPERVISED and any("falling back" in note for note in result.notes)


def test_digits_quality_bar():
    """The issue's bar on the real-image case: MAE <= 0.03 over classes with >= 50 images, AUROC >= 0.90."""
    pytest.importorskip("sklearn")
    noisy = digits(seed=0)
    result = estimate_noise(noisy.embeddings, noisy.labels, noisy.verified, CPU)
    quality = evaluate(noisy, result.classes, result.images)
    assert quality["classes"] == 10
    assert quality["mae"] <= 0.03 and quality["auroc"] >= 0.90, quality


def test_multi_label_sets_and_unmatched_verified_rows():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 0.3, (60, 8)) + 3, rng.normal(0, 0.3, (60, 8)) - 3]).astype(np.float32)
    lists = [[0, 2] if i < 60 else [1, 2] for i in range(120)]
    lists[5] = [1]  # one wrong label inside class 0's cluster
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in lists])]).astype(np.int64)
    values = np.concatenate([np.asarray(r) for r in lists]).astype(np.int32)
    labels = Labels(pa.array([f"i{i}" for i in range(120)]), offsets, values, 4)
    verified = Verified(np.array([0, 1, 2, 3, 5, 70, 71, 72, 73, 9]), np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 3]),
                        np.array([True] * 4 + [False] + [True] * 4 + [True]))
    result = estimate_noise(x, labels, verified, NoiseConfig(backend="faiss-cpu", neighbours=5, min_verified=5))
    assert result.images.num_rows == len(values)
    assert any("neither labels of this set" in note for note in result.notes)
    images = result.images.to_pydict()
    wrong_p = [p for i, c, p in zip(images["image_id"], images["class_id"], images["p_noisy"], strict=True)
               if i == "i5" and c == 1][0]
    assert wrong_p > np.median(images["p_noisy"])
    assert result.classes.column("class_id").to_pylist() == [0, 1, 2]


def test_single_image_class_gets_a_neutral_distance():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 4)).astype(np.float32)
    values = np.array([0] * 29 + [1], dtype=np.int32)
    labels = Labels(pa.array([str(i) for i in range(30)]), np.arange(31, dtype=np.int64), values, 2)
    result = estimate_noise(x, labels, None, NoiseConfig(backend="faiss-cpu", neighbours=3))
    assert result.images.column("distance").to_pylist()[-1] == pytest.approx(1.0)


def test_mismatched_sizes_are_refused(small_set):
    with pytest.raises(ValueError, match="embeddings for"):
        estimate_noise(small_set.embeddings[:10], small_set.labels, None, CPU)


def test_neighbours_exclude_self_and_inverted_file_finds_close_points():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 16))
    x = normalize_rows((centres[rng.integers(0, 20, 2000)] + 0.05 * rng.normal(size=(2000, 16))).astype(np.float32))
    exact = neighbours(x, 5, backend="faiss-cpu")
    assert not (exact == np.arange(2000)[:, None]).any()
    approx = neighbours(x, 5, backend="faiss-cpu", exact_max=100, nprobe=4)
    same_centre = (x[approx] * x[:, None, :]).sum(-1) > 0.9
    assert same_centre.mean() > 0.95
    assert neighbours(x[:1], 3).tolist() == [[-1, -1, -1]]
    wide = normalize_rows(np.repeat(x, 8, axis=1) + 0.01 * rng.normal(size=(2000, 128)).astype(np.float32))
    projected = neighbours(wide, 5, backend="faiss-cpu", exact_max=100, nprobe=4, search_dim=16)
    assert ((wide[projected] * wide[:, None, :]).sum(-1) > 0.9).mean() > 0.95


def test_label_agreement_counts_neighbours_with_the_label():
    nbrs = np.array([[1, 2], [0, -1], [0, 1]])
    offsets = np.array([0, 2, 3, 4])
    values = np.array([0, 1, 0, 1])
    rows = np.array([0, 0, 1, 2])
    agree, valid = label_agreement(nbrs, offsets, values, rows, values)
    # row 0 {0, 1}: neighbours 1 {0} and 2 {1}; row 1 {0}: neighbour 0; row 2 {1}: neighbours 0 and 1 {0}.
    assert agree.tolist() == [1, 1, 1, 1] and valid.tolist() == [2, 2, 1, 2]
    agree, _ = label_agreement(nbrs, offsets, values, np.array([1, 2]), np.array([1, 0]))
    assert agree.tolist() == [1, 2]


def test_curve_figure_and_text(small_set):
    result = estimate_noise(small_set.embeddings, small_set.labels, small_set.verified, CPU)
    curve = result.curve
    assert curve.labels.sum() == len(small_set.labels.values) and len(curve.labels) == 10
    assert curve.verified.sum() == 300
    # Fig. 2: noise rises with distance to the class centroids.
    assert curve.estimated[-1] > 3 * curve.estimated[0]
    assert curve_png(curve, "test").startswith(b"\x89PNG")
    assert len(curve_lines(curve)) == 10


def _with_scores(noisy, seed: int = 0, strength: float = 1.5) -> Labels:
    """The set's labels with scores from a labeller that saw other evidence: informative, independently noisy."""
    rng = np.random.default_rng(seed)
    log_odds = np.where(noisy.wrong, -strength, strength) + rng.normal(0, 1.5, len(noisy.wrong))
    return dataclasses.replace(noisy.labels, scores=sigmoid(log_odds).astype(np.float32))


def test_label_scores_are_a_third_signal():
    hard = gaussian_classes(seed=3, n_classes=16, n_images=3000, n_verified=300, spread=2.5)  # weak visual signal
    scored = _with_scores(hard)
    plain = estimate_noise(hard.embeddings, hard.labels, hard.verified, CPU)
    both = estimate_noise(hard.embeddings, scored, hard.verified, CPU)
    assert both.stats["label_scores_used"] and not plain.stats["label_scores_used"]
    assert any("third signal" in note for note in both.notes)
    with_scores, without = evaluate(hard, both.classes, both.images), evaluate(hard, plain.classes, plain.images)
    assert with_scores["auroc"] > without["auroc"] + 0.05 and with_scores["mae"] < without["mae"], (with_scores,
                                                                                                   without)
    # Turned off, or without a verified sample to weigh them, the scores change nothing.
    off = estimate_noise(hard.embeddings, scored, hard.verified, NoiseConfig(backend="faiss-cpu", label_scores=False))
    assert off.images.equals(plain.images) and not off.stats["label_scores_used"]
    unsupervised = estimate_noise(hard.embeddings, scored, None, CPU)
    assert not unsupervised.stats["label_scores_used"]
    assert any("not used without a verified sample" in note for note in unsupervised.notes)
    assert unsupervised.images.equals(estimate_noise(hard.embeddings, hard.labels, None, CPU).images)


def test_constant_label_scores_are_not_used(small_set):
    constant = dataclasses.replace(small_set.labels, scores=np.full(len(small_set.labels.values), 0.9, np.float32))
    result = estimate_noise(small_set.embeddings, constant, small_set.verified, CPU)
    assert not result.stats["label_scores_used"]
    assert any("same score" in note for note in result.notes)


def _twin_readings(seed: int, n_classes: int = 64, share: float = 0.2, n_verified: int = 400):
    """Random vectors (no visual signal) with one label each, and on `share` of the images a second reading
    of the same word: class n_classes + c, named like class c, always wrong. Each twin class has a handful of
    labels and about one verified label, so only a signal shared by all twins can tell them apart."""
    rng = np.random.default_rng(seed)
    n = 4000
    values = rng.integers(0, n_classes, n)
    twins = rng.random(n) < share
    counts = 1 + twins
    offsets = np.concatenate([[0], np.cumsum(counts)])
    labelled = np.empty(offsets[-1], np.int32)
    labelled[offsets[:-1]] = values
    labelled[offsets[:-1][twins] + 1] = values[twins] + n_classes
    rows = np.repeat(np.arange(n), counts)
    wrong = (labelled >= n_classes) | (rng.random(len(labelled)) < 0.1)
    pick = np.sort(rng.choice(len(labelled), n_verified, replace=False))
    names = pa.array([f"class {c}" for c in range(n_classes)] + [f" Class {c}" for c in range(n_classes)])
    ids = pa.array([f"t{i:05d}" for i in range(n)])
    labels = Labels(ids, offsets, labelled, 2 * n_classes)
    x = rng.normal(size=(n, 16)).astype(np.float32)
    return x, labels, Verified(rows[pick], labelled[pick], ~wrong[pick]), wrong, names


def test_shared_names_help_where_two_readings_of_a_word_label_one_image():
    x, labels, verified, wrong, names = _twin_readings(seed=1)
    plain = estimate_noise(x, labels, verified, CPU)
    named = estimate_noise(x, labels, verified, CPU, class_space=ClassSpace(names=names))
    assert plain.stats["shared_name_labels_used"] == 0
    assert named.stats["shared_name_labels_used"] == 2 * int((labels.values >= 64).sum())
    # The class-level share of such labels is an input of its own (a class that lives on one ambiguous word).
    assert {"same_name", "class_same_name"} <= named.stats["model_weights"].keys()
    assert "class_same_name" not in plain.stats["model_weights"] and "agreement" in plain.stats["model_weights"]
    assert any("share their name" in note for note in named.notes)
    p_named, p_plain = (r.images.column("p_noisy").to_numpy() for r in (named, plain))
    with_names = score_estimates(named.classes, labels.values, p_named, wrong, min_images=5)
    without = score_estimates(plain.classes, labels.values, p_plain, wrong, min_images=5)
    assert with_names["mae"] < without["mae"] - 0.01, (with_names, without)
    twins = labels.values >= 64
    assert p_named[twins].mean() > p_plain[twins].mean() + 0.05


def test_neighbour_rivals_count_the_strongest_unrelated_class():
    from index.knn import neighbour_rivals

    # Classes: 0 tool, 1 shears, 2 clipper (both tools). One label per image.
    values = np.array([1, 2, 2, 0, 0], dtype=np.int32)
    offsets = np.arange(6)
    nbrs = np.array([[1, 2, 3], [3, 4, 0], [1, 3, -1], [0, 1, 2], [3, 0, 1]])
    rows = np.arange(5)
    parents = pa.array([[], [0], [0]], pa.list_(pa.int32()))
    # Shears among two clippers: rival 2 either way. A clipper among two "tool"s: the ancestor is no rival.
    assert neighbour_rivals(nbrs, offsets, values, rows, values, parents).tolist() == [2, 1, 0, 0, 0]
    assert neighbour_rivals(nbrs, offsets, values, rows, values).tolist() == [2, 2, 1, 2, 1]


def _with_candidates(noisy, n_candidates: int, seed: int = 0) -> Verified:
    """The set's verified labels plus checked pairs that are not labels, as a build's sample has them: the
    true class of a mislabelled image (right) and a random other class of any image (wrong)."""
    rng = np.random.default_rng(seed)
    n_classes = noisy.labels.n_classes
    mislabelled = np.flatnonzero(noisy.wrong)
    right_rows = rng.choice(mislabelled, n_candidates // 2, replace=False)
    wrong_rows = rng.choice(len(noisy.true_class), n_candidates - len(right_rows), replace=False)
    other = (noisy.labels.values[wrong_rows] + rng.integers(1, n_classes, len(wrong_rows))) % n_classes
    other = np.where(other == noisy.true_class[wrong_rows], (other + 1) % n_classes, other)
    other = np.where(other == noisy.labels.values[wrong_rows], (other + 1) % n_classes, other)
    v = noisy.verified
    return Verified(np.concatenate([v.row, right_rows, wrong_rows]),
                    np.concatenate([v.class_id, noisy.true_class[right_rows], other]).astype(np.int32),
                    np.concatenate([v.correct, np.ones(len(right_rows), bool), np.zeros(len(wrong_rows), bool)]))


def test_verified_pairs_that_are_not_labels_calibrate_too():
    noisy = gaussian_classes(seed=5, n_classes=16, n_images=3000, n_verified=40)
    checked = _with_candidates(noisy, 600)
    alone = estimate_noise(noisy.embeddings, noisy.labels, noisy.verified, CPU)
    more = estimate_noise(noisy.embeddings, noisy.labels, checked, CPU)
    assert alone.stats["verified_candidates_used"] == 0 and more.stats["verified_candidates_used"] == 600
    assert more.stats["verified_used"] == alone.stats["verified_used"] == 40
    assert any("not labels" in note for note in more.notes)
    better, worse = evaluate(noisy, more.classes, more.images), evaluate(noisy, alone.classes, alone.images)
    assert better["mae"] < worse["mae"], (better, worse)
    # Only labels are estimated and plotted; turned off, the extra pairs change nothing.
    assert more.images.num_rows == alone.images.num_rows and more.curve.verified.sum() == 40
    off = estimate_noise(noisy.embeddings, noisy.labels, checked, dataclasses.replace(CPU, verified_candidates=False))
    assert off.images.equals(alone.images)


def test_candidates_need_scores_when_labels_have_them_and_a_class_with_labels():
    noisy = gaussian_classes(seed=5, n_classes=16, n_images=3000, n_verified=40)
    checked = _with_candidates(noisy, 200)
    scored = _with_scores(noisy)
    unscored = estimate_noise(noisy.embeddings, scored, checked, CPU)
    assert unscored.stats["verified_candidates_used"] == 0
    assert any("have no scores" in note for note in unscored.notes)
    half = np.where(np.arange(len(checked.row)) % 2 == 0, 0.3, np.nan).astype(np.float32)
    with_scores = estimate_noise(noisy.embeddings, scored, dataclasses.replace(checked, score=half), CPU)
    outside = len(checked.row) - 40
    assert with_scores.stats["verified_candidates_used"] == int(np.isfinite(half[40:]).sum()) < outside
    # A pair of a class that has no labels has no centroids or neighbours to be measured against.
    beyond = Labels(noisy.labels.image_ids, noisy.labels.offsets, noisy.labels.values, 17)
    stray = Verified(np.concatenate([checked.row, [0]]), np.concatenate([checked.class_id, [16]]).astype(np.int32),
                     np.concatenate([checked.correct, [False]]))
    result = estimate_noise(noisy.embeddings, beyond, stray, CPU)
    assert result.stats["verified_candidates_used"] == outside
    assert any("neither labels of this set nor usable" in note for note in result.notes)


def test_embeddings_are_whitened_first_unless_turned_off(small_set):
    whitened = estimate_noise(small_set.embeddings, small_set.labels, small_set.verified, CPU)
    raw = estimate_noise(small_set.embeddings, small_set.labels, small_set.verified,
                         dataclasses.replace(CPU, whiten_dims=0))
    assert any(note.startswith("embeddings whitened: 64 principal axes of 64") for note in whitened.notes)
    assert not any("whitened" in note for note in raw.notes)
    assert whitened.stats["embedding_dims"] == 64 and raw.stats["embedding_dims"] == 64
    narrow = estimate_noise(small_set.embeddings, small_set.labels, small_set.verified,
                            dataclasses.replace(CPU, whiten_dims=16))
    assert narrow.stats["embedding_dims"] == 16
    for result in (whitened, raw, narrow):
        quality = evaluate(small_set, result.classes, result.images)
        assert quality["mae"] < 0.04 and quality["auroc"] > 0.97, quality
    assert not np.array_equal(whitened.images.column("p_noisy").to_numpy(), raw.images.column("p_noisy").to_numpy())


@pytest.mark.parametrize("backend", ["torch-cpu", pytest.param("torch-cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device (run on a lent GPU machine)"))])
def test_whitened_in_place_embeddings_run_on_the_torch_backends(small_set, backend):
    """Whitening in place leaves a strided view of the caller's matrix; every backend must take it."""
    config = dataclasses.replace(CPU, whiten_dims=16)
    reference = estimate_noise(small_set.embeddings, small_set.labels, small_set.verified, config)
    x = small_set.embeddings.copy()
    result = estimate_noise(x, small_set.labels, small_set.verified, dataclasses.replace(config, backend=backend),
                            inplace=True)
    assert result.stats["backend"] == backend and result.stats["embedding_dims"] == 16
    p, q = (r.images.column("p_noisy").to_numpy() for r in (result, reference))
    assert np.corrcoef(p, q)[0, 1] > 0.99 and np.abs(p - q).mean() < 0.01
