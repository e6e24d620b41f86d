"""What the CLI prints: times in words and plain tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from runyard.cli.render import relative
from runyard.cli.text import Table, Text

NOW = datetime(2026, 3, 29, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        (timedelta(milliseconds=300), "now"),
        (timedelta(seconds=-42), "42 s ago"),
        (timedelta(minutes=2, seconds=30), "in 2 min"),
        (timedelta(hours=-3), "3 h ago"),
        (timedelta(hours=3, minutes=20), "in 3 h 20 min"),
        (timedelta(hours=30), "in 30 h"),
        (timedelta(days=-9, hours=-5), "9 d ago"),
    ],
)
def test_relative(offset: timedelta, expected: str) -> None:
    assert relative(NOW + offset, NOW) == expected


def _table() -> Table:
    table = Table()
    table.add_column("NAME")
    table.add_column("N", right=True)
    table.add_column("DESCRIPTION", shrinks=True)
    table.add_row("alpha", "7", Text("the first one", "dim"))
    table.add_row("b", "12", "")
    return table


def test_a_table_lines_up_its_columns() -> None:
    assert _table().lines(width=200, color=False) == [
        "NAME    N  DESCRIPTION",
        "alpha   7  the first one",
        "b      12",
    ]


def test_the_shrinking_column_gives_way_to_the_width() -> None:
    assert _table().lines(width=22, color=False) == [
        "NAME    N  DESCRIPTION",
        "alpha   7  the first …",
        "b      12",
    ]


def test_styles_only_when_coloured() -> None:
    lines = _table().lines(width=200, color=True)
    assert lines[0].startswith("\x1b[1mNAME\x1b[0m")
    assert "\x1b[2mthe first one\x1b[0m" in lines[1]
    # Text is never read as markup.
    assert Text("[red]x[/red]", "").styled(True) == "[red]x[/red]"
