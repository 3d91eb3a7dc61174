"""`webjft build CRAWL OUT`: turn a crawl into a dataset with the Beam pipeline (docs/build.md)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from service.errors import fail, one_line_errors
from service.progress import console, stage_progress

if TYPE_CHECKING:  # the build (and Beam, seconds to import) loads only when a command runs
    from pipelines.build import BuildConfig, BuildResult

BEAM_CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True}
"""Typer settings that let Beam pipeline options (`--project=...`, `--direct_num_workers=2`) through."""


def quiet_beam(verbose: bool) -> None:
    """Keep Beam's info and warning lines off the terminal unless asked: progress lines say what runs."""
    if verbose:
        logging.basicConfig(level=logging.INFO)
        return
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.NullHandler())  # else the first warning installs a stderr handler
    logging.getLogger("apache_beam").setLevel(logging.ERROR)


@contextmanager
def worker_output(verbose: bool) -> Iterator[None]:
    """Send the stderr of Beam's local worker processes to /dev/null unless --verbose.

    Those processes inherit file descriptor 2 and log every step there, burying the progress bars. While
    a build runs, fd 2 points at /dev/null and `sys.stderr` (progress, errors) at a copy of the terminal.
    """
    if verbose:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    original = sys.stderr
    try:
        real = original.fileno() == 2
    except (AttributeError, OSError, ValueError):  # replaced by a test runner: leave it
        real = False
    if real:
        sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, encoding=original.encoding, errors=original.errors)
    try:
        yield
    finally:
        sys.stderr.flush()
        if real:
            sys.stderr.close()
            sys.stderr = original
        os.dup2(saved, 2)
        os.close(saved)


def make_config(**settings) -> BuildConfig:
    """A BuildConfig, or a one-line error naming the bad setting and the unknown pipeline arguments."""
    from pipelines.build.config import BuildConfig, unknown_pipeline_args

    unknown = unknown_pipeline_args(settings.get("pipeline_args", ()))
    if unknown:
        fail(f"unknown option {unknown[0]} (not a webjft option nor a Beam pipeline option)")
    try:
        return BuildConfig(**settings)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        fail(f"{where}: {error['msg']}" if where else error["msg"])


def log_line(message: str) -> None:
    console.print(message, markup=False, highlight=False)


def summary_table(result: BuildResult, title: str) -> Table:
    manifest = result.manifest
    selection = manifest.selection
    table = Table(title=title, show_header=True)
    table.add_column("item")
    table.add_column("value", justify="right")
    table.add_row("dataset id", manifest.dataset_id)
    table.add_row("images", f"{manifest.counts.images:,}")
    table.add_row("labels", f"{manifest.counts.labels:,}")
    for split, counts in manifest.counts.splits.items():
        table.add_row(f"{split} images / labels", f"{counts.images:,} / {counts.labels:,}")
    table.add_row("candidates", f"{selection.get('candidates', 0):,}")
    table.add_row("classes with labels", f"{selection.get('classes_with_labels', 0):,}")
    expected = selection.get("expected_precision")
    table.add_row("target / expected precision",
                  f"{selection['target_precision']:g} / {'-' if expected is None else f'{expected:.3f}'}")
    table.add_row("scorer", str(selection.get("scorer", {}).get("method", "-")))
    ece = selection.get("ece")
    table.add_row("ECE (verified, out of fold)", "-" if ece is None else f"{ece:.3f}")
    for reason, count in selection.get("rejects_by_reason", {}).items():
        table.add_row(f"rejected: {reason}", f"{count:,}")
    table.add_row("shards", f"{len(manifest.shards):,}")
    table.add_row("seconds", " + ".join(f"{name} {seconds:.1f}" for name, seconds in result.stages.items()))
    return table


def build(
    ctx: typer.Context,
    crawl: Annotated[str, typer.Argument(metavar="CRAWL", help="Crawl folder (local path or fsspec URL).")],
    out: Annotated[str, typer.Argument(metavar="OUT", help="Dataset folder to write (local path or fsspec URL).")],
    target_precision: Annotated[float, typer.Option(help="Expected precision of the kept labels, per class.")] = 0.8,
    runner: Annotated[str, typer.Option(help="Beam runner: FnApiRunner (local, every core), PortableRunner, "
                                             "DataflowRunner, FlinkRunner, SparkRunner; see docs/runners.md.")
                      ] = "FnApiRunner",
    budget: Annotated[int | None, typer.Option(help="Keep at most this many labels overall.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the scorer; the same seed gives the same bytes.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace a complete dataset already at OUT.")] = False,
    n_buckets: Annotated[int, typer.Option(help="Hash buckets of the shuffles (and candidate files).")] = 64,
    rows_per_shard: Annotated[int, typer.Option(help="Target images per shard.")] = 20_000,
    content: Annotated[bool, typer.Option("--content/--no-content",
                                          help="Copy image bytes into the shards (--no-content: urls only).")
                       ] = True,
    taxonomy: Annotated[str | None, typer.Option(help="Taxonomy file (default: the crawl's taxonomy.parquet, "
                                                      "else the built-in one).")] = None,
    max_text_chars: Annotated[int, typer.Option(help="Reject signal texts longer than this.")] = 2000,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show Beam's own log lines.")] = False,
) -> None:
    """Build a dataset from a crawl: reject bad rows, match text to classes, aggregate evidence per
    (image, class), score it, keep labels per class at the target precision, write shards and manifest.

    Unknown --options are passed to Beam as pipeline options, e.g. --direct_num_workers=2 or, for
    Dataflow, --project/--region/--temp_location. A complete dataset at OUT needs --overwrite; an
    incomplete one (no manifest.json: an interrupted build) is replaced.
    """
    quiet_beam(verbose)
    config = make_config(target_precision=target_precision, budget=budget, seed=seed, n_buckets=n_buckets,
                         rows_per_shard=rows_per_shard, include_content=content, taxonomy=taxonomy,
                         max_text_chars=max_text_chars, runner=runner, pipeline_args=tuple(ctx.args))
    with one_line_errors():
        from pipelines.build import build as run_build

        with worker_output(verbose), stage_progress() as progress:
            result = run_build(crawl, out, config, overwrite=overwrite, progress=progress, log=log_line)
    Console().print(summary_table(result, f"dataset {result.path}"))
