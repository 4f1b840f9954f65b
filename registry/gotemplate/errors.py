"""The one error type of the Go-template engine: bad syntax, a failed execution, or a blown budget."""

from __future__ import annotations


class TemplateError(ValueError):
    """A template that does not parse, fails while executing, or exceeds a size, depth or step cap.

    ``line`` and ``col`` (1-based) locate the problem in the template source when it is known.
    """

    def __init__(self, message: str, line: int | None = None, col: int | None = None) -> None:
        where = f"{line}:{col}: " if line is not None else ""
        super().__init__(f"template: {where}{message}")
        self.message = message
        self.line = line
        self.col = col


def position(source: str, offset: int) -> tuple[int, int]:
    """1-based (line, column) of a character offset, for error messages."""
    line = source.count("\n", 0, offset) + 1
    col = offset - (source.rfind("\n", 0, offset) + 1) + 1
    return line, col
