"""The one error type that every format reader, writer and validator raises on bad input."""

from __future__ import annotations


class FormatError(ValueError):
    """A file does not follow its contract.

    Carries the offending `path`, the `column` (None when the problem is about the whole file) and the
    `problem`; `str()` is a single line, "{path}: {column}: {problem}", so that command-line tools can
    print it as their one-line reason for failing.
    """

    def __init__(self, path: str, column: str | None, problem: str) -> None:
        self.path = str(path)
        self.column = column
        # Arrow and pydantic messages can span lines; the contract is one line.
        self.problem = " ".join(str(problem).split())
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.column is None:
            return f"{self.path}: {self.problem}"
        return f"{self.path}: {self.column}: {self.problem}"

    def __reduce__(self):  # keeps the three fields through pickling (Beam workers, multiprocessing)
        return (type(self), (self.path, self.column, self.problem))
