"""`webjft demo`: the whole chain on the embedded default (the demo preset and the default taxonomy)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from pipelines.synthetic import generate_crawl, preset
from service.commands.synth import _print_summary
from service.commands.validate import validate
from service.errors import one_line_errors
from service.progress import stage_progress


def demo(
    out: Annotated[Path, typer.Option(help="Folder for everything the demo writes.")] = Path("demo-out"),
    seed: Annotated[int, typer.Option(help="Seed of the synthetic crawl.")] = 0,
    preset_name: Annotated[str, typer.Option("--preset", help="Crawl size preset.")] = "demo",
) -> None:
    """Run the main job end to end on the embedded default: make the demo crawl, then validate it."""
    console = Console()
    crawl = out / "crawl"
    with one_line_errors():
        console.rule("1/2 synthetic crawl")
        with stage_progress() as progress:
            result = generate_crawl(preset(preset_name, seed=seed), str(crawl), progress=progress, overwrite=True)
        _print_summary(result)
    console.rule("2/2 validate")
    validate(str(crawl), strict=True)
    console.print(f"[bold green]done[/]: crawl at {crawl.resolve()} "
                  f"(truth.parquet there is for evaluation only; synth.json has the generator's statistics)")
