"""Choosing the labels to verify next: allocation, exclusions, and that checking them narrows the estimates."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from index.audit import AUDIT, MIN_LABELS, allocate, audit_table, choose_audit
from index.noise import NoiseConfig, Verified, estimate_noise
from index.testdata import gaussian_classes, score_estimates

CPU = NoiseConfig(backend="faiss-cpu")


def test_allocate_is_proportional_capped_and_exact():
    assert allocate(np.array([1.0, 1.0, 2.0]), np.array([100, 100, 100]), 8).tolist() == [2, 2, 4]
    assert allocate(np.array([1.0, 0.0, 9.0]), np.array([100, 100, 3]), 10).tolist() == [7, 0, 3]  # capped
    assert allocate(np.array([1.0, 1.0]), np.array([2, 1]), 50).tolist() == [2, 1]  # budget above capacity
    assert allocate(np.array([0.0, 0.0]), np.array([5, 5]), 4).tolist() == [2, 2]  # no weights: even
    assert allocate(np.array([1.0, 1.0, 1.0]), np.array([9, 9, 9]), 2).sum() == 2


def test_audit_goes_where_intervals_are_wide_and_skips_verified_labels():
    noisy = gaussian_classes(seed=4, n_classes=12, n_images=3000, n_verified=150)
    result = estimate_noise(noisy.embeddings, noisy.labels, noisy.verified, CPU)
    rows = choose_audit(result, 300, seed=0)
    assert len(rows) == 300 and len(np.unique(rows)) == 300
    assert not np.isin(rows, result.verified_labels).any()
    assert np.array_equal(rows, choose_audit(result, 300, seed=0))  # deterministic
    classes = result.classes
    width = classes.column("noise_high").to_numpy() - classes.column("noise_low").to_numpy()
    n = classes.column("n_images").to_numpy()
    per_class = np.bincount(result.images.column("class_id").to_numpy()[rows], minlength=len(n))
    widest, narrowest = np.argmax(width * n), np.argmin(width * n)
    assert per_class[widest] > per_class[narrowest]

    keys = pa.array([f"k{c}" for c in range(12)])
    table = audit_table(result, rows, keys, None)
    assert table.schema == AUDIT and table.num_rows == 300 and table.column("correct").null_count == 300

    # Checking the chosen labels and calibrating on both samples narrows the class estimates.
    wrong = noisy.wrong
    checked = Verified(np.concatenate([noisy.verified.row, rows]),
                       np.concatenate([noisy.verified.class_id, noisy.labels.values[rows]]),
                       np.concatenate([noisy.verified.correct, ~wrong[rows]]))
    again = estimate_noise(noisy.embeddings, noisy.labels, checked, CPU)
    before = score_estimates(result.classes, noisy.labels.values, result.images.column("p_noisy").to_numpy(), wrong)
    after = score_estimates(again.classes, noisy.labels.values, again.images.column("p_noisy").to_numpy(), wrong)
    width_after = again.classes.column("noise_high").to_numpy() - again.classes.column("noise_low").to_numpy()
    assert width_after.mean() < width.mean() and after["mae"] <= before["mae"] + 0.002, (before, after)


def test_classes_below_the_minimum_get_no_audit_labels_and_the_budget_can_run_out():
    noisy = gaussian_classes(seed=5, n_classes=12, n_images=3000, n_verified=150)
    result = estimate_noise(noisy.embeddings, noisy.labels, noisy.verified, CPU)
    n = result.classes.column("n_images").to_numpy()
    label_class = result.images.column("class_id").to_numpy()
    floor = int(np.median(n))
    rows = choose_audit(result, 300, seed=0, min_labels=floor)
    assert len(rows) == 300
    assert (n[label_class[rows]] >= floor).all()
    # Asking for more than the large classes have left returns what there is, never a small class's label.
    open_labels = np.ones(len(label_class), dtype=bool)
    open_labels[result.verified_labels] = False
    left = int((open_labels & (n[label_class] >= floor)).sum())
    everything = choose_audit(result, len(label_class), seed=0, min_labels=floor)
    assert len(everything) == left and (n[label_class[everything]] >= floor).all()
    assert n.min() >= MIN_LABELS  # the default leaves every class of this set in
    assert len(choose_audit(result, 300, seed=0)) == 300
