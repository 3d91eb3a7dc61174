"""The whole build on a tiny synthetic crawl: runners agree byte for byte, output is valid and complete."""

from __future__ import annotations

import math
import shutil
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipelines.build import BuildError, build, reselect
from pipelines.formats import hash_ids, split_of, validate_dataset
from tests.pipelines.build.helpers import (
    IN_MEMORY,
    config,
    digests,
    good_rows,
    image_ids,
    manifest,
    signals,
    small_crawl,
)


def _table(path) -> pa.Table:
    return pq.read_table(path)


def _folder(dataset, name) -> pa.Table:
    return pa.concat_tables([_table(path) for path in sorted((dataset / name).glob("*.parquet"))])


def test_reference_build_is_a_valid_complete_dataset(reference, tiny_crawl):
    summary = validate_dataset(reference)
    assert summary.images > 0 and summary.labels > summary.images  # multi-label
    assert set(summary.splits) == {"train", "val", "eval"}
    names = sorted(path.relative_to(reference).as_posix() for path in reference.rglob("*") if path.is_file())
    assert [name for name in names if name.startswith("candidates/")] == [
        f"candidates/part-{i:05d}-of-00008.parquet" for i in range(8)
    ]
    assert [name for name in names if name.startswith("rejects/")] == [
        *(f"rejects/part-{i:05d}-of-00003.parquet" for i in range(3)), "rejects/verified.parquet"
    ]
    assert not any(name.startswith(".") or "/." in name for name in names)  # no scratch or temporary files left
    m = manifest(reference)
    crawl_files = sorted(p.relative_to(tiny_crawl).as_posix() for p in tiny_crawl.rglob("*.parquet"))
    assert sorted(m["inputs"]) == [name for name in crawl_files if name != "truth.parquet"]  # truth is never read
    assert all(value.startswith("sha256:") for value in m["inputs"].values())
    assert m["config"]["target_precision"] == 0.8 and m["config"]["crawl"] == str(tiny_crawl)
    assert "runner" not in m["config"] and "pipeline_args" not in m["config"]
    assert m["selection"]["scorer"]["method"] == "logistic_regression" and m["selection"]["label_model"] is False
    assert 0 <= m["selection"]["ece"] < 0.2
    assert m["code_version"].startswith("webjft ")


def test_verified_pairs_carry_their_out_of_fold_scores_in_candidates(reference):
    verified = _table(reference / "verified.parquet")
    candidates = _folder(reference, "candidates").select(["image_id", "class_id", "score"])
    joined = verified.join(candidates, ["image_id", "class_id"], join_type="inner", right_suffix="_candidate")
    assert joined.num_rows == verified.num_rows > 0
    np.testing.assert_array_equal(joined.column("score").to_numpy(), joined.column("score_candidate").to_numpy())


def test_runners_write_identical_bytes(reference, tiny_crawl, tmp_path):
    """FnApiRunner in_memory, multi_processing with 2 workers, PortableRunner embedded: same files."""
    expected = digests(reference)
    runs = {
        "multi": config(pipeline_args=("--direct_running_mode=multi_processing", "--direct_num_workers=2")),
        "portable": config(runner="PortableRunner",
                           pipeline_args=("--job_endpoint=embed", "--environment_type=LOOPBACK")),
    }
    for name, settings in runs.items():
        build(tiny_crawl, tmp_path / name, settings)
        assert digests(tmp_path / name) == expected, name


def test_shards_hold_exactly_the_selected_candidates(reference):
    candidates = _folder(reference, "candidates")
    kept = candidates.filter(candidates.column("selected"))
    shards = {path.name: _table(path) for path in sorted((reference / "shards").glob("*.parquet"))}
    rows = pa.concat_tables(shards.values())
    pairs = sorted(zip(pc.list_parent_indices(rows.column("labels")).to_pylist(),
                       pc.list_flatten(rows.column("labels")).to_pylist(), strict=True))
    got = sorted((rows.column("image_id")[i].as_py(), label) for i, label in pairs)
    assert got == sorted(zip(kept.column("image_id").to_pylist(), kept.column("class_id").to_pylist(), strict=True))
    for name, shard in shards.items():
        split, index, count = name.removesuffix(".parquet").replace("-of-", "-").split("-")
        ids = shard.column("image_id")
        assert ids.to_pylist() == sorted(ids.to_pylist())
        assert set(split_of(ids).to_pylist()) <= {split}
        assert set((hash_ids(ids) % np.uint64(int(count))).tolist()) <= {int(index)}
        assert shard.column("content").null_count == 0  # the tiny crawl has JPEGs; they are copied
    threshold = _table(reference / "classes.parquet").column("threshold").to_numpy()
    scores, classes = kept.column("score").to_numpy(), kept.column("class_id").to_numpy()
    assert (scores >= threshold[classes]).all()
    dropped = candidates.filter(pc.invert(candidates.column("selected")))
    assert (dropped.column("score").to_numpy() < threshold[dropped.column("class_id").to_numpy()]).all()


def test_classes_without_evidence_keep_nothing(reference):
    classes = _table(reference / "classes.parquet")
    empty = classes.filter(pc.equal(classes.column("candidates"), 0))
    assert empty.num_rows > 20_000  # the default taxonomy; the tiny crawl names a few dozen classes
    assert all(math.isinf(t) for t in empty.column("threshold").to_pylist())
    assert pc.sum(empty.column("selected")).as_py() == 0
    assert empty.column("precision").null_count == empty.num_rows


def test_interrupted_build_is_replaced_by_identical_output(reference, tiny_crawl, tmp_path):
    out = tmp_path / "ds"
    shutil.copytree(reference, out)
    (out / "manifest.json").unlink()  # as if the build died before its last step
    (out / "shards" / ".train-00000-of-00006.parquet.tmp-0123").write_bytes(b"half a shard")
    (out / ".work" / "features").mkdir(parents=True)
    (out / ".work" / "features" / "part-00000-of-00008.parquet").write_bytes(b"stale")
    (out / "candidates" / "part-00000-of-00002.parquet").write_bytes(b"another run's")
    build(tiny_crawl, out, config())
    assert digests(out) == digests(reference)


def test_complete_dataset_needs_overwrite_and_foreign_folders_are_left_alone(reference, tiny_crawl, tmp_path):
    with pytest.raises(BuildError, match="already there.*--overwrite"):
        build(tiny_crawl, reference, config())
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("precious")
    with pytest.raises(BuildError, match="notes.txt"):
        build(tiny_crawl, foreign, config())
    assert (foreign / "notes.txt").read_text() == "precious"


def test_crawl_without_verified_sample_uses_the_label_model(tiny_crawl, tmp_path):
    crawl = tmp_path / "crawl"
    shutil.copytree(tiny_crawl, crawl)
    (crawl / "verified.parquet").unlink()
    build(crawl, tmp_path / "ds", config())
    validate_dataset(tmp_path / "ds")
    m = manifest(tmp_path / "ds")
    assert m["selection"]["scorer"]["method"] == "label_model" and m["selection"]["label_model"] is True
    assert m["selection"]["ece"] is None and m["counts"]["labels"] > 0
    assert "verified.parquet" not in m["inputs"] and not (tmp_path / "ds" / "verified.parquet").exists()


def test_empty_crawl_builds_an_empty_valid_dataset(tmp_path):
    crawl = small_crawl(tmp_path / "crawl", 0, [signals([])])
    build(crawl, tmp_path / "ds", config())
    summary = validate_dataset(tmp_path / "ds")
    assert (summary.images, summary.labels, summary.shards) == (0, 0, 3)  # one empty shard per split
    m = manifest(tmp_path / "ds")
    assert m["selection"]["scorer"]["method"] == "none" and m["selection"]["candidates"] == 0


def test_a_page_of_ten_thousand_images(tmp_path):
    ids = image_ids(10_000)
    rows = [(image, "page_title", "dog and cat pictures", None, 1.0, "page-huge") for image in ids]
    rows += good_rows(ids[:300])
    crawl = small_crawl(tmp_path / "crawl", len(ids), [signals(rows)])
    start = time.perf_counter()
    build(crawl, tmp_path / "ds", config(rows_per_shard=5_000, include_content=False))
    assert time.perf_counter() - start < 60
    validate_dataset(tmp_path / "ds")
    shards = _folder(tmp_path / "ds", "shards")
    assert shards.num_rows > 0 and shards.column("content").null_count == shards.num_rows  # --no-content
    candidates = _folder(tmp_path / "ds", "candidates")
    page_only = candidates.filter(pc.greater_equal(pc.cast(candidates.column("image_id"), pa.string()), "img-00300"))
    assert page_only.num_rows == 2 * (len(ids) - 300)  # dog and cat for every image on the page only
    assert set(page_only.column("min_page_images").to_pylist()) == {10_000}


def test_reselect_trades_labels_for_precision_quickly(reference, tmp_path):
    before = digests(reference)
    runs = {}
    for target in (0.7, 0.9):
        start = time.perf_counter()
        result = reselect(reference, target, tmp_path / f"p{target}", pipeline_args=IN_MEMORY)
        runs[target] = (time.perf_counter() - start, result.manifest)
        validate_dataset(tmp_path / f"p{target}")
    assert runs[0.9][1].counts.labels < manifest(reference)["counts"]["labels"] < runs[0.7][1].counts.labels
    assert all(seconds < 20 for seconds, _ in runs.values())
    assert runs[0.9][1].selection["reselected_from"] == manifest(reference)["dataset_id"]
    assert digests(reference) == before  # the old dataset is only read


def test_reselect_at_the_same_target_reproduces_the_build(reference, tmp_path):
    reselect(reference, 0.8, tmp_path / "same", pipeline_args=IN_MEMORY)
    again, expected = digests(tmp_path / "same"), digests(reference)
    for name, digest in expected.items():
        if name != "manifest.json":
            assert again[name] == digest, name
    assert manifest(tmp_path / "same")["dataset_id"] == manifest(reference)["dataset_id"]


def test_reselect_refuses_to_write_over_its_source(reference):
    with pytest.raises(BuildError, match="new folder"):
        reselect(reference, 0.9, reference, overwrite=True)


def test_budget_caps_the_number_of_labels(tmp_path):
    ids = image_ids(200)
    crawl = small_crawl(tmp_path / "crawl", len(ids), [signals(good_rows(ids))])
    build(crawl, tmp_path / "free", config())
    build(crawl, tmp_path / "capped", config(budget=50))
    free, capped = manifest(tmp_path / "free")["counts"]["labels"], manifest(tmp_path / "capped")["counts"]["labels"]
    assert capped <= 50 < free
    validate_dataset(tmp_path / "capped")
