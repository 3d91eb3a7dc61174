"""Label noise per (image, label) and per class from visual embeddings (Sun et al. 2017, Fig. 2).

The two signals of the paper's figure, per label: the image's distance to the nearest k-means centroid of
that class, divided by the class's typical distance (so that tight and spread-out classes compare), and the
share of the image's nearest neighbours that carry the same label (or, with a hierarchy, a class below it).
A verified sample calibrates them into P(label wrong) (`index.calibrate`); without one, a two-component
mixture gives an unsupervised estimate that says it is one. The calibrated model also weighs, per label:

* rivals: how many neighbours carry the strongest class unrelated to the label (a look-alike's images);
* the labeller's own score, when it gave one (a webjft dataset's `scores`, or a `scores` column in a labels
  file): text evidence fails on other labels than visual evidence does;
* with class names, whether another label of the image has the same name (two readings of one word).

Each one's gain on webjft's synthetic datasets is in docs/benchmarks.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa

from index.calibrate import (
    ClassRates,
    class_rates_mixture,
    class_rates_supervised,
    fit_logistic_eb,
    fit_mixture,
    wilson,
)
from index.hierarchy import with_ancestors
from index.kmeans import resolve_backend
from index.knn import label_agreement, neighbour_rivals, neighbours
from index.signals import (
    bucket_edges,
    class_distances,
    design,
    name_among_labels,
    normalised_distance,
    normalize_rows,
    shares_name,
)
from index.whiten import apply_whitening, fit_whitening
from pipelines.formats import NOISE_CLASSES, NOISE_IMAGES

Progress = Callable[[str, int, int], None]

SUPERVISED = "calibrated"
SUPERVISED_GLOBAL = "calibrated-global"
UNSUPERVISED = "unsupervised-mixture"


@dataclass(frozen=True)
class NoiseConfig:
    """Knobs of the estimator; the defaults are what the benchmarks in docs/benchmarks.md used."""

    points_per_centroid: int = 50  # a class gets one centroid per this many images ...
    max_class_centroids: int = 8  # ... up to this many
    niter: int = 20
    neighbours: int = 15
    buckets: int = 10  # distance buckets of the Fig. 2 curve (quantiles over all labels)
    exact_knn_max: int = 20_000  # exact neighbour search up to this many images, inverted file above
    nprobe: int = 8
    scale_prior: float = 5.0  # pseudo-images at the global median when normalising a small class's distances
    class_prior_sd: float | None = 3.0  # spread of class logit offsets around the global curve; None: chosen
    class_verified_min: int = 5  # verified labels for a class's estimate to count as its own (method column)
    min_verified: int = 20  # fewer usable verified labels (or all right or all wrong): unsupervised
    label_scores: bool = True  # calibrate the labeller's own scores in as a third signal, when labels have them
    verified_candidates: bool = True  # calibrate on verified pairs that are not labels too (see `estimate_noise`)
    whiten_dims: int = 256  # PCA-whiten embeddings to at most this many axes first (`index.whiten`); 0: off
    whiten_shrink: float = 1.0  # ... dividing each axis by sqrt(variance + this x the mean variance)
    seed: int = 0
    backend: str = "auto"


@dataclass(frozen=True)
class Labels:
    """A labelled image set: ids and CSR labels (row i has values[offsets[i]:offsets[i+1]])."""

    image_ids: pa.Array
    offsets: np.ndarray
    values: np.ndarray
    n_classes: int
    scores: np.ndarray | None = None  # per label, aligned with `values`: the labeller's P(label right), if any

    @property
    def n_images(self) -> int:
        return len(self.offsets) - 1

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(row int64, class int32) of every label."""
        rows = np.repeat(np.arange(self.n_images, dtype=np.int64), np.diff(self.offsets))
        return rows, self.values.astype(np.int32)


@dataclass(frozen=True)
class ClassSpace:
    """What is known about the classes beyond their ids (a taxonomy, or a dataset's classes.parquet)."""

    parents: pa.ListArray | None = None  # parents[c]: direct parents of class c (a DAG)
    names: pa.Array | None = None  # names[c]: the class's name


@dataclass(frozen=True)
class Verified:
    """Human-checked labels in row space: image row, class id, and whether the label is right."""

    row: np.ndarray
    class_id: np.ndarray
    correct: np.ndarray
    score: np.ndarray | None = None  # the labeller's P(right) of each pair (a dataset's out-of-fold scores)


@dataclass(frozen=True)
class Curve:
    """The Fig. 2 curve: per distance bucket, its range, labels, verified labels and noise."""

    low: np.ndarray
    high: np.ndarray
    centre: np.ndarray
    labels: np.ndarray
    verified: np.ndarray
    verified_wrong: np.ndarray
    verified_low: np.ndarray
    verified_high: np.ndarray
    estimated: np.ndarray

    @property
    def verified_rate(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.verified_wrong / self.verified

    def to_dict(self) -> dict[str, list[float]]:
        return {name: np.asarray(value).tolist() for name, value in asdict(self).items()}


@dataclass
class NoiseResult:
    classes: pa.Table  # NOISE_CLASSES
    images: pa.Table  # NOISE_IMAGES
    curve: Curve
    method: str
    notes: list[str] = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    verified_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # rows of `images`


def match_verified(
    verified: Verified, rows: np.ndarray, classes: np.ndarray, n_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Label index and `wrong` flag of each verified row that is one of the labels, and which verified rows
    those were (a mask over `verified`)."""
    keys = rows * n_classes + classes.astype(np.int64)
    order = np.argsort(keys, kind="stable")
    probe = verified.row.astype(np.int64) * n_classes + verified.class_id.astype(np.int64)
    at = np.minimum(np.searchsorted(keys[order], probe), len(keys) - 1)
    hit = (keys[order][at] == probe) if len(keys) else np.zeros(len(probe), bool)
    index = order[at[hit]]
    wrong = ~verified.correct[hit].astype(bool)
    # The same label verified twice: keep its first verdict.
    index, first = np.unique(index, return_index=True)
    return index, wrong[first], hit


@dataclass(frozen=True)
class Candidates:
    """Verified (image row, class) pairs that are not labels, with their verdicts and, if known, scores."""

    row: np.ndarray
    class_id: np.ndarray
    wrong: np.ndarray
    score: np.ndarray | None

    def take(self, keep: np.ndarray) -> Candidates:
        score = None if self.score is None else self.score[keep]
        return Candidates(self.row[keep], self.class_id[keep], self.wrong[keep], score)


def verified_candidates(verified: Verified, hit: np.ndarray, n_per_class: np.ndarray, n_classes: int) -> Candidates:
    """The verified pairs that are not labels, of classes that have labels (their centroids and neighbours
    say something about the pair), each pair once with its first verdict."""
    keep = ~hit & (n_per_class[verified.class_id] > 0)
    row, cls = verified.row[keep].astype(np.int64), verified.class_id[keep].astype(np.int32)
    _, first = np.unique(row * n_classes + cls, return_index=True)
    first = np.sort(first)
    score = None if verified.score is None else np.asarray(verified.score[keep][first], dtype=np.float64)
    return Candidates(row[first], cls[first], ~verified.correct[keep][first].astype(bool), score)


def _logit(p: np.ndarray) -> np.ndarray:
    clipped = np.clip(np.asarray(p, dtype=np.float64), 1e-4, 1 - 1e-4)
    return np.log(clipped / (1 - clipped))


def _prepare(x: np.ndarray, config: NoiseConfig, inplace: bool, notes: list[str]) -> np.ndarray:
    """The embeddings as every distance will see them: whitened (`index.whiten`) or centred, L2-normalised."""
    if not config.whiten_dims:
        return normalize_rows(x, inplace=inplace)
    whitening = fit_whitening(x, config.whiten_dims, seed=config.seed, shrink=config.whiten_shrink)
    notes.append(f"embeddings whitened: {whitening.dims} principal axes of {whitening.mean.shape[0]} "
                 f"(shrinkage {config.whiten_shrink:g})")
    return apply_whitening(x, whitening, inplace=inplace)


def _split_verified(
    verified: Verified | None, rows: np.ndarray, classes: np.ndarray, n_per_class: np.ndarray, config: NoiseConfig,
    *, need_scores: bool, notes: list[str],
) -> tuple[np.ndarray, np.ndarray, Candidates]:
    """The verified labels (index into the labels, wrong flags) and the verified pairs that are not labels
    but can calibrate too (`verified_candidates`; with `need_scores`, only those that have a score)."""
    index = wrong = np.zeros(0, dtype=np.int64)
    outside = Candidates(np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, bool), None)
    if verified is None:
        return index, wrong, outside
    n_classes = len(n_per_class)
    index, wrong, hit = match_verified(verified, rows, classes, n_classes)
    if config.verified_candidates:
        outside = verified_candidates(verified, hit, n_per_class, n_classes)
        scored = np.isfinite(outside.score) if outside.score is not None else np.zeros(len(outside.row), bool)
        if need_scores and not scored.all():
            notes.append(f"{int((~scored).sum()):,} verified pairs are not labels and have no scores (a "
                         "dataset's verified.parquet has them): not used")
            outside = outside.take(scored)
    unused = len(verified.row) - len(index) - len(outside.row)
    if unused:
        notes.append(f"{unused:,} verified rows are neither labels of this set nor usable candidates (of a "
                     "class with labels) and were not used")
    return index, wrong, outside


@dataclass(frozen=True)
class PairSignals:
    """What the embeddings say about each (image, class) pair: the labels first, then the verified pairs
    that are not labels (`Candidates`), in that order in every array."""

    z: np.ndarray  # distance to the class's nearest centroid, normalised within the class
    agree: np.ndarray  # neighbours carrying the class (or, with a hierarchy, a class below it)
    valid: np.ndarray  # neighbours found
    rivals: np.ndarray  # neighbours carrying the strongest class unrelated to this one
    same_name: np.ndarray | None  # another label of the image has the same name (None: no names, or none do)

    def logit(self, count: np.ndarray) -> np.ndarray:
        """Smoothed log-odds of `count` out of the valid neighbours."""
        return np.log((count + 0.5) / (self.valid - count + 0.5))


@dataclass(frozen=True)
class Fit:
    """P(wrong) per label and per class, from the calibrated model or the mixture, and what it used."""

    p: np.ndarray
    rates: ClassRates
    method: str
    method_of: np.ndarray  # per class id
    weights: dict[str, float]  # the calibrated model's, by input name; empty for the mixture
    scores_used: bool
    shared_name_labels: int
    candidates_used: int


def measure_pairs(
    x: np.ndarray, labels: Labels, outside: Candidates, config: NoiseConfig, class_space: ClassSpace,
    progress: Progress | None, timings: dict[str, float],
) -> PairSignals:
    """Distances to class centroids, neighbour agreement and rivals, and shared names, for every label and
    every verified pair that is not one; measured against the labels' centroids and neighbours alike."""
    rows, classes = labels.pairs()
    n_per_class = np.bincount(classes, minlength=labels.n_classes)
    clock = time.perf_counter()
    dist, _, median, outside_dist = class_distances(x, rows, classes, labels.n_classes, config, progress,
                                                    outside.row, outside.class_id)
    finite = np.isfinite(dist)
    global_median = float(np.median(dist[finite])) if finite.any() else 1.0
    z, outside_z = (normalised_distance(d, c, median, n_per_class, config.scale_prior, global_median)
                    for d, c in ((dist, classes), (outside_dist, outside.class_id)))
    timings["class_kmeans_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    parents = class_space.parents
    nbrs = neighbours(x, config.neighbours, exact_max=config.exact_knn_max, nprobe=config.nprobe,
                      backend=config.backend, seed=config.seed, progress=progress,
                      principal_axes=bool(config.whiten_dims))
    pair_rows, pair_classes = np.concatenate([rows, outside.row]), np.concatenate([classes, outside.class_id])
    agree_offsets, agree_values = labels.offsets, labels.values
    if parents is not None:
        agree_offsets, agree_values = with_ancestors(labels.offsets, labels.values, parents)
    agree, valid = label_agreement(nbrs, agree_offsets, agree_values, pair_rows, pair_classes)
    del agree_offsets, agree_values
    rivals = neighbour_rivals(nbrs, labels.offsets, labels.values, pair_rows, pair_classes, parents)
    del nbrs
    timings["neighbours_s"] = time.perf_counter() - clock

    same_name = None
    if class_space.names is not None:
        same_name = np.concatenate([shares_name(rows, classes, class_space.names),
                                    name_among_labels(rows, classes, class_space.names, outside.row,
                                                      outside.class_id)])
        if not same_name.any():
            same_name = None
    return PairSignals(np.concatenate([z, outside_z]), agree, valid, rivals, same_name)


def fit_calibrated(
    signals: PairSignals, labels: Labels, index: np.ndarray, wrong: np.ndarray, outside: Candidates,
    score_logit: np.ndarray | None, edges: np.ndarray, config: NoiseConfig, notes: list[str],
) -> Fit:
    """The logistic model of `index.calibrate` on the verified labels and pairs, applied to every label."""
    rows, classes = labels.pairs()
    n_labels, n_classes = len(rows), labels.n_classes
    pair_classes = np.concatenate([classes, outside.class_id])
    same_name = signals.same_name
    pair_score = None
    if score_logit is not None:
        pair_score = np.concatenate([score_logit, _logit(outside.score) if len(outside.row) else []])
    is_label = np.concatenate([np.ones(n_labels), np.zeros(len(outside.row))]) if len(outside.row) else None
    class_same_name = None
    if same_name is not None:  # per class: the share of its labels that share their name
        n_per_class = np.bincount(classes, minlength=n_classes)
        class_same_name = (np.bincount(classes, same_name[:n_labels], n_classes) / np.maximum(n_per_class, 1))
        class_same_name = class_same_name[pair_classes]
    features, names = design(signals.z, signals.logit(signals.agree), edges, pair_score, same_name,
                             signals.logit(signals.rivals), is_label, class_same_name)
    fit_rows = np.concatenate([index, n_labels + np.arange(len(outside.row))])
    fit_wrong = np.concatenate([wrong, outside.wrong]).astype(bool)
    sds = (config.class_prior_sd,) if config.class_prior_sd else (0.25, 0.5, 1.0, 2.0, 3.0, 4.0)
    model = fit_logistic_eb(features[fit_rows], fit_wrong, pair_classes[fit_rows], n_classes, sds)
    features, same_name = features[:n_labels], _head(same_name, n_labels)
    p = model.predict(features, classes)
    rates = class_rates_supervised(model, features, classes, n_classes, p)
    # Verified labels only: pairs not kept mostly score ~0 and are wrong as predicted, which pins no offset.
    per_class_verified = np.bincount(classes[index], minlength=n_classes)
    method_of = np.where(per_class_verified >= config.class_verified_min, SUPERVISED, SUPERVISED_GLOBAL)
    weight = dict(zip(names, model.w, strict=True))
    notes.append(f"calibrated on {len(index):,} verified labels ({int(wrong.sum()):,} wrong); class offsets "
                 f"spread {model.group_prior_sd:g} (logit)")
    if len(outside.row):
        notes.append(f"and on {len(outside.row):,} verified pairs that are not labels "
                     f"({int(outside.wrong.sum()):,} wrong; the labeller did not keep them)")
    if score_logit is not None:
        notes.append(f"the labels' own scores are a third signal (fitted weight {weight['score']:.2f} on their "
                     "log-odds of being right)")
    if same_name is not None:
        notes.append(f"{int(same_name.sum()):,} labels share their name with another label of their image "
                     f"(readings of one ambiguous word): a signal of its own (fitted weight "
                     f"{weight['same_name']:.2f})")
    return Fit(p, rates, SUPERVISED, method_of, weight, score_logit is not None,
               int(same_name.sum()) if same_name is not None else 0, len(outside.row))


def fit_unsupervised(signals: PairSignals, labels: Labels, notes: list[str]) -> Fit:
    """The two-component mixture of `index.calibrate` on the labels' agreement and distance alone."""
    _, classes = labels.pairs()
    n_labels = len(classes)
    _, p = fit_mixture(signals.agree[:n_labels], signals.valid[:n_labels],
                       np.log(np.maximum(signals.z[:n_labels], 1e-6)), classes, labels.n_classes)
    rates = class_rates_mixture(classes, labels.n_classes, p)
    notes.append("no verified sample: unsupervised two-component mixture; noise rates are estimates "
                 "without calibration, expect larger errors")
    return Fit(p, rates, UNSUPERVISED, np.full(labels.n_classes, UNSUPERVISED), {}, False, 0, 0)


def estimate_noise(
    x: np.ndarray,
    labels: Labels,
    verified: Verified | None = None,
    config: NoiseConfig | None = None,
    *,
    progress: Progress | None = None,
    inplace: bool = False,
    class_space: ClassSpace | None = None,
) -> NoiseResult:
    """Noise estimates for every label of `labels` from embeddings `x` (rows aligned with `labels`).

    With the class hierarchy, neighbours carrying a descendant of a label agree with it too; with class
    names, a label that shares its name with another label of the same image (two readings of one ambiguous
    word, at most one of them right) is a signal of its own in the calibrated model.

    Verified pairs that are not labels (a crawl's sample checks candidates the build did not keep, too) are
    calibration data as well: their signals are measured the same way, against the labels' centroids and
    neighbours, and a "label" indicator lets the model tell the two kinds apart. A dataset's sample holds
    about nine times as many of these as of kept labels. With label scores in the model, such pairs need
    scores of their own (`Verified.score`) and are left out without them.
    """
    class_space = class_space or ClassSpace()
    config = config or NoiseConfig()
    if x.shape[0] != labels.n_images:
        raise ValueError(f"{x.shape[0]} embeddings for {labels.n_images} labelled images")
    timings: dict[str, float] = {}
    notes: list[str] = []
    x = _prepare(x, config, inplace, notes)
    rows, classes = labels.pairs()
    n_classes = labels.n_classes
    if not len(rows):
        raise ValueError("the labelled set has no labels")
    n_per_class = np.bincount(classes, minlength=n_classes)

    score_logit = None
    if labels.scores is not None and config.label_scores:
        score_logit = _logit(labels.scores)
        if np.ptp(score_logit) == 0:
            notes.append("every label has the same score: the scores carry no signal and are not used")
            score_logit = None
    index, wrong, outside = _split_verified(verified, rows, classes, n_per_class, config,
                                            need_scores=score_logit is not None, notes=notes)
    signals = measure_pairs(x, labels, outside, config, class_space, progress, timings)

    clock = time.perf_counter()
    z = signals.z[: len(rows)]
    edges = bucket_edges(z, config.buckets)
    if len(index) >= config.min_verified and 0 < wrong.sum() < len(wrong):
        fit = fit_calibrated(signals, labels, index, wrong, outside, score_logit, edges, config, notes)
    else:
        if verified is not None:
            notes.append(f"only {len(index):,} usable verified labels (need {config.min_verified}, right and "
                         "wrong ones): falling back to the unsupervised estimate")
        fit = fit_unsupervised(signals, labels, notes)
        if score_logit is not None:
            notes.append("the labels' own scores are not used without a verified sample to weigh them")
    timings["calibrate_s"] = time.perf_counter() - clock
    if progress:
        progress("calibrate", 1, 1)

    present = np.flatnonzero(n_per_class)
    result = NoiseResult(
        classes=_classes_table(present, fit.rates, fit.method_of),
        images=pa.table(
            {
                "image_id": labels.image_ids.take(pa.array(rows)),
                "class_id": pa.array(classes, pa.int32()),
                "distance": pa.array(z, pa.float32()),
                "p_noisy": pa.array(fit.p.astype(np.float32), pa.float32()),
            },
            schema=NOISE_IMAGES,
        ),
        curve=_curve(z, edges, fit.p, index, wrong),
        method=fit.method,
        notes=notes,
        verified_labels=np.asarray(index, dtype=np.int64),
    )
    result.stats = {
        "images": labels.n_images,
        "labels": len(rows),
        "classes": len(present),
        "verified_used": len(index),
        "verified_candidates_used": fit.candidates_used,
        "embedding_dims": int(x.shape[1]),
        "label_scores_used": fit.scores_used,
        "hierarchy_used": class_space.parents is not None,
        "shared_name_labels_used": fit.shared_name_labels,
        "model_weights": {name: round(float(value), 4) for name, value in fit.weights.items()},
        "backend": resolve_backend(config.backend),
        "config": asdict(config),
        **{name: round(value, 3) for name, value in timings.items()},
    }
    return result


def _head(values: np.ndarray | None, n: int) -> np.ndarray | None:
    return None if values is None else values[:n]


def _curve(z: np.ndarray, edges: np.ndarray, p: np.ndarray, index: np.ndarray, wrong: np.ndarray) -> Curve:
    bucket = np.searchsorted(edges, z, side="right")
    n_buckets = len(edges) + 1
    labels = np.bincount(bucket, minlength=n_buckets)
    safe = np.maximum(labels, 1)
    verified = np.bincount(bucket[index], minlength=n_buckets)
    verified_wrong = np.bincount(bucket[index], wrong.astype(np.float64), n_buckets)
    low, high = wilson(verified_wrong, verified)
    bounds = np.concatenate([[z.min()], edges, [z.max()]])
    return Curve(
        low=bounds[:-1], high=bounds[1:], centre=np.bincount(bucket, z, n_buckets) / safe, labels=labels,
        verified=verified, verified_wrong=verified_wrong, verified_low=low, verified_high=high,
        estimated=np.bincount(bucket, p, n_buckets) / safe,
    )


def _classes_table(present: np.ndarray, rates: ClassRates, method_of: np.ndarray) -> pa.Table:
    return pa.table(
        {
            "class_id": pa.array(present.astype(np.int32)),
            "n_images": pa.array(rates.n[present].astype(np.int64)),
            "noise_rate": pa.array(rates.rate[present].astype(np.float32)),
            "noise_low": pa.array(rates.low[present].astype(np.float32)),
            "noise_high": pa.array(rates.high[present].astype(np.float32)),
            "method": pa.array(method_of[present].astype(str)),
        },
        schema=NOISE_CLASSES,
    )
