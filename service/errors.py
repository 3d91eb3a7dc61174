"""One place that turns expected failures into a one-line message and a non-zero exit."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console

_stderr = Console(stderr=True, highlight=False, soft_wrap=True)

# Failures caused by the user's input or environment, reported without a traceback.
EXPECTED = (ValueError, FileNotFoundError, FileExistsError, KeyError, PermissionError, OSError)


def fail(message: str, code: int = 2) -> None:
    """Print `error: message` on one line to stderr and exit with `code`."""
    _stderr.print(f"error: {' '.join(str(message).split())}", markup=False)
    raise typer.Exit(code)


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Run a command body; expected failures become `error: ...` and exit code 2."""
    try:
        yield
    except EXPECTED as exc:
        text = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        fail(str(text))
