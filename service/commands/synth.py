"""`webjft synth`: write a synthetic crawl with known truth."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from pipelines.synthetic import PRESETS, generate_crawl, preset
from service.errors import one_line_errors
from service.progress import stage_progress


def synth(
    out: Annotated[str, typer.Argument(help="Folder to write the crawl to (local path or fsspec URL).")],
    preset_name: Annotated[str, typer.Option("--preset", help=f"Size preset: {', '.join(PRESETS)}.")] = "demo",
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives byte-identical files.")] = 0,
    images: Annotated[bool, typer.Option("--images/--no-images",
                                         help="Render JPEG content (--no-images leaves content null).")] = True,
    n_images: Annotated[int | None, typer.Option(help="Override the preset's number of images.")] = None,
    n_classes: Annotated[int | None, typer.Option(help="Override the preset's number of active classes.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace OUT if it already holds files.")] = False,
    workers: Annotated[int | None, typer.Option(help="Processes rendering images (default: one per core); "
                                                     "the output is the same for any number.")] = None,
) -> None:
    """Make a synthetic web crawl: real JPEGs, six noisy web sources, a verified sample and the truth.

    Presets: tiny (seconds, for tests), demo (20k images, 1k classes), bench (1M images, ~10M signals,
    the whole taxonomy). truth.parquet is for evaluation only; synth.json records the parameters and the
    statistics actually realised.
    """
    with one_line_errors():
        overrides = {"images": images}
        if n_images is not None:
            overrides["n_images"] = n_images
        if n_classes is not None:
            overrides["n_classes"] = n_classes
        config = preset(preset_name, seed=seed, **overrides)
        with stage_progress() as progress:
            result = generate_crawl(config, out, progress=progress, overwrite=overwrite, workers=workers)
    _print_summary(result)


def _print_summary(result) -> None:
    stats = result.stats
    table = Table(title=f"synthetic crawl: {result.path}", show_header=True)
    for column in ("source", "rows", "accuracy", "no class", "spam rows"):
        table.add_column(column, justify="right" if column != "source" else "left")
    for source, s in stats["sources"].items():
        accuracy = "-" if s["accuracy"] is None else f"{s['accuracy']:.3f}"
        table.add_row(source, f"{s['rows']:,}", accuracy, f"{s['no_class_fraction']:.3f}", f"{s['spam_rows']:,}")
    console = Console()
    console.print(table)
    console.print(
        f"{stats['images']:,} images, {stats['signals']:,} signals, {stats['labels_per_image']:.3f} labels/image, "
        f"{stats['labelled_classes']:,} labelled classes, {stats['pages']:,} pages ({stats['spam_pages']:,} spam), "
        f"{stats['verified']:,} verified pairs; {result.seconds:.1f} s"
    )
