"""Plain terminal output: styled text and column-aligned tables.

The CLI's tables are simple (one line per row), so a few lines here replace a
rich-text library whose import alone cost a sixth of a command's time. Styles
are ANSI colours, written only to a terminal and never when $NO_COLOR is set.
Text is written as given: task descriptions and log lines come from users and
are never read as markup.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from typing import TextIO

_STYLES = {
    "bold": "1",
    "dim": "2",
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "cyan": "36",
}
_RESET = "\x1b[0m"
_ELLIPSIS = "…"
# Room for a table when stdout is a pipe: wide enough never to cut a run id.
_PIPE_WIDTH = 200


@dataclass(frozen=True)
class Text:
    """A piece of text and the style it is shown in on a terminal."""

    plain: str
    style: str = ""

    def styled(self, color: bool) -> str:
        codes = ";".join(_STYLES[name] for name in self.style.split() if name in _STYLES)
        if not color or not codes or not self.plain:
            return self.plain
        return f"\x1b[{codes}m{self.plain}{_RESET}"


Cell = Text | str


@dataclass(frozen=True)
class _Column:
    header: str
    right: bool  # right-justified (numbers)
    shrinks: bool  # cut to fit the width, the only column that is


class Table:
    """Rows of cells under bold headers, each column as wide as its widest cell."""

    def __init__(self, *, headers: bool = True, gap: int = 2) -> None:
        self._columns: list[_Column] = []
        self._rows: list[list[Text]] = []
        self._headers = headers
        self._gap = gap

    def add_column(self, header: str = "", *, right: bool = False, shrinks: bool = False) -> None:
        self._columns.append(_Column(header, right, shrinks))

    def add_row(self, *cells: Cell) -> None:
        self._rows.append([cell if isinstance(cell, Text) else Text(cell) for cell in cells])

    def lines(self, width: int, color: bool) -> list[str]:
        """Return the table as lines at most `width` wide (the shrinking column gives way)."""
        rows = [[Text(column.header, "bold") for column in self._columns]] if self._headers else []
        rows += self._rows
        widths = [
            max((len(row[i].plain) for row in rows), default=0) for i in range(len(self._columns))
        ]
        spare = width - (sum(widths) + self._gap * (len(widths) - 1))
        for i, column in enumerate(self._columns):
            if spare < 0 and column.shrinks:
                widths[i] = max(len(column.header), widths[i] + spare)
        gap = " " * self._gap
        out = []
        for row in rows:
            cells = [
                _fit(cell, widths[i], self._columns[i].right, color) for i, cell in enumerate(row)
            ]
            out.append(gap.join(cells).rstrip())
        return out


def _fit(cell: Text, width: int, right: bool, color: bool) -> str:
    text = cell.plain
    if len(text) > width:
        text = text[: max(width - 1, 0)] + _ELLIPSIS
    padding = " " * (width - len(text))
    shown = Text(text, cell.style).styled(color)
    return padding + shown if right else shown + padding


class Console:
    """Where a command prints: stdout or stderr, coloured only on a terminal."""

    def __init__(self, stderr: bool = False) -> None:
        self.stream: TextIO = sys.stderr if stderr else sys.stdout
        self.is_terminal = _isatty(self.stream)
        self.color = self.is_terminal and not os.environ.get("NO_COLOR")

    @property
    def width(self) -> int:
        if not self.is_terminal and "COLUMNS" not in os.environ:
            return _PIPE_WIDTH
        return shutil.get_terminal_size((_PIPE_WIDTH, 24)).columns

    def print(self, item: Cell | Table = "") -> None:
        if isinstance(item, Table):
            lines = item.lines(self.width, self.color)
        elif isinstance(item, Text):
            lines = [item.styled(self.color)]
        else:
            lines = [item]
        self.stream.write("".join(line + "\n" for line in lines))
        self.stream.flush()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
