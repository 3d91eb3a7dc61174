"""The `webjft` command line: one module per command under `service/commands/`."""

from __future__ import annotations

import typer

from service.commands import taxonomy
from service.commands.build import BEAM_CONTEXT, build
from service.commands.demo import demo
from service.commands.noise import noise
from service.commands.reselect import reselect
from service.commands.synth import synth
from service.commands.validate import validate

app = typer.Typer(
    name="webjft",
    help="Build JFT-style noisy-label image datasets from web signals.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command()(synth)
app.command()(validate)
app.add_typer(taxonomy.app, name="taxonomy")
app.command()(demo)
app.command()(noise)
app.command(context_settings=BEAM_CONTEXT)(build)
app.command(context_settings=BEAM_CONTEXT)(reselect)

if __name__ == "__main__":
    app()
