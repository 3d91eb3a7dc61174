"""The build's pieces on small inputs: options, bucketing, packing, exact histograms, labels by image."""

from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from labeling.matching import EVIDENCE
from labeling.selection import ScoreHistogram
from pipelines.build import BuildConfig, BuildError, pipeline_options
from pipelines.build.config import unknown_pipeline_args
from pipelines.build.counters import check
from pipelines.build.histograms import (
    FIXED_POINT,
    MergeHistograms,
    merge_sparse,
    sparse_histograms,
    to_score_histograms,
)
from pipelines.build.tables import by_bucket, pack, unpack
from pipelines.build.write import labels_by_image, shard_keys


def test_local_runner_defaults_to_every_core_and_user_arguments_win():
    options = pipeline_options(BuildConfig()).get_all_options()
    assert options["runner"] == "FnApiRunner" and options["direct_running_mode"] == "multi_processing"
    assert options["direct_num_workers"] >= 1
    mine = pipeline_options(BuildConfig(pipeline_args=("--direct_running_mode=in_memory",))).get_all_options()
    assert mine["direct_running_mode"] == "in_memory"


def test_config_refuses_dask_and_keeps_split_order_through_the_manifest():
    with pytest.raises(ValidationError, match="silently writes empty files"):
        BuildConfig(runner="DaskRunner")
    config = BuildConfig(splits={"train": 0.8, "eval": 0.2})
    recorded = config.recorded()
    assert recorded["splits"] == [["train", 0.8], ["eval", 0.2]] and "runner" not in recorded
    assert list(BuildConfig(**recorded).splits) == ["train", "eval"]
    assert unknown_pipeline_args(["--direct_num_workers=2", "--project=p", "--nope=1"]) == ["--nope"]


def test_buckets_partition_rows_the_same_way_every_time():
    table = pa.table({"image_id": [f"im{i}" for i in range(1000)], "x": np.arange(1000)})
    first = {bucket: part for bucket, part in by_bucket(table, "image_id", 7)}
    shuffled = table.take(pa.array(np.random.default_rng(0).permutation(1000)))
    second = {bucket: part for bucket, part in by_bucket(shuffled, "image_id", 7)}
    assert sorted(first) == sorted(second) == list(range(7))
    for bucket, part in first.items():
        assert sorted(part.column("x").to_pylist()) == sorted(second[bucket].column("x").to_pylist())


def test_packed_evidence_comes_back_identical_and_much_smaller_than_pickled():
    n = 20_000
    rng = np.random.default_rng(2)
    evidence = pa.table(
        {
            "image_id": [f"im{i:08d}" for i in rng.integers(0, 5_000, n)],
            "class_id": pa.array(rng.integers(0, 21_843, n), pa.int32()),
            "source": pa.array(["alt_text", "page_title", "query_click"] * (n // 3) + ["alt_text"] * (n % 3)),
            "weight": pa.array(rng.integers(-1, 9, n), pa.float32()),
            "page_id": [None if i % 4 == 0 else f"pg{i % 3_000:07d}" for i in range(n)],
            "ambiguity": pa.array(rng.integers(1, 4, n), pa.int32()),
            "n_named": pa.array(rng.integers(1, 6, n), pa.int32()),
            "direct": pa.array(rng.random(n) < 0.1),
        },
        schema=EVIDENCE,
    )
    packed = pack(evidence)
    assert isinstance(packed, bytes)
    back = unpack(packed)
    assert back.schema == EVIDENCE and back.equals(evidence)
    assert len(packed) * 3 < len(pickle.dumps(evidence))  # why it is packed: local runners hold shuffles in memory
    assert unpack(pack(EVIDENCE.empty_table())).equals(EVIDENCE.empty_table())


def test_histogram_merges_are_exact_in_any_order():
    rng = np.random.default_rng(1)
    classes, scores = rng.integers(0, 5, 20_000), rng.random(20_000).astype(np.float32)
    pieces = [sparse_histograms(classes[i::4], scores[i::4]) for i in range(4)]
    combine = MergeHistograms()
    forward = combine.merge_accumulators([combine.add_input(combine.create_accumulator(), p) for p in pieces])
    backward = merge_sparse(pieces[::-1])
    assert forward.equals(backward) and forward.equals(sparse_histograms(classes, scores))
    dense = to_score_histograms(forward)
    direct = ScoreHistogram.of(scores[classes == 3])
    assert (dense[3].counts == direct.counts).all()
    assert np.allclose(dense[3].sums, direct.sums, atol=1000 / FIXED_POINT)


def test_labels_are_grouped_per_image_in_candidate_order():
    kept = pa.table({"image_id": ["a", "a", "b", "c", "c", "c"], "class_id": pa.array([1, 4, 2, 0, 3, 9], pa.int32()),
                     "score": pa.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.95], pa.float32())})
    labels = labels_by_image(kept)
    assert labels.column("image_id").to_pylist() == ["a", "b", "c"]
    assert labels.column("labels").to_pylist() == [[1, 4], [2], [0, 3, 9]]
    assert labels.column("scores").to_pylist()[0] == pytest.approx([0.9, 0.8])


def test_shard_of_an_image_depends_only_on_its_id():
    ids = pa.array([f"im{i:05d}" for i in range(2000)])
    splits, n_shards = {"train": 0.9, "eval": 0.1}, {"train": 5, "eval": 2}
    split, index = shard_keys(ids, splits, n_shards)
    again_split, again_index = shard_keys(ids.take(pa.array(np.arange(1999, -1, -1))), splits, n_shards)
    assert (split[::-1] == again_split).all() and (index[::-1] == again_index).all()
    assert set(index[split == 0]) == set(range(5)) and set(index[split == 1]) == {0, 1}


def test_row_counters_must_balance():
    check({"sent": 5, "got": 5}, "rows", "sent", "got")
    check({}, "rows", "sent", "got")  # a runner without metrics: nothing to compare
    with pytest.raises(BuildError, match="lost or duplicated data: evidence: 5 rows sent, 4 received"):
        check({"sent": 5, "got": 4}, "evidence", "sent", "got")
