"""Write output data from a script runyard runs: `from runyard import output`.

    output.append("prices", ["apple", 1.25])
    output.write("summary", [["total", 3]])

Each token becomes `<token>.csv` in the run's output directory, which runyard
reads when the run ends and returns as the run's data. This module is imported
by user scripts, so it stays on the standard library.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from runyard.domain.output_data import TOKEN_RULE, is_valid_token
from runyard.domain.run_environment import OUTPUT_DIR_ENV


class OutputNotAvailable(RuntimeError):
    """The process was not started by runyard, so there is nowhere to write output."""


def output_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """Return the run's output directory; raise OutputNotAvailable outside a run."""
    value = environ.get(OUTPUT_DIR_ENV, "")
    if not value:
        raise OutputNotAvailable(
            f"{OUTPUT_DIR_ENV} is not set: output data can only be written by a process "
            "runyard runs."
        )
    return Path(value)


def append(token: str, row: Sequence[object], *, environ: Mapping[str, str] = os.environ) -> None:
    """Append one row to the token's data."""
    append_rows(token, [row], environ=environ)


def append_rows(
    token: str, rows: Iterable[Sequence[object]], *, environ: Mapping[str, str] = os.environ
) -> None:
    """Append rows to the token's data, creating it when it does not exist yet."""
    path = _token_path(token, environ)
    data = _csv_bytes(rows)
    # O_APPEND and one write() per call: the kernel then places each call's bytes
    # whole at the end of the file, so appends from several processes never mix
    # inside a line.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    try:
        _write_all(fd, data)
    finally:
        os.close(fd)


def write(
    token: str, rows: Iterable[Sequence[object]], *, environ: Mapping[str, str] = os.environ
) -> None:
    """Replace the token's data with `rows`."""
    path = _token_path(token, environ)
    data = _csv_bytes(rows)
    # runyard skips dot files, so a reader never sees the half-written temp file;
    # os.replace then swaps the whole file in at once.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _token_path(token: str, environ: Mapping[str, str]) -> Path:
    if not isinstance(token, str) or not is_valid_token(token):
        raise ValueError(f"invalid output token {token!r}: use {TOKEN_RULE}")
    return output_dir(environ) / f"{token}.csv"


def _csv_bytes(rows: Iterable[Sequence[object]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for row in rows:
        if isinstance(row, str | bytes):
            # A bare string is a Sequence too; it would become one cell per character.
            raise TypeError(f"a row must be a sequence of cells, not {type(row).__name__}")
        writer.writerow(["" if cell is None else str(cell) for cell in row])
    return buffer.getvalue().encode("utf-8")


def _write_all(fd: int, data: bytes) -> None:
    # A regular file takes the whole buffer in one write(); the loop only
    # matters on a short write (disk full, signal), where finishing beats losing data.
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
