"""`webjft validate PATH`: check a crawl or a dataset against its contract and summarise it."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from pipelines.formats import (
    MANIFEST,
    WARNINGS,
    CrawlSummary,
    DatasetSummary,
    FormatError,
    exists,
    join,
    validate_crawl,
    validate_dataset,
)

_DATASET_WARNINGS = {"classes_without_labels": "classes with no selected label"}


def _is_dataset(path: str) -> bool:
    """A dataset has a manifest, or at least shards/ (an unfinished build, reported as incomplete)."""
    return exists(join(path, MANIFEST)) or exists(join(path, "shards"))


def _crawl_table(summary: CrawlSummary) -> Table:
    table = Table(title=f"crawl {summary.path}", show_header=True)
    table.add_column("item")
    table.add_column("value", justify="right")
    for kind, rows in summary.rows.items():
        table.add_row(f"{kind} rows", f"{rows:,}")
    for kind, files in summary.files.items():
        table.add_row(f"{kind} files", f"{files:,}")
    table.add_row("classes", "-" if summary.n_classes is None else f"{summary.n_classes:,}")
    for source, count in summary.signals_per_source.items():
        table.add_row(f"signals from {source}", f"{count:,}")
    return table


def _dataset_table(summary: DatasetSummary) -> Table:
    table = Table(title=f"dataset {summary.dataset_id} ({summary.path})", show_header=True)
    table.add_column("item")
    table.add_column("value", justify="right")
    table.add_row("schema version", str(summary.schema_version))
    table.add_row("images", f"{summary.images:,}")
    table.add_row("labels", f"{summary.labels:,}")
    table.add_row("labels per image", f"{summary.labels_per_image:.2f}")
    table.add_row("classes", f"{summary.classes:,}")
    for split, images in summary.splits.items():
        table.add_row(f"{split} images", f"{images:,}")
    table.add_row("shards", f"{summary.shards:,}")
    table.add_row("other files", f"{summary.files:,}")
    return table


def _warnings_table(warnings: dict[str, int], meanings: dict[str, str]) -> Table:
    table = Table(title="warnings (rows a build would reject or flag)", show_header=True)
    table.add_column("warning")
    table.add_column("count", justify="right")
    table.add_column("meaning")
    for name, count in warnings.items():
        table.add_row(name, f"{count:,}", meanings.get(name, ""))
    return table


def validate(
    path: Annotated[
        str, typer.Argument(help="A crawl folder or a dataset folder (local path or fsspec URL).")
    ],
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit 1 when there are warnings, not only on errors.")
    ] = False,
) -> None:
    """Check a crawl or a dataset against the webjft file contracts and print a summary.

    Exits 2 with a one-line reason when the input breaks a contract.
    """
    console = Console()
    try:
        if _is_dataset(path):
            summary: CrawlSummary | DatasetSummary = validate_dataset(path)
            console.print(_dataset_table(summary))
            meanings = _DATASET_WARNINGS
        else:
            summary = validate_crawl(path)
            console.print(_crawl_table(summary))
            meanings = WARNINGS
    except FormatError as exc:
        typer.echo(f"error: {exc}", err=True)  # plain echo: rich would wrap the one line
        raise typer.Exit(2) from None
    if summary.warnings:
        console.print(_warnings_table(summary.warnings, meanings))
        if strict:
            total = sum(summary.warnings.values())
            typer.echo(f"error: {total} warning{'' if total == 1 else 's'} with --strict", err=True)
            raise typer.Exit(1)
    console.print("[green]valid[/green]")
