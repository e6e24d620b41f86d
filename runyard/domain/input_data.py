"""Input data a v3 caller sends as `data`: one table or several, cells as strings."""

from __future__ import annotations

import csv
import io
import json
import math
from decimal import Decimal

from runyard.domain.text import escape_unstorable, is_storable, text_problem

SHAPE_MESSAGE = "Data must be sent as an array of arrays."
CELL_MESSAGE = "Data cells must be strings, numbers, booleans or null"


class InputDataError(ValueError):
    """Input data of the wrong shape; `message` is the text for the API error body."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class UnstorableCell(InputDataError):
    """A cell whose text cannot be stored (NUL, a lone surrogate).

    `path` indexes the cell in the data as sent (`[row, column]` for one
    table, `[table, row, column]` for several), from 0; `problem` says what is
    wrong with it and `shown` is the cell with the offending characters escaped.
    """

    def __init__(self, message: str, path: tuple[int, ...], problem: str, shown: str) -> None:
        self.path = path
        self.problem = problem
        self.shown = shown
        super().__init__(message)

    @property
    def location(self) -> str:
        """Return the path as index brackets: `[0][1][0]`."""
        return "".join(f"[{index}]" for index in self.path)


def normalise_input(value: object) -> list[list[list[str]]]:
    """Return `value` (the parsed `data` field) as a list of tables of string cells.

    Depth 2 (rows of cells) is one table and depth 3 is several, because real
    clients send the first and the newer documentation describes the second.
    Raise InputDataError for any other shape or for a nested cell, and
    UnstorableCell for a cell whose text cannot be stored.
    """
    if not isinstance(value, list):
        raise InputDataError(SHAPE_MESSAGE)
    if not value:
        return [[]]
    items: list[object] = value
    three_d = all(isinstance(item, list) for item in items) and any(
        isinstance(cell, list) for item in items if isinstance(item, list) for cell in item
    )
    # The shape is judged as a whole before any cell, so a wrong shape always
    # gets the shape message, wherever a bad cell happens to sit.
    tables: list[list[list[object]]] = []
    for table in items if three_d else [items]:
        if not isinstance(table, list) or not all(isinstance(row, list) for row in table):
            raise InputDataError(SHAPE_MESSAGE)
        tables.append(table)
    return [
        _table(table, number, (number - 1,) if three_d else ())
        for number, table in enumerate(tables, start=1)
    ]


def _table(
    table: list[list[object]], table_number: int, prefix: tuple[int, ...]
) -> list[list[str]]:
    rows: list[list[str]] = []
    for row_number, row in enumerate(table, start=1):
        cells: list[str] = []
        for column_number, cell in enumerate(row, start=1):
            text = cell_text(cell)
            if text is None:
                raise InputDataError(
                    f"{CELL_MESSAGE}: table {table_number}, row {row_number}, "
                    f"column {column_number} holds {json_kind(cell)}."
                )
            cells.append(text)
        # One check of the joined row rather than one per cell: the row is
        # looked at cell by cell only when something in it is wrong.
        if not is_storable("".join(cells)):
            _refuse_row(cells, table_number, row_number, prefix)
        rows.append(cells)
    return rows


def _refuse_row(
    cells: list[str], table_number: int, row_number: int, prefix: tuple[int, ...]
) -> None:
    for column_number, text in enumerate(cells, start=1):
        problem = text_problem(text)
        if problem is not None:
            raise UnstorableCell(
                f"Data cell at table {table_number}, row {row_number}, "
                f"column {column_number} {problem}.",
                (*prefix, row_number - 1, column_number - 1),
                problem,
                escape_unstorable(text),
            )


def cell_text(cell: object) -> str | None:
    """Return a cell as the string JavaScript's String() gives; None if it is not a scalar.

    The hosted service's clients are JavaScript, so a number must read the same
    as it did on their side: 2.0 is "2", true is "true", null is "".
    """
    if cell is None:
        return ""
    if isinstance(cell, str):
        return cell
    # bool first: it is a subclass of int, and str(True) would give "True".
    if isinstance(cell, bool):
        return "true" if cell else "false"
    if isinstance(cell, int):
        return str(cell)
    if isinstance(cell, float):
        return _number_text(cell)
    return None


def json_kind(value: object) -> str:
    """Return what JSON calls the value's type, with its article ("an object", "an array")."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if value is None:
        return "null"
    return f"a {type(value).__name__}"


def _number_text(number: float) -> str:
    """Return the float as ECMAScript's Number::toString writes it."""
    # json.loads accepts NaN and Infinity (and Python's json.dumps writes them).
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    if number == 0:
        return "0"  # String(-0) is "0" too
    # repr gives the shortest digits that round-trip, as JavaScript does; only
    # the layout (where the point goes, when to use an exponent) differs.
    _sign, digit_tuple, exponent = Decimal(repr(abs(number))).as_tuple()
    assert isinstance(exponent, int)  # finite, checked above
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    exponent += len(digit_tuple) - len(digits)
    count = len(digits)
    point = exponent + count  # the decimal point sits after this many digits
    if count <= point <= 21:
        text = digits + "0" * (point - count)
    elif 0 < point <= 21:
        text = f"{digits[:point]}.{digits[point:]}"
    elif -6 < point <= 0:
        text = "0." + "0" * -point + digits
    else:
        mantissa = digits if count == 1 else f"{digits[0]}.{digits[1:]}"
        text = f"{mantissa}e{'+' if point > 0 else '-'}{abs(point - 1)}"
    return "-" + text if number < 0 else text


def table_to_csv(table: list[list[str]]) -> str:
    """Return the table as CSV text, one "\\n"-terminated line per row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerows(table)
    return buffer.getvalue()


def input_json(tables: list[list[list[str]]]) -> str:
    """Return input data as the JSON text runyard stores and hands to runs."""
    return json.dumps(tables, separators=(",", ":"), ensure_ascii=False)
