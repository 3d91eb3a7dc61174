"""Quality of `webjft noise` on webjft's own synthetic crawls: synth -> build -> noise, scored by truth.parquet.

Per seed: `webjft synth --preset demo --seed S` (JPEGs), `webjft build CRAWL DATASET --target-precision 0.8`
(FnApiRunner in memory), then `webjft noise DATASET` with two embeddings of the same JPEGs:

* `vit`: the default, the random-weights tiny open_clip ViT (index/model_configs), cached in DATASET/noise;
* `pixels`: each JPEG box-downsampled to 16 x 16 RGB (768 values in [0, 1]); no training, no download,
  given to `webjft noise DATASET --embeddings pixels.parquet`.

Each embedding runs calibrated (the crawl's verified.parquet, the default; with the build's scores as a third
signal, the default, and with visual signals only, --no-label-scores) and unsupervised (--no-verified). A row
without images shows the build's own estimate (1 - the precision classes.parquet states; 1 - score per label).
Neither the build nor the estimator reads truth.parquet; only `label_truth` here does. Scores: per-class
noise-rate MAE over classes with >= 50 kept labels, 95%-interval coverage of those classes, AUROC of p_noisy
for the wrong labels over all labels and over the labels of those classes.

cleanlab (benchmark-only, AGPL) on the same embeddings and labels. The data are multi-label, so it runs the
way cleanlab treats multi-label data (each class on its own, one-vs-rest), for the classes with >= 50 labels:
5-fold cross-validated binary logistic regression "has class c" on the features webjft uses (whitened, L2-normalised);
the class noise rate is P(true = not c | labelled c) from the binary inverse noise matrix
(`estimate_py_and_noise_matrices_from_probabilities`), a label's score 1 - self-confidence. Its AUROC covers
the labels of those classes only, so compare it with webjft's AUROC on the same labels.

Seeds 0-9 are tuning seeds; report on others (1001).

    .venv/bin/python bench/noise_quality_dataset.py --seeds 1001 --work /tmp/noise-quality > /tmp/noise_dataset.md
    ... --no-cleanlab --audit-sizes 1700 3400 6800 13000    # webjft's rows only, and how MAE falls with audit size
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from index.audit import MIN_LABELS  # noqa: E402
from index.noise import NoiseConfig  # noqa: E402
from index.run import NOISE_DIR, default_verified, noise_for_dataset  # noqa: E402
from index.signals import normalize_rows  # noqa: E402
from index.tables import EMBEDDINGS, read_embeddings  # noqa: E402
from index.testdata import auroc, score_estimates  # noqa: E402
from index.whiten import apply_whitening, fit_whitening  # noqa: E402
from pipelines.build import BuildConfig, build  # noqa: E402
from pipelines.formats import exists, join, list_files, read_manifest, read_truth  # noqa: E402
from pipelines.synthetic import generate_crawl, preset  # noqa: E402

TUNING_SEEDS = range(10)
REPORTING_SEED = 1001
EMBEDDINGS_KINDS = ("vit", "pixels")
PIXEL_SIDE = 16
CONFIG: dict = {}  # NoiseConfig settings from the command line (--whiten-dims)
MIN_IMAGES = 50
MIN_IMAGES_SMALL = 20  # a second MAE column: classes with >= 20 labels


@dataclass(frozen=True)
class Case:
    """One seed's crawl and the dataset built from it."""

    seed: int
    crawl: str
    dataset: str
    work: str


def make_case(work: str, seed: int, preset_name: str = "demo", target: float = 0.8, workers: int | None = None,
              **overrides) -> Case:
    """Crawl and dataset of one seed under `work/seed-S/`, made once and reused (both folders are atomic)."""
    folder = join(work, f"seed-{seed}")
    crawl, dataset = join(folder, "crawl"), join(folder, "dataset")
    if not exists(join(crawl, "synth.json")):
        generate_crawl(preset(preset_name, seed=seed, **overrides), crawl, overwrite=True, workers=workers)
    if not exists(join(dataset, "manifest.json")):
        config = BuildConfig(target_precision=target, pipeline_args=("--direct_running_mode=in_memory",))
        build(crawl, dataset, config, overwrite=True)
    return Case(seed, crawl, dataset, folder)


def pixel_embeddings(dataset: str, out: str, side: int = PIXEL_SIDE) -> str:
    """Every image of the dataset as its JPEG box-downsampled to `side` x `side` RGB in [0, 1]: features
    anyone can compute without a model, that keep the colours and layout a synthetic class is drawn with."""
    ids, vectors = [], []
    for entry in read_manifest(dataset).shards:
        table = pq.read_table(join(dataset, entry.path), columns=["image_id", "content"])
        ids.append(table.column("image_id"))
        for content in table.column("content").to_pylist():
            image = Image.open(io.BytesIO(content)).convert("RGB").resize((side, side), Image.Resampling.BOX)
            vectors.append(np.asarray(image, dtype=np.float32).reshape(-1) / 255.0)
    x = np.stack(vectors)
    flat = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1]).cast(pa.list_(pa.float32()))
    image_ids = pa.chunked_array([c for col in ids for c in col.chunks], pa.string())
    pq.write_table(pa.table({"image_id": image_ids, "embedding": flat}, schema=EMBEDDINGS), out)
    return out


def label_truth(images: pa.Table, crawl: str) -> np.ndarray:
    """Per row of a noise images table (image_id, class_id): is that label wrong by the crawl's truth?"""
    truth = read_truth(crawl)
    if truth is None:
        raise ValueError(f"{crawl}: no truth.parquet")
    lists = truth.column("labels").combine_chunks()
    true_pairs = pa.table({
        "image_id": pc.take(truth.column("image_id"), pc.list_parent_indices(lists)),
        "class_id": pc.list_flatten(lists).cast(pa.int32()),
        "true": pa.array(np.ones(len(pc.list_flatten(lists)), dtype=bool)),
    })
    probe = pa.table({"image_id": images.column("image_id"), "class_id": images.column("class_id"),
                      "row": pa.array(np.arange(images.num_rows, dtype=np.int64))})
    joined = probe.join(true_pairs, ["image_id", "class_id"], join_type="left outer")
    wrong = np.ones(images.num_rows, dtype=bool)
    right = joined.filter(pc.fill_null(joined.column("true"), False)).column("row").to_numpy()
    wrong[right] = False
    return wrong


def audit_sample(case: Case, size: int, seed: int) -> str:
    """`size` of the dataset's kept labels drawn uniformly and checked against truth (a simulated human audit
    of the dataset, as verified.parquet: image_id, class_key, correct), written to work/seed-S/audit-SIZE.parquet.
    Audits of one seed are nested: a larger one holds every label of a smaller one.

    The crawl's verified sample also trained the build's scorer and set its thresholds, so the verified
    labels that survive selection are not a uniform sample of the kept labels (fewer of them are wrong);
    an audit drawn after the build is."""
    images = pq.read_table(join(case.dataset, NOISE_DIR, "images.parquet"), columns=["image_id", "class_id"])
    keys = pq.read_table(join(case.dataset, "classes.parquet"), columns=["key"]).column("key")
    pick = np.sort(np.random.default_rng([seed, 7]).permutation(images.num_rows)[:size])
    chosen = images.take(pa.array(pick))
    table = pa.table({"image_id": chosen.column("image_id"), "class_key": keys.take(chosen.column("class_id")),
                      "correct": pa.array(~label_truth(chosen, case.crawl))})
    path = join(case.work, f"audit-{size}.parquet")
    pq.write_table(table, path)
    return path


def targeted_audit(case: Case, kind: str, size: int, min_labels: int = MIN_LABELS) -> str:
    """The `size` labels `webjft noise DATASET --audit-sample SIZE --audit-min-labels MIN_LABELS` chooses
    (beside the crawl's verified sample), checked against truth, as work/seed-S/targeted-KIND-SIZE.parquet."""
    run = noise_for_dataset(case.dataset, embeddings=_pixels(case) if kind == "pixels" else None,
                            audit_size=size, audit_min_labels=min_labels,
                            config=NoiseConfig(backend="faiss-cpu", **CONFIG))
    sample = pq.read_table(run.audit, columns=["image_id", "class_key"])
    keys = pq.read_table(join(case.dataset, "classes.parquet"), columns=["key"]).column("key")
    class_id = pc.index_in(sample.column("class_key"), value_set=keys).cast(pa.int32())
    wrong = label_truth(pa.table({"image_id": sample.column("image_id"), "class_id": class_id}), case.crawl)
    path = join(case.work, f"targeted-{kind}-{size}.parquet")
    pq.write_table(sample.append_column("correct", pa.array(~wrong)), path)
    return path


def _pixels(case: Case) -> str:
    path = join(case.work, f"pixels{PIXEL_SIDE}.parquet")
    if not exists(path):
        pixel_embeddings(case.dataset, path)
    return path


def run_webjft(case: Case, kind: str, verified: str | list[str] | None, label_scores: bool = True) -> dict:
    """`webjft noise DATASET` (vit) or `webjft noise DATASET --embeddings pixels.parquet`, calibrated on the
    dataset's verified sample (`verified="crawl"`, the default: the crawl's verified pairs that were
    candidates, with the build's scores), on a given verified file, or unsupervised (None); with the
    build's scores as a third signal or (`label_scores=False`, `--no-label-scores`) visual signals only."""
    embeddings = None
    if kind == "pixels":
        embeddings = join(case.work, f"pixels{PIXEL_SIDE}.parquet")
        if not exists(embeddings):
            pixel_embeddings(case.dataset, embeddings)
    start = time.perf_counter()
    run = noise_for_dataset(case.dataset, embeddings=embeddings, use_verified=verified is not None,
                            verified=None if verified == "crawl" else verified,
                            config=NoiseConfig(backend="faiss-cpu", label_scores=label_scores, **CONFIG))
    seconds = time.perf_counter() - start
    images = run.result.images
    wrong = label_truth(images, case.crawl)
    label_class, p = images.column("class_id").to_numpy(), images.column("p_noisy").to_numpy()
    got = score_estimates(run.result.classes, label_class, p, wrong, MIN_IMAGES)
    smaller = score_estimates(run.result.classes, label_class, p, wrong, MIN_IMAGES_SMALL)
    return {**got, "mae_small": smaller["mae"], "method": run.result.method,
            "verified_used": run.result.stats["verified_used"], "seconds": seconds}


def run_build_scores(case: Case) -> dict:
    """The build's own estimate, no images: a class's noise is 1 - the precision its classes.parquet states
    (interval likewise), a label's p_noisy is 1 - its score."""
    start = time.perf_counter()
    shards = pa.concat_tables([pq.read_table(join(case.dataset, entry.path), columns=["image_id", "labels", "scores"])
                               for entry in read_manifest(case.dataset).shards])
    lists = shards.column("labels").combine_chunks()
    images = pa.table({"image_id": pc.take(shards.column("image_id"), pc.list_parent_indices(lists)),
                       "class_id": pc.list_flatten(lists)})
    p = 1 - pc.list_flatten(shards.column("scores").combine_chunks()).to_numpy()
    label_class = images.column("class_id").to_numpy()
    n = np.bincount(label_class)
    present = np.flatnonzero(n)
    stated = pq.read_table(join(case.dataset, "classes.parquet"), columns=["precision", "precision_low",
                                                                             "precision_high"])
    noise = {name: 1 - stated.column(column).to_numpy(zero_copy_only=False)[present]
             for name, column in (("noise_rate", "precision"), ("noise_low", "precision_high"),
                                  ("noise_high", "precision_low"))}
    classes = pa.table({"class_id": present, "n_images": n[present], **noise})
    got = score_estimates(classes, label_class, p, label_truth(images, case.crawl), MIN_IMAGES)
    return {**got, "seconds": time.perf_counter() - start}


def embeddings_of(case: Case, kind: str) -> tuple[pa.Array, np.ndarray]:
    """The vectors `run_webjft` used: the pixels file, or the ViT cache `webjft noise DATASET` wrote."""
    if kind == "pixels":
        return read_embeddings(join(case.work, f"pixels{PIXEL_SIDE}.parquet"))
    return read_embeddings(list_files(join(case.dataset, NOISE_DIR, "embeddings")))


def webjft_features(x: np.ndarray) -> np.ndarray:
    """The vectors as webjft's estimator sees them (whitened unless --whiten-dims 0), so that cleanlab gets the
    same features."""
    dims = CONFIG.get("whiten_dims", NoiseConfig.whiten_dims)
    if not dims:
        return normalize_rows(x)
    return apply_whitening(x, fit_whitening(x, dims, shrink=NoiseConfig.whiten_shrink))


def run_cleanlab(case: Case, kind: str, folds: int = 5) -> dict:
    """Confident learning per class (one-vs-rest) on the same embeddings and kept labels; see module doc."""
    from cleanlab.count import estimate_py_and_noise_matrices_from_probabilities
    from cleanlab.rank import get_label_quality_scores
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    images = pq.read_table(join(case.dataset, NOISE_DIR, "images.parquet"), columns=["image_id", "class_id"])
    wrong = label_truth(images, case.crawl)
    start = time.perf_counter()
    ids, x = embeddings_of(case, kind)
    x = webjft_features(x)
    row = pc.index_in(images.column("image_id"), value_set=ids).to_numpy()
    label_class = images.column("class_id").to_numpy()
    n_per_class = np.bincount(label_class)
    big = np.flatnonzero(n_per_class >= MIN_IMAGES)
    rate = np.full(len(big), np.nan)
    true_rate = np.bincount(label_class, wrong, len(n_per_class))[big] / n_per_class[big]
    score = np.full(len(label_class), np.nan)
    for i, c in enumerate(big):
        members = np.flatnonzero(label_class == c)
        y = np.zeros(len(ids), dtype=np.int64)
        y[row[members]] = 1
        p = cross_val_predict(LogisticRegression(max_iter=2000, C=10.0), x, y, cv=folds, method="predict_proba")
        _, _, inverse, _ = estimate_py_and_noise_matrices_from_probabilities(y, p)
        rate[i] = 1 - inverse[1, 1]  # inverse[i, j] = P(true = i | labelled j)
        score[members] = 1 - get_label_quality_scores(y, p, method="self_confidence")[row[members]]
    seconds = time.perf_counter() - start
    in_big = np.isin(label_class, big)
    return {"classes": len(big), "mae": float(np.abs(rate - true_rate).mean()), "coverage": float("nan"),
            "auroc": float("nan"), "auroc_big": auroc(score[in_big], wrong[in_big]), "labels": len(wrong),
            "noise": float(wrong.mean()),
            "method": "cleanlab", "seconds": seconds}


def _cell(value: float, digits: int = 4) -> str:
    return "–" if value is None or np.isnan(value) else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[REPORTING_SEED])
    parser.add_argument("--work", default="/tmp/noise-quality", help="folder for crawls, datasets, embeddings")
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--embeddings", nargs="+", default=list(EMBEDDINGS_KINDS), choices=EMBEDDINGS_KINDS)
    parser.add_argument("--no-cleanlab", action="store_true")
    parser.add_argument("--whiten-dims", type=int, default=NoiseConfig.whiten_dims,
                        help="webjft's NoiseConfig.whiten_dims (0: no whitening)")
    parser.add_argument("--audit-sizes", type=int, nargs="*", default=[],
                        help="also calibrate on uniform audits of these many kept labels (nested, per seed)")
    parser.add_argument("--targeted-sizes", type=int, nargs="*", default=[],
                        help="also add this many labels to the crawl's sample, uniform vs --audit-sample's choice")
    parser.add_argument("--audit-min-labels", type=int, default=MIN_LABELS,
                        help="webjft noise --audit-min-labels for the --targeted-sizes rows")
    args = parser.parse_args()
    CONFIG["whiten_dims"] = args.whiten_dims
    print("| seed | embedding | method | labels | true noise | classes >= 50 | MAE | MAE classes >= 20 | coverage | "
          "AUROC all labels | AUROC classes >= 50 | time |")
    print("| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for seed in args.seeds:
        case = make_case(args.work, seed, args.preset)
        _row(seed, "none", "the build's own estimate (1 - stated precision; 1 - score)", run_build_scores(case))
        for kind in args.embeddings:
            crawl_run = run_webjft(case, kind, "crawl")
            _row(seed, kind, "webjft calibrated, the dataset's verified sample (its crawl's, with scores)", crawl_run)
            _row(seed, kind, "webjft calibrated, visual signals only (--no-label-scores)",
                 run_webjft(case, kind, "crawl", label_scores=False))
            audit = audit_sample(case, crawl_run["verified_used"], seed)
            _row(seed, kind, f"webjft calibrated, audit of {crawl_run['verified_used']} kept labels",
                 run_webjft(case, kind, audit))
            for size in args.audit_sizes:
                _row(seed, kind, f"webjft calibrated, audit of {size} kept labels",
                     run_webjft(case, kind, audit_sample(case, size, seed)))
            crawl_sample = default_verified(case.dataset)
            for size in args.targeted_sizes:
                _row(seed, kind, f"webjft calibrated, crawl's sample + uniform {size}",
                     run_webjft(case, kind, [crawl_sample, audit_sample(case, size, seed)]))
                _row(seed, kind, f"webjft calibrated, crawl's sample + --audit-sample {size}",
                     run_webjft(case, kind, [crawl_sample, targeted_audit(case, kind, size, args.audit_min_labels)]))
            _row(seed, kind, "webjft unsupervised", run_webjft(case, kind, None))
            if not args.no_cleanlab:
                _row(seed, kind, "cleanlab (one-vs-rest, CV logistic)", run_cleanlab(case, kind))


def _row(seed: int, kind: str, name: str, got: dict) -> None:
    print(f"| {seed} | {kind} | {name} | {got['labels']:,} | {got['noise']:.3f} | {got['classes']} | "
          f"{_cell(got['mae'])} | {_cell(got.get('mae_small', float('nan')))} | {_cell(got['coverage'], 2)} | "
          f"{_cell(got['auroc'])} | {_cell(got['auroc_big'])} | {got['seconds']:.0f} s |", flush=True)


if __name__ == "__main__":
    main()
