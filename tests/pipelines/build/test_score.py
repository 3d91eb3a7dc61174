"""The scoring pass's treatment of verified pairs: out-of-fold scores, so the sample stays a fair audit."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipelines.build.score import with_out_of_fold


def test_verified_pairs_get_their_out_of_fold_scores_and_nothing_else_changes():
    features = pa.table({"image_id": ["a", "a", "b", "c"], "class_id": pa.array([1, 2, 1, 3], pa.int32())})
    in_sample = np.array([0.9, 0.8, 0.7, 0.6], dtype=np.float32)
    verified = pa.table({
        "image_id": ["b", "a", "z", "c", "c"],
        "class_id": pa.array([1, 2, 1, 3, 3], pa.int32()),
        "correct": [True, False, True, True, True],
        "score": pa.array([0.1, 0.2, 0.3, 0.4, 0.5], pa.float32()),
    })
    got = with_out_of_fold(features, in_sample, verified)
    # a repeated pair (c, 3) takes its larger score whatever order the join returns; (z, 1) is no candidate
    np.testing.assert_array_equal(got, np.array([0.9, 0.2, 0.1, 0.5], dtype=np.float32))
    np.testing.assert_array_equal(in_sample, np.array([0.9, 0.8, 0.7, 0.6], np.float32))  # input untouched
    assert with_out_of_fold(features, in_sample, None) is in_sample
    assert with_out_of_fold(features.slice(0, 0), in_sample[:0], verified).shape == (0,)
