"""The error a build stops with: one line, naming the input or output that is at fault."""

from __future__ import annotations


class BuildError(ValueError):
    """A build cannot go on (unreadable input, an existing dataset in the way, a bad config).

    A ValueError so that the command line reports it as its one-line reason (`service.errors`).
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
