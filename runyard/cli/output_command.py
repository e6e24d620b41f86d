"""`runyard output`: a script inside a run appends rows to one of its outputs."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterable
from enum import StrEnum
from typing import Annotated, TextIO

import typer

from runyard.cli.client import CliError
from runyard.domain.run_environment import OUTPUT_DIR_ENV

_NO_OUTPUT_DIR = (
    f"${OUTPUT_DIR_ENV} is not set: `runyard output` works inside a run started by runyard"
)


class RowFormat(StrEnum):
    CSV = "csv"
    TSV = "tsv"  # tab-separated, no quoting: a cell holds no tab or newline
    JSONL = "jsonl"  # one JSON array of cells per line


def output_rows(
    token: Annotated[
        str, typer.Argument(metavar="TOKEN", help="Output name: the run's data under TOKEN")
    ],
    row_format: Annotated[
        RowFormat, typer.Option("--format", help="How stdin is written")
    ] = RowFormat.CSV,
) -> None:
    """Append the rows read from stdin to the current run's output TOKEN."""
    # Imported here: only a script inside a run needs them.
    from runyard import output
    from runyard.domain.output_data import TOKEN_RULE, is_valid_token

    # Checked before stdin is read: a mistake should fail at once, not after
    # the input (or, typed at a terminal, never) ends.
    if not is_valid_token(token):
        raise CliError(f"invalid output token {token!r}: use {TOKEN_RULE}", exit_code=2)
    try:
        output.output_dir()
    except output.OutputNotAvailable:
        raise CliError(_NO_OUTPUT_DIR, exit_code=2) from None
    stream = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8-sig", newline="")
    output.append_rows(token, read_rows(stream, row_format))


def read_rows(stream: TextIO, row_format: RowFormat) -> list[list[str]]:
    """Return the rows of `stream`, blank lines left out; a malformed one is a usage error."""
    try:
        if row_format is RowFormat.CSV:
            return _csv_rows(csv.reader(stream))
        if row_format is RowFormat.TSV:
            lines = (line.rstrip("\r\n") for line in stream)
            return [line.split("\t") for line in lines if line]
        return [_jsonl_row(number, line) for number, line in enumerate(stream, 1) if line.strip()]
    except UnicodeDecodeError:
        raise CliError("stdin is not UTF-8 text", exit_code=2) from None


def _csv_rows(reader: Iterable[list[str]]) -> list[list[str]]:
    try:
        return [row for row in reader if row]
    except csv.Error as error:
        raise CliError(f"stdin is not valid CSV: {error}", exit_code=2) from None


def _jsonl_row(number: int, line: str) -> list[str]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise CliError(f"stdin line {number}: invalid JSON: {error.msg}", exit_code=2) from None
    if not isinstance(row, list) or any(isinstance(cell, list | dict) for cell in row):
        raise CliError(
            f'stdin line {number}: expected an array of cells like ["a", "b"]', exit_code=2
        )
    return [_cell(value) for value in row]


def _cell(value: object) -> str:
    # As for input data: numbers and booleans become text, null the empty string.
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
