"""`build()`: crawl -> dataset, stage by stage (docs/build.md), with the driver steps in between.

Four Beam passes (read+aggregate, score, select, write shards) on the configured runner; between them
the driver fits the scorer, chooses thresholds and counts shards, which need everything the previous
pass produced, and checks each pass's row counters. The output folder is prepared first: a complete
dataset there needs `overwrite`; an incomplete one (no manifest: an interrupted build) is removed, so a
re-run never mixes files of two runs.
"""

from __future__ import annotations

import os
import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import GoogleCloudOptions

from labeling.selection import choose_thresholds
from labeling.taxonomy import Taxonomy
from pipelines.build import layout
from pipelines.build.aggregate import candidate_features, fill_empty_buckets
from pipelines.build.config import BuildConfig, pipeline_options
from pipelines.build.counters import check, read_counters
from pipelines.build.errors import BuildError
from pipelines.build.finish import fingerprints, finish
from pipelines.build.histograms import read_histograms
from pipelines.build.read import SignalPiece, load_taxonomy, plan_signal_reads, write_image_ids
from pipelines.build.score import (
    fit,
    footer_rows,
    score_candidates,
    verified_pairs,
)
from pipelines.build.write import fill_empty_shards, select_candidates, shards_per_split, write_shards
from pipelines.formats import (
    MANIFEST,
    IdSet,
    Manifest,
    atomic_write_table,
    crawl_files,
    exists,
    join,
    list_files,
    makedirs,
    read_bytes,
    read_images,
    resolve,
    write_dataset_file,
)

Progress = Callable[[str, int, int], None]
Log = Callable[[str], None]


@dataclass
class BuildResult:
    path: str
    manifest: Manifest
    seconds: float
    stages: dict[str, float] = field(default_factory=dict)
    counters: dict[str, dict[str, int]] = field(default_factory=dict)  # rows seen by each pass, by counter


class Stages:
    """Times each stage and reports it to the progress callback and the log."""

    def __init__(self, progress: Progress | None, log: Log | None) -> None:
        self.progress, self.log = progress, log
        self.seconds: dict[str, float] = {}
        self._start = time.perf_counter()
        self._current: str | None = None

    def start(self, name: str) -> None:
        self._stop()
        self._current, self._since = name, time.perf_counter()
        if self.progress:
            self.progress(name, 0, 1)

    def note(self, message: str) -> None:
        if self.log:
            self.log(message)

    def _stop(self) -> None:
        if self._current is None:
            return
        self.seconds[self._current] = round(time.perf_counter() - self._since, 3)
        if self.progress:
            self.progress(self._current, 1, 1)
        self._current = None

    def done(self) -> float:
        self._stop()
        return time.perf_counter() - self._start


# --- output folder ---------------------------------------------------------------------------------------


def prepare_out(out: str, overwrite: bool, protect: str | None = None) -> None:
    """Make `out` an empty folder to build into, or refuse with a one-line reason.

    A folder holding anything but dataset entries is never emptied: it is not ours to delete.
    """
    if protect is not None and posixpath.normpath(out.rstrip("/")) == posixpath.normpath(protect.rstrip("/")):
        raise BuildError(f"{out}: the output must be a new folder, not the dataset it is made from")
    fs, inner = resolve(out)
    if fs.exists(inner) and not fs.isdir(inner):
        raise BuildError(f"{out}: exists and is not a folder")
    if not fs.exists(inner):
        makedirs(out)
        return
    names = sorted(posixpath.basename(entry.rstrip("/")) for entry in fs.ls(inner, detail=False))
    if MANIFEST in names and not overwrite:
        raise BuildError(f"{out}: a complete dataset is already there (pass --overwrite to replace it)")
    foreign = [name for name in names if name not in layout.DATASET_ENTRIES and not _is_temporary(name)]
    if foreign:
        raise BuildError(f"{out}: holds {foreign[0]!r}, which is not part of a webjft dataset; choose another folder")
    for name in names:
        fs.rm(posixpath.join(inner, name), recursive=True)


def _is_temporary(name: str) -> bool:
    """Temporary names of atomic writes (`.name.tmp-<uuid>`) left by an interrupted run."""
    return name.startswith(".") and ".tmp-" in name


def raise_worker_errors(out: str) -> None:
    """Stop with the first (by input file number) reason a worker could not read an input."""
    messages = list_files(layout.work(out, "errors"), suffix=".txt")
    if messages:
        raise BuildError(read_bytes(messages[0]).decode("utf-8"))


def run_pipeline(config: BuildConfig, name: str, construct: Callable[..., None], *args: Any) -> dict[str, int]:
    """Build one pass with `construct(pipeline, *args)`, run it to completion, return its row counters.

    A given `--job_name` gets the pass's name appended, so that the passes are distinct jobs on a cluster.
    """
    options = pipeline_options(config)
    cloud = options.view_as(GoogleCloudOptions)
    if cloud.job_name:
        cloud.job_name = f"{cloud.job_name}-{name}"
    pipeline = beam.Pipeline(options=options)
    construct(pipeline, *args)
    result = pipeline.run()
    result.wait_until_finish()
    return read_counters(result)


def run_selection(config: BuildConfig, src: str, dst: str, candidate_files: list[str], thresholds: np.ndarray,
                  image_files: list[str]) -> dict[str, int]:
    """Stage 5 (both passes): `src`'s candidates at `thresholds` -> `dst`'s candidates and shards.

    Checks that every kept label and labelled image reached a shard; returns the passes' counters.
    """
    counters = run_pipeline(config, "select", select_candidates, src, dst, candidate_files, thresholds)
    n_shards = shards_per_split(dst, config.splits, config.rows_per_shard)
    counters.update(run_pipeline(config, "shards", write_shards, dst, image_files, config.splits, n_shards,
                                 config.include_content))
    raise_worker_errors(dst)
    check(counters, "labels, into shards", "kept_labels", "shard_labels")
    check(counters, "labelled images, into shards", "labelled_images", "shard_rows")
    fill_empty_shards(dst, n_shards)
    return counters


# --- inputs ----------------------------------------------------------------------------------------------


def taxonomy_source(crawl: str, config: BuildConfig) -> str | None:
    """The taxonomy file: the configured one, the crawl's, or None for the embedded default."""
    if config.taxonomy is not None:
        return config.taxonomy
    own = join(crawl, "taxonomy.parquet")
    return own if exists(own) else None


def image_ids(crawl: str) -> IdSet:
    """Every image id, checked unique and with a url (read without the image bytes)."""
    return IdSet(read_images(crawl, columns=["image_id", "url"]).column("image_id"))


@dataclass(frozen=True)
class Inputs:
    crawl: str
    signal_files: list[str]
    signal_pieces: list[SignalPiece]
    image_files: list[str]
    taxonomy_path: str | None
    taxonomy: Taxonomy
    signal_rows: int
    images: IdSet
    fingerprints: dict[str, str]


def read_inputs(crawl: str, out: str, config: BuildConfig) -> Inputs:
    signal_files = crawl_files(crawl, "signals")
    image_files = crawl_files(crawl, "images")
    taxonomy_path = taxonomy_source(crawl, config)
    taxonomy = load_taxonomy(taxonomy_path)
    pieces, signal_rows = plan_signal_reads(crawl, signal_files)
    images = image_ids(crawl)
    write_image_ids(out, images)
    read = [*image_files, *signal_files, *crawl_files(crawl, "taxonomy"), *crawl_files(crawl, "verified")]
    return Inputs(crawl, signal_files, pieces, image_files, taxonomy_path, taxonomy, signal_rows, images,
                  fingerprints(crawl, read, taxonomy_path))


# --- the build -------------------------------------------------------------------------------------------

def build(crawl: str | os.PathLike[str], out: str | os.PathLike[str], config: BuildConfig | None = None, *,
          overwrite: bool = False, progress: Progress | None = None, log: Log | None = None) -> BuildResult:
    """Build a dataset from a crawl (DESIGN.md contracts); returns the written manifest."""
    crawl, out = os.fspath(crawl).rstrip("/"), os.fspath(out).rstrip("/")
    config = config or BuildConfig()
    stages = Stages(progress, log)
    n_buckets = config.n_buckets

    stages.start("inputs")
    if not exists(crawl):
        raise BuildError(f"{crawl}: does not exist")
    prepare_out(out, overwrite)
    inputs = read_inputs(crawl, out, config)
    stages.note(f"crawl: {len(inputs.images):,} images, {inputs.signal_rows:,} signals in "
                f"{len(inputs.signal_files)} files, {len(inputs.taxonomy):,} classes")

    stages.start("read+aggregate")
    passes: dict[str, dict[str, int]] = {}
    passes["aggregate"] = counters = run_pipeline(
        config, "aggregate", candidate_features, crawl, out, inputs.signal_pieces, len(inputs.signal_files),
        inputs.taxonomy_path, n_buckets, config.max_text_chars,
    )
    raise_worker_errors(out)
    features = fill_empty_buckets(out, n_buckets)
    n_candidates = sum(footer_rows(path) for path in features)
    check(counters, "signal rows read", inputs.signal_rows, "signal_rows")
    check(counters, "rejected rows", "rejected_rows", "rejects_written")
    check(counters, "evidence, into the page join", "evidence_rows", "grouped_rows")
    check(counters, "evidence, into aggregation", "grouped_rows", "aggregated_rows")
    check(counters, "candidates", "candidates", n_candidates)
    stages.note(f"{n_candidates:,} candidates in {n_buckets} buckets")

    stages.start("fit scorer")
    pairs = verified_pairs(crawl, inputs.taxonomy, inputs.images)
    fitted = fit(features, pairs, n_buckets, config.seed, config.label_model_rows)
    if fitted.rejects is not None:
        write_dataset_file(fitted.rejects, out, layout.VERIFIED_REJECTS)
    if fitted.verified is not None:
        atomic_write_table(fitted.verified, join(out, layout.VERIFIED))
    stages.note(f"scorer: {fitted.describe()['method']}"
                + (f", {fitted.verified.num_rows:,} verified candidates, ECE {fitted.ece:.3f}"
                   if fitted.verified is not None and fitted.ece is not None else ""))

    stages.start("score")
    passes["score"] = counters = run_pipeline(config, "score", score_candidates, out, fitted.scorer, n_buckets,
                                              fitted.verified)
    histograms = read_histograms(out)
    check(counters, "candidates scored", n_candidates, "scored")
    check({"histograms": 1}, "candidates in score histograms", n_candidates,
          sum(histogram.total for histogram in histograms.values()))
    classes = choose_thresholds(histograms, fitted.verified, inputs.taxonomy, config.target_precision,
                                config.budget)

    stages.start("select+write")
    candidate_files = [layout.candidates(bucket, n_buckets) for bucket in range(n_buckets)]
    thresholds = classes.column("threshold").to_numpy()
    passes["select"] = run_selection(config, out, out, candidate_files, thresholds, inputs.image_files)

    stages.start("manifest")
    selection = {
        "target_precision": config.target_precision,
        "budget": config.budget,
        "scorer": fitted.describe(),
        "label_model": fitted.describe()["method"] == "label_model",
        "ece": fitted.ece,
        "verified": {
            "rows": fitted.verified_rows + (fitted.rejects.num_rows if fitted.rejects is not None else 0),
            "usable": fitted.verified_rows,
            "candidates": fitted.verified.num_rows if fitted.verified is not None else 0,
        },
        "signals": {"files": len(inputs.signal_files), "rows": inputs.signal_rows},
    }
    manifest = finish(out, classes=classes, config=recorded_config(config, crawl), inputs=inputs.fingerprints,
                      selection=selection, extra_files=[layout.VERIFIED])
    seconds = stages.done()
    stages.note(f"dataset {manifest.dataset_id}: {manifest.counts.images:,} images, {manifest.counts.labels:,} "
                f"labels in {len(manifest.shards)} shards ({seconds:.1f} s)")
    return BuildResult(out, manifest, seconds, stages.seconds, passes)


def recorded_config(config: BuildConfig, crawl: str) -> dict[str, Any]:
    """The manifest's config: output-deciding settings plus where the crawl is (reselect reads it)."""
    return {**config.recorded(), "crawl": crawl}
