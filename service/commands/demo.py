"""`webjft demo`: the whole chain on the embedded default (the demo preset and the default taxonomy)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from pipelines.synthetic import generate_crawl, preset
from service.commands.noise import noise
from service.commands.synth import _print_summary
from service.commands.validate import validate
from service.errors import one_line_errors
from service.progress import stage_progress

TARGETS = (0.7, 0.8, 0.9)


def demo(
    out: Annotated[Path, typer.Option(help="Folder for everything the demo writes.")] = Path("demo-out"),
    seed: Annotated[int, typer.Option(help="Seed of the synthetic crawl.")] = 0,
    preset_name: Annotated[str, typer.Option("--preset", help="Crawl size preset.")] = "demo",
) -> None:
    """Run the main job end to end on the embedded default: make the demo crawl, validate it, build datasets
    at three target precisions, measure them against the crawl's truth, and estimate their label noise."""
    # Beam loads only when a command needs it, so that `webjft --help` and the other commands stay fast.
    from pipelines.build import BuildConfig, build, reselect
    from pipelines.evaluate import label_quality

    console = Console()
    crawl = out / "crawl"
    datasets = {target: out / f"dataset-p{target}" for target in TARGETS}
    with one_line_errors():
        console.rule("1/4 synthetic crawl")
        with stage_progress() as progress:
            result = generate_crawl(preset(preset_name, seed=seed), str(crawl), progress=progress, overwrite=True)
        _print_summary(result)
        console.rule("2/4 validate")
        validate(str(crawl), strict=True)
        console.rule("3/4 build (Beam, local runner) and reselect at other targets")
        config = BuildConfig(target_precision=0.8, pipeline_args=("--direct_running_mode=in_memory",))
        with stage_progress() as progress:
            build(str(crawl), str(datasets[0.8]), config, overwrite=True, progress=progress)
            for target in (0.7, 0.9):
                reselect(str(datasets[0.8]), target, str(datasets[target]), overwrite=True, progress=progress,
                         pipeline_args=("--direct_running_mode=in_memory",))
        table = Table(title="label quality against the crawl's truth (which the build never reads)")
        for column in ("target", "estimated", "achieved precision", "recall", "labels", "dataset"):
            table.add_column(column, justify="left" if column == "dataset" else "right")
        for target, path in datasets.items():
            quality = label_quality(str(path), str(crawl))
            estimated = "-" if quality.estimated_precision is None else f"{quality.estimated_precision:.3f}"
            table.add_row(f"{target:.1f}", estimated, f"{quality.precision:.3f}", f"{quality.recall:.3f}",
                          f"{quality.labels:,}", str(path))
        console.print(table)
    console.rule("4/4 label noise of the 0.8 dataset (open_clip embeddings + k-means, Sun et al. Fig. 2)")
    noise(str(datasets[0.8]))
    console.print(f"[bold green]done[/]: crawl at {crawl.resolve()}, datasets at "
                  f"{', '.join(str(p.resolve()) for p in datasets.values())} "
                  f"(truth.parquet is for evaluation only; noise/fig2.png in the 0.8 dataset is the noise curve)")
