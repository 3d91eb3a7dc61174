"""Stage 4: fit the scorer in the driver, score every candidate in Beam, histogram scores per class.

The scorer learns from the verified pairs that are candidates (their features read back from the
features files, only the buckets and rows that hold them); without a verified sample the unsupervised
label model is fitted on a deterministic sample of candidates instead, and `describe()` says so.

Scoring also yields each candidate file's score histograms, merged exactly (`histograms`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from labeling.calibration import expected_calibration_error
from labeling.evidence import FEATURES, FEATURES_SCHEMA
from labeling.label_model import fit_label_model
from labeling.scoring import Scorer, fit_scorer
from labeling.taxonomy import Taxonomy
from pipelines.build import layout
from pipelines.build.counters import count_rows
from pipelines.build.histograms import CLASS_BLOCK, MergeHistograms, WriteHistograms, sparse_histograms
from pipelines.build.tables import bucket_of, concat, read_table
from pipelines.formats import (
    CANDIDATES,
    DATASET_VERIFIED,
    REJECTS,
    IdSet,
    atomic_write_table,
    conform,
    open_parquet,
    read_verified,
)

# --- fitting ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fit:
    """What stage 4's driver step produced: the scorer and what the manifest says about it."""

    scorer: Scorer | None  # None: no candidates at all, nothing to score
    verified: pa.Table | None  # DATASET_VERIFIED of the verified pairs that are candidates
    rejects: pa.Table | None  # REJECTS rows of verified.parquet
    verified_rows: int
    ece: float | None

    def describe(self) -> dict:
        if self.scorer is None:
            return {"method": "none", "reason": "no candidates"}
        return self.scorer.describe()


def verified_pairs(crawl: str, taxonomy: Taxonomy, images: IdSet) -> tuple[pa.Table, pa.Table] | None:
    """(image_id, class_id, correct) of usable verified rows, and REJECTS rows for the others; None if absent."""
    verified = read_verified(crawl)
    if verified is None:
        return None
    class_ids = taxonomy.ids_of(verified.column("class_key"))
    unknown_image = ~images.contains(verified.column("image_id"))
    unknown_class = (class_ids < 0) & ~unknown_image
    bad = np.flatnonzero(unknown_image | unknown_class)
    image_ids = verified.column("image_id").to_pylist()
    class_keys = verified.column("class_key").to_pylist()
    rejects = pa.table(
        {
            "file": ["verified.parquet"] * len(bad),
            "row": pa.array(bad, pa.int64()),
            "field": ["image_id" if unknown_image[i] else "class_key" for i in bad],
            "reason": ["unknown_image" if unknown_image[i] else "unknown_class_key" for i in bad],
            "value": [image_ids[i] if unknown_image[i] else class_keys[i] for i in bad],
        },
        schema=REJECTS,
    )
    good = pa.array(~(unknown_image | unknown_class))
    pairs = pa.table(
        {
            "image_id": verified.column("image_id").filter(good),
            "class_id": pa.array(class_ids, pa.int32()).filter(good),
            "correct": verified.column("correct").filter(good),
        }
    )
    return pairs, rejects


def features_of_pairs(feature_files: list[str], pairs: pa.Table, n_buckets: int) -> pa.Table:
    """Candidate features of the verified pairs that are candidates, plus `correct`, sorted by pair.

    Reads only the buckets holding verified images, and only their rows (a Parquet filter on image_id).
    """
    buckets = bucket_of(pairs.column("image_id"), n_buckets) if pairs.num_rows else np.zeros(0, np.int64)
    found = []
    for bucket in np.unique(buckets).tolist():
        wanted = pairs.filter(pa.array(buckets == bucket))
        ids = pc.unique(wanted.column("image_id"))
        table = read_table(feature_files[bucket], filters=pc.field("image_id").isin(ids))
        found.append(table.join(wanted, ["image_id", "class_id"], join_type="inner"))
    schema = FEATURES_SCHEMA.append(pa.field("correct", pa.bool_()))
    table = concat(found, schema)
    order = pc.sort_indices(table, [("image_id", "ascending"), ("class_id", "ascending"), ("correct", "ascending")])
    return table.take(order)


def label_model_sample(feature_files: list[str], rows: int) -> pa.Table:
    """Whole buckets in bucket order until `rows` candidates: a random sample of images, fixed by the data."""
    pieces, total = [], 0
    for path in feature_files:
        if total >= rows:
            break
        table = read_table(path)
        pieces.append(table)
        total += table.num_rows
    return concat(pieces, FEATURES_SCHEMA).slice(0, rows)


def fit(feature_files: list[str], pairs: tuple[pa.Table, pa.Table] | None, n_buckets: int, seed: int,
        label_model_rows: int) -> Fit:
    """Fit on the verified candidates (fit_scorer), or the label model when the crawl has no sample."""
    sample = label_model_sample(feature_files, label_model_rows)
    if sample.num_rows == 0:
        return Fit(None, None, pairs[1] if pairs else None, pairs[0].num_rows if pairs else 0, None)
    if pairs is None:
        return Fit(fit_label_model(sample, seed), None, None, 0, None)
    usable, rejects = pairs
    train = features_of_pairs(feature_files, usable, n_buckets)
    correct = train.column("correct").to_numpy(zero_copy_only=False).astype(bool)
    scorer = fit_scorer(train.drop_columns(["correct"]), correct, seed, unlabeled=sample)
    if scorer.oof is None or train.num_rows == 0:
        return Fit(scorer, None, rejects, usable.num_rows, None)
    scores = pa.table(
        {
            "image_id": train.column("image_id"),
            "class_id": train.column("class_id"),
            "correct": train.column("correct"),
            "score": pa.array(np.asarray(scorer.oof, dtype=np.float32)),
        },
        schema=DATASET_VERIFIED,
    )
    ece = round(float(expected_calibration_error(scorer.oof, correct)), 6)
    return Fit(scorer, scores, rejects, usable.num_rows, ece)


# --- scoring pass ----------------------------------------------------------------------------------------


def candidates_table(features: pa.Table, scores: np.ndarray, selected: np.ndarray) -> pa.Table:
    """CANDIDATES rows: the features, their score and whether selection kept them."""
    table = features.select(["image_id", "class_id", *FEATURES])
    table = table.append_column("score", pa.array(np.asarray(scores, dtype=np.float32)))
    table = table.append_column("selected", pa.array(np.asarray(selected, dtype=bool)))
    return conform(table, CANDIDATES, "candidates")


def with_out_of_fold(features: pa.Table, scores: np.ndarray, verified: pa.Table | None) -> np.ndarray:
    """`scores` with each verified pair's in-sample score replaced by its out-of-fold one.

    The scorer was fitted on the verified pairs, so its in-sample scores for them are better than for any
    other candidate: selection would keep or drop them more accurately, and the verified sample would then
    flatter the kept labels (a noise audit on it would read too little noise). With out-of-fold scores a
    verified pair is selected like any other candidate, and the sample stays a fair audit of the dataset.
    """
    if verified is None or verified.num_rows == 0 or features.num_rows == 0:
        return scores
    keys = features.select(["image_id", "class_id"]).append_column(
        "row", pa.array(np.arange(features.num_rows, dtype=np.int64)))
    pairs = verified.select(["image_id", "class_id", "score"])
    matched = keys.join(pairs, ["image_id", "class_id"], join_type="inner")
    matched = matched.sort_by([("row", "ascending"), ("score", "ascending")])  # a repeated pair: its last wins
    if matched.num_rows == 0:
        return scores
    scores = np.array(scores, dtype=np.float32, copy=True)
    scores[matched.column("row").to_numpy()] = matched.column("score").to_numpy()
    return scores


class ScoreBucket(beam.DoFn):
    """Bucket number -> `candidates/part-*` (scored, not yet selected) and (class block, histogram) pairs."""

    def __init__(self, out: str, scorer: Scorer | None, n_buckets: int, verified: pa.Table | None = None) -> None:
        self.out, self.scorer, self.n_buckets, self.verified = out, scorer, n_buckets, verified

    def process(self, bucket: int) -> Iterator[tuple[int, pa.Table]]:
        path = layout.features(self.out, bucket, self.n_buckets)
        features = read_table(path)
        if features.num_rows and self.scorer is None:
            raise ValueError(f"{path}: candidates but no scorer")
        scores = self.scorer.predict(features) if features.num_rows else np.zeros(0, np.float32)
        scores = with_out_of_fold(features, scores, self.verified)
        table = candidates_table(features, scores, np.zeros(features.num_rows, dtype=bool))
        atomic_write_table(table, f"{self.out.rstrip('/')}/{layout.candidates(bucket, self.n_buckets)}")
        count_rows("scored", table.num_rows)
        hist = sparse_histograms(table.column("class_id").to_numpy(), scores)
        blocks = hist.column("class_id").to_numpy() // CLASS_BLOCK
        for block in np.unique(blocks).tolist():
            yield block, hist.filter(pa.array(blocks == block))


def score_candidates(pipeline: beam.Pipeline, out: str, scorer: Scorer | None, n_buckets: int,
                     verified: pa.Table | None = None) -> None:
    """The scoring pass: every features file -> a candidates file, and the per-class score histograms.
    `verified` (DATASET_VERIFIED) gives the verified pairs their out-of-fold scores."""
    _ = (
        pipeline
        | "buckets" >> beam.Create(range(n_buckets))
        | "spread buckets" >> beam.Reshuffle()
        | "score" >> beam.ParDo(ScoreBucket(out, scorer, n_buckets, verified))
        | "merge histograms" >> beam.CombinePerKey(MergeHistograms())
        | "write histograms" >> beam.ParDo(WriteHistograms(out))
    )


def footer_rows(path: str) -> int:
    with open_parquet(path) as parquet:
        return parquet.metadata.num_rows
