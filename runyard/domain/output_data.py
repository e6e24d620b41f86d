"""Output data a run writes as files named `<token>.<ext>`, and how runyard reads them."""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from collections.abc import Sequence

from runyard.domain.input_data import cell_text, json_kind

TOKEN_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}$"
TOKEN_RE = re.compile(TOKEN_PATTERN)
TOKEN_RULE = "up to 100 letters, digits, spaces, '.', '_' or '-', starting with a letter or digit"
OUTPUT_EXTENSIONS = ("csv", "tsv", "json", "jsonl")
_EXTENSIONS_TEXT = ".csv, .tsv, .json and .jsonl"
_MIB = 1024 * 1024
# The most output data one run may write, unless [daemon] max_output_size says otherwise.
DEFAULT_MAX_OUTPUT_SIZE = 10 * _MIB
# Characters a file name may hold that would break a description's lines or
# rewrite what a terminal shows: C0/C1 controls (newline, ESC...), the Unicode
# line and paragraph separators, and the bidirectional overrides.
_UNPRINTABLE_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


def printable_name(name: str) -> str:
    """Return a file name fit for one line of a run's description: controls escaped.

    A run names its own files, so a name could otherwise forge description
    lines ("...\\nSucceeded") or terminal escape sequences; each such
    character becomes a visible escape such as `\\n`, `\\x1b` or `\\u202e`.
    """
    if name.isprintable():
        return name  # the common case, decided in C
    return "".join(_escaped(character) for character in name)


def _escaped(character: str) -> str:
    if unicodedata.category(character) in _UNPRINTABLE_CATEGORIES or character in _BIDI_CONTROLS:
        # repr's escapes (\n, \t, \x1b, \u2028); the quotes it adds are dropped.
        return repr(character)[1:-1]
    return character


class OutputDataError(ValueError):
    """An output file runyard cannot read; `message` names the file and the problem."""

    def __init__(self, filename: str, problem: str) -> None:
        self.filename = filename
        self.message = f"{printable_name(filename)}: {problem}"
        super().__init__(self.message)


def is_valid_token(name: str) -> bool:
    """Return whether `name` may be a token (and so the stem of an output file)."""
    # fullmatch: with match, "$" would also accept a trailing newline.
    return TOKEN_RE.fullmatch(name) is not None


def split_output_name(filename: str) -> tuple[str, str] | None:
    """Return (token, extension) for a file runyard reads, or None for another extension."""
    token, dot, extension = filename.rpartition(".")
    extension = extension.lower()
    if not dot or extension not in OUTPUT_EXTENSIONS:
        return None
    return token, extension


def parse_output_file(filename: str, content: bytes) -> tuple[str, list[list[str]]]:
    """Return (token, rows) read from one output file; raise OutputDataError."""
    parts = split_output_name(filename)
    if parts is None:
        raise OutputDataError(filename, f"only {_EXTENSIONS_TEXT} files are read")
    token, extension = parts
    if not is_valid_token(token):
        raise OutputDataError(filename, f"invalid token name {token!r}: use {TOKEN_RULE}")
    try:
        # utf-8-sig: spreadsheet programs often save CSV with a byte order mark.
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise OutputDataError(filename, f"not valid UTF-8 (byte {error.start})") from None
    if extension == "json":
        return token, _json_rows(filename, text)
    if extension == "jsonl":
        return token, _jsonl_rows(filename, text)
    return token, _csv_rows(filename, text, "\t" if extension == "tsv" else ",")


def _csv_rows(filename: str, text: str, delimiter: str) -> list[list[str]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        rows = list(reader)
    except csv.Error as error:
        kind = "TSV" if delimiter == "\t" else "CSV"
        raise OutputDataError(
            filename, f"not valid {kind} (line {reader.line_num}: {error})"
        ) from None
    while rows and not rows[-1]:
        rows.pop()
    return rows


def _json_rows(filename: str, text: str) -> list[list[str]]:
    value = _load_json(filename, text, line_offset=0)
    if not isinstance(value, list) or not all(isinstance(row, list) for row in value):
        raise OutputDataError(filename, "must hold a 2-D array (an array of rows of cells)")
    rows: list[list[str]] = []
    for row_number, row in enumerate(value, start=1):
        rows.append(_cells(filename, row, f"row {row_number}"))
    return rows


def _jsonl_rows(filename: str, text: str) -> list[list[str]]:
    rows: list[list[str]] = []
    # Split on "\n" only: splitlines() would also break at U+2028 and friends,
    # which JSON writers leave unescaped inside strings.
    for index, line in enumerate(text.split("\n")):
        if not line.strip():
            continue
        value = _load_json(filename, line, line_offset=index)
        if not isinstance(value, list):
            raise OutputDataError(filename, f"line {index + 1} is not a JSON array")
        rows.append(_cells(filename, value, f"line {index + 1}"))
    return rows


def _load_json(filename: str, text: str, line_offset: int) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        where = f"line {error.lineno + line_offset}, column {error.colno}"
        raise OutputDataError(filename, f"not valid JSON ({where}: {error.msg})") from None
    except RecursionError:
        raise OutputDataError(filename, "JSON nested too deeply") from None


def _cells(filename: str, row: list[object], where: str) -> list[str]:
    cells: list[str] = []
    for cell_number, cell in enumerate(row, start=1):
        text = cell_text(cell)
        if text is None:
            raise OutputDataError(
                filename,
                f"{where}, cell {cell_number} holds {json_kind(cell)}; "
                "cells must be strings, numbers, booleans or null",
            )
        cells.append(text)
    return cells


def collect_output(
    files: Sequence[tuple[str, bytes]], max_bytes: int
) -> tuple[dict[str, list[list[str]]], list[str]]:
    """Return (rows keyed by token, notes) for the files a run left in its output dir.

    Files are taken in name order. A file that cannot be used is left out with a
    note saying why; nothing here raises for what a script wrote.
    """
    data: dict[str, list[list[str]]] = {}
    sources: dict[str, str] = {}  # token -> the file its data came from
    notes: list[str] = []
    total = 0
    for filename, content in sorted(files, key=lambda file: file[0]):
        if filename.startswith("."):
            continue  # temp files of the output helper, mid-write
        shown = printable_name(filename)
        parts = split_output_name(filename)
        if parts is None:
            notes.append(f"Ignored output file {shown}: only {_EXTENSIONS_TEXT} files are read.")
            continue
        token = parts[0]
        if token in sources:
            # Both names are valid-token file names here: nothing to escape.
            notes.append(
                f"Ignored output file {shown}: {sources[token]} already holds "
                f"the data for token {token}."
            )
            continue
        if total + len(content) > max_bytes:
            notes.append(
                f"Ignored output file {shown}: output data is capped at "
                f"{max_bytes / _MIB:.1f} MiB per run."
            )
            continue
        try:
            token, rows = parse_output_file(filename, content)
        except OutputDataError as error:
            notes.append(_sentence(f"Ignored output file {error.message}"))
            continue
        total += len(content)
        data[token] = rows
        sources[token] = filename
    return data, notes


def _sentence(text: str) -> str:
    return text if text.endswith(".") else text + "."
