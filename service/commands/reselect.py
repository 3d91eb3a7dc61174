"""`webjft reselect DATASET --target-precision P`: a new dataset version from the same candidates."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from service.commands.build import log_line, make_config, quiet_beam, summary_table, worker_output
from service.errors import one_line_errors
from service.progress import stage_progress


def reselect(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(metavar="DATASET", help="A complete dataset folder (with candidates/).")],
    target_precision: Annotated[float, typer.Option(help="New target precision of the kept labels.")],
    out: Annotated[str | None, typer.Option(help="New dataset folder (default: DATASET-p<target>).")] = None,
    runner: Annotated[str, typer.Option(help="Beam runner (see `webjft build --help`).")] = "FnApiRunner",
    overwrite: Annotated[bool, typer.Option(help="Replace a complete dataset already at --out.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show Beam's own log lines.")] = False,
) -> None:
    """Re-run selection (stage 5) at another target precision from DATASET's scored candidates.

    Seconds instead of a rebuild: scores are already in candidates/. Writes a new folder and leaves
    DATASET as it is; the crawl named in DATASET's manifest must still hold the same image files.
    """
    quiet_beam(verbose)
    make_config(target_precision=target_precision, runner=runner, pipeline_args=tuple(ctx.args))
    with one_line_errors():
        from pipelines.build import reselect as run_reselect

        with worker_output(verbose), stage_progress() as progress:
            result = run_reselect(dataset, target_precision, out, runner=runner, pipeline_args=tuple(ctx.args),
                                  overwrite=overwrite, progress=progress, log=log_line)
    Console().print(summary_table(result, f"dataset {result.path} (reselected)"))
