"""bench/noise_quality_dataset.py on the tiny preset: synth -> build -> noise -> scored against truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.bench.scripts import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("noise_quality_dataset")


@pytest.fixture(scope="module")
def case(bench, tmp_path_factory):
    return bench.make_case(str(tmp_path_factory.mktemp("noise-quality")), seed=3, preset_name="tiny", workers=1)


def test_label_truth_marks_exactly_the_labels_missing_from_truth(bench, case):
    bench.run_webjft(case, "pixels", "crawl")
    images = pq.read_table(Path(case.dataset) / "noise" / "images.parquet")
    truth = pq.read_table(Path(case.crawl) / "truth.parquet")
    true_sets = dict(zip(truth.column("image_id").to_pylist(), map(set, truth.column("labels").to_pylist()),
                         strict=True))
    expected = [c not in true_sets[i] for i, c in zip(images.column("image_id").to_pylist(),
                                                      images.column("class_id").to_pylist(), strict=True)]
    wrong = bench.label_truth(images, case.crawl)
    assert wrong.tolist() == expected
    assert 0 < wrong.sum() < len(wrong)


def test_tiny_case_scores_webjft_and_cleanlab(bench, case):
    calibrated = bench.run_webjft(case, "pixels", "crawl")
    assert calibrated["method"] == "calibrated" and calibrated["verified_used"] > 0
    assert calibrated["classes"] >= 1
    # Pixels of the synthetic JPEGs carry the class looks: wrong labels must rank well above chance.
    assert calibrated["auroc"] > 0.75
    assert 0 <= calibrated["mae"] < 0.2

    audit = bench.audit_sample(case, 60, seed=0)
    sample = pq.read_table(audit)
    assert sample.num_rows == 60
    smaller = pq.read_table(bench.audit_sample(case, 30, seed=0))
    pairs = set(zip(sample.column("image_id").to_pylist(), sample.column("class_key").to_pylist(), strict=True))
    assert smaller.num_rows == 30 and set(zip(smaller.column("image_id").to_pylist(),
                                              smaller.column("class_key").to_pylist(), strict=True)) <= pairs
    images = pq.read_table(Path(case.dataset) / "noise" / "images.parquet")
    keys = pq.read_table(Path(case.dataset) / "classes.parquet").column("key").to_pylist()
    pairs = zip(images.column("image_id").to_pylist(), [keys[c] for c in images.column("class_id").to_pylist()],
                strict=True)
    wrong = dict(zip(pairs, bench.label_truth(images, case.crawl).tolist(), strict=True))
    rows = zip(*(sample.column(name).to_pylist() for name in ("image_id", "class_key", "correct")), strict=True)
    assert all(wrong[(image_id, key)] != correct for image_id, key, correct in rows)
    audited = bench.run_webjft(case, "pixels", audit)
    assert audited["verified_used"] == 60

    cleanlab = bench.run_cleanlab(case, "pixels")
    assert cleanlab["classes"] == calibrated["classes"]
    assert np.isfinite(cleanlab["mae"]) and cleanlab["auroc_big"] > 0.5


def test_build_estimate_and_visual_only_rows(bench, case):
    own = bench.run_build_scores(case)
    assert own["classes"] >= 1 and 0 <= own["mae"] < 0.5 and own["auroc"] > 0.5
    visual = bench.run_webjft(case, "pixels", "crawl", label_scores=False)
    both = bench.run_webjft(case, "pixels", "crawl")
    assert visual["labels"] == both["labels"] == own["labels"]
    assert visual["auroc"] != both["auroc"]  # the scores changed the estimate


def test_targeted_audit_is_checked_by_truth_and_calibrates_beside_the_crawl_sample(bench, case):
    path = bench.targeted_audit(case, "pixels", 20)
    sample = pq.read_table(path)
    assert sample.num_rows == 20 and sample.column("correct").null_count == 0
    both = bench.run_webjft(case, "pixels", [bench.default_verified(case.dataset), path])
    alone = bench.run_webjft(case, "pixels", "crawl")
    assert both["verified_used"] == alone["verified_used"] + 20  # none of the 20 was verified before
    assert 0 <= both["mae_small"] < 0.5
