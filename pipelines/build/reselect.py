"""`reselect()`: stage 5 again, from a finished dataset's candidates, at another target precision.

Scores are already in `candidates/`, so only the histograms (one pass over two columns), the thresholds
and the select+write pass run: seconds, not a rebuild. The result is a new dataset folder; the old one is
only read. Its candidate files are rewritten with the new `selected`, its rejects and verified pairs are
copied byte for byte, and the image rows come from the crawl the old manifest names, whose image files
must still have the fingerprints recorded there.
"""

from __future__ import annotations

import os

from labeling.selection import choose_thresholds
from pipelines.build import layout
from pipelines.build.config import DEFAULT_RUNNER, BuildConfig
from pipelines.build.errors import BuildError
from pipelines.build.finish import fingerprints, finish
from pipelines.build.histograms import histograms_of_candidates
from pipelines.build.read import load_taxonomy, relative
from pipelines.build.run import (
    BuildResult,
    Log,
    Progress,
    Stages,
    prepare_out,
    recorded_config,
    run_selection,
    taxonomy_source,
)
from pipelines.build.tables import read_table
from pipelines.formats import atomic_write_bytes, crawl_files, join, read_bytes, read_manifest


def default_out(dataset: str, target_precision: float) -> str:
    """`{dataset}-p{target}`, e.g. `ds-p0.9`."""
    return f"{dataset.rstrip('/')}-p{target_precision:g}"


def reselect(dataset: str | os.PathLike[str], target_precision: float, out: str | os.PathLike[str] | None = None,
             *, runner: str = DEFAULT_RUNNER, pipeline_args: tuple[str, ...] = (), overwrite: bool = False,
             progress: Progress | None = None, log: Log | None = None) -> BuildResult:
    """Write a new dataset version selected at `target_precision` from `dataset`'s candidates."""
    dataset = os.fspath(dataset).rstrip("/")
    out = os.fspath(out).rstrip("/") if out is not None else default_out(dataset, target_precision)
    stages = Stages(progress, log)

    stages.start("inputs")
    manifest = read_manifest(dataset)
    old = dict(manifest.config)
    crawl = old.pop("crawl", None)
    if crawl is None:
        raise BuildError(f"{dataset}: its manifest does not say which crawl it was built from")
    settings = {name: value for name, value in old.items() if name in BuildConfig.model_fields}
    config = BuildConfig(**{**settings, "target_precision": target_precision, "runner": runner,
                            "pipeline_args": tuple(pipeline_args)})
    prepare_out(out, overwrite, protect=dataset)
    image_files = crawl_files(crawl, "images")
    _check_unchanged(crawl, image_files, manifest.inputs)
    taxonomy = load_taxonomy(taxonomy_source(crawl, config))
    relpaths = [entry.path for entry in manifest.files]
    candidate_files = sorted(path for path in relpaths if path.startswith("candidates/"))

    stages.start("histograms")
    histograms = histograms_of_candidates([join(dataset, path) for path in candidate_files])
    verified = read_table(join(dataset, layout.VERIFIED)) if layout.VERIFIED in relpaths else None
    classes = choose_thresholds(histograms, verified, taxonomy, target_precision, config.budget)

    stages.start("select+write")
    for path in relpaths:
        if path.startswith("rejects/") or path == layout.VERIFIED:
            atomic_write_bytes(join(out, path), read_bytes(join(dataset, path)))
    thresholds = classes.column("threshold").to_numpy()
    counters = run_selection(config, dataset, out, candidate_files, thresholds, image_files)

    stages.start("manifest")
    keep = ("budget", "scorer", "label_model", "ece", "verified", "signals")
    selection = {
        **{key: manifest.selection[key] for key in keep if key in manifest.selection},
        "target_precision": target_precision,
        "reselected_from": manifest.dataset_id,
    }
    result = finish(out, classes=classes, config=recorded_config(config, crawl), inputs=manifest.inputs,
                    selection=selection, extra_files=[layout.VERIFIED])
    seconds = stages.done()
    stages.note(f"dataset {result.dataset_id}: {result.counts.images:,} images, {result.counts.labels:,} labels "
                f"at target {target_precision:g} ({seconds:.1f} s)")
    return BuildResult(out, result, seconds, stages.seconds, {"select": counters})


def _check_unchanged(crawl: str, image_files: list[str], recorded: dict[str, str]) -> None:
    """The image files must be those the dataset was built from (the shards take url and bytes from them)."""
    now = fingerprints(crawl, image_files, None)
    names = {relative(crawl, path) for path in image_files}
    before = {name for name in recorded if name.startswith("images/")}
    if names != before:
        raise BuildError(f"{crawl}: images/ holds other files than when the dataset was built")
    changed = sorted(name for name in names if now[name] != recorded[name])
    if changed:
        raise BuildError(f"{join(crawl, changed[0])}: changed since the dataset was built (sha256 differs)")
