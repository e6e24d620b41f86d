"""Large input data: one pair of files per run in `<data_dir>/inputs/`, never in the daemon's heap.

A run whose input data (as JSON) reaches INLINE_INPUT_BYTES keeps it here
instead of in its row: `<id[:6]>/<run id>.json` (the tables, as the run gets
them in `$RUNYARD_INPUT`) and `<run id>.csv` (the first table, as
`$RUNYARD_INPUT_CSV`). They are written once, before the run's row is
committed, by whoever parsed the request (a worker process for large bodies),
copied into the run's directory when it starts, read back only by the
endpoints that show one run's data, and deleted with the run's log by
retention. Retries and replicas share them through hard links: each run has
its own names, the data is stored once, and deleting one run's files leaves
the others'.

Everything here is blocking file I/O: call it from a thread or a worker process.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

from runyard.domain.input_data import table_to_csv
from runyard.store.files import PRIVATE_FILE_MODE, make_private_directory

INPUTS_DIR = "inputs"  # in the data dir
# Input data from this size (its JSON, in bytes) goes to a file; smaller input
# stays in the run's row (and in memory while the run waits: at most this much
# per queued run, which keeps small triggers as cheap as they were).
INLINE_INPUT_BYTES = 64 * 1024
JSON_SUFFIX = ".json"
CSV_SUFFIX = ".csv"


class InputFiles:
    """The input files of runs under `root` (`<data_dir>/inputs`)."""

    def __init__(self, root: Path) -> None:
        self.root = root.absolute()

    def json_path(self, run_id: str) -> Path:
        """Return the path of the run's input tables as JSON (which may not exist)."""
        return self._directory(run_id) / f"{run_id}{JSON_SUFFIX}"

    def csv_path(self, run_id: str) -> Path:
        """Return the path of the run's first input table as CSV (which may not exist)."""
        return self._directory(run_id) / f"{run_id}{CSV_SUFFIX}"

    def write(self, run_id: str, tables: list[list[list[str]]]) -> int:
        """Write the run's input files; return the size of the JSON in bytes."""
        text = json.dumps(tables, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        self.write_encoded(run_id, text, table_to_csv(tables[0]) if tables else "")
        return len(text)

    def write_encoded(self, run_id: str, json_text: bytes, csv_text: str) -> None:
        """Write the run's input files from their text (JSON as UTF-8 bytes)."""
        make_private_directory(self._directory(run_id))
        _write_new(self.json_path(run_id), json_text)
        _write_new(self.csv_path(run_id), csv_text.encode("utf-8"))

    def link(self, source_id: str, run_id: str) -> None:
        """Give run `run_id` the input files of `source_id` (a retry, a replica)."""
        make_private_directory(self._directory(run_id))
        for source, target in (
            (self.json_path(source_id), self.json_path(run_id)),
            (self.csv_path(source_id), self.csv_path(run_id)),
        ):
            with contextlib.suppress(FileExistsError):
                os.link(source, target)

    def copy_into(self, run_id: str, json_target: Path, csv_target: Path) -> None:
        """Copy the run's input files to the paths its process reads.

        A copy, not a link: the process may change its files, never the record.
        Raise OSError when they cannot be read or written.
        """
        for source, target in (
            (self.json_path(run_id), json_target),
            (self.csv_path(run_id), csv_target),
        ):
            fd = os.open(
                target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE_MODE
            )
            with open(source, "rb") as reader, open(fd, "wb") as writer:
                shutil.copyfileobj(reader, writer, 1024 * 1024)

    def read_text(self, run_id: str) -> str | None:
        """Return the run's input tables as JSON text, or None when it has no file."""
        try:
            return self.json_path(run_id).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def read_tables(self, run_id: str) -> list[list[list[str]]] | None:
        """Return the run's input tables, or None when it has no file."""
        text = self.read_text(run_id)
        return None if text is None else json.loads(text)

    def delete(self, run_id: str) -> None:
        """Delete the run's input files; missing ones are fine."""
        for path in (self.json_path(run_id), self.csv_path(run_id)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _directory(self, run_id: str) -> Path:
        if not run_id or "/" in run_id or "\0" in run_id or run_id.startswith("."):
            raise ValueError(f"invalid run id {run_id!r}")
        # Buckets like the logs': ULIDs start with their timestamp.
        return self.root / run_id[:6]


def _write_new(path: Path, data: bytes) -> None:
    """Write `path` whole or not at all (a temporary name, then a rename)."""
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    try:
        with open(fd, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
