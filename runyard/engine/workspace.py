"""Each run's scratch directory: its input data files and the output dir it writes to."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import uuid
from collections.abc import Collection
from pathlib import Path

from runyard.domain.input_data import table_to_csv
from runyard.domain.models import Run
from runyard.domain.output_data import collect_output
from runyard.output import OUTPUT_DIR_ENV

INPUT_ENV = "RUNYARD_INPUT"
INPUT_CSV_ENV = "RUNYARD_INPUT_CSV"

# Directory operations are slow on some disks (mkdir 60 us, rmdir 70 us here),
# and a run needs a directory made before it starts and removed after it ends.
# Spare run directories are made ahead of time off the event loop and handed
# out as they are; a run that wrote nothing gives its directory back.
SPARE_PREFIX = ".spare-"
SPARES = 16

__all__ = ["INPUT_CSV_ENV", "INPUT_ENV", "OUTPUT_DIR_ENV", "Workspace"]


class Workspace:
    """Run directories under `root` (`<data_dir>/work`), one per running run."""

    def __init__(self, root: Path) -> None:
        # Absolute: the paths go into the environment of processes that run
        # in the task's own working_dir.
        self.root = root.absolute()
        # Taken on the event loop, added by fill_spares in a thread: list.pop
        # and list.append are atomic, so no lock is needed.
        self._spares: list[Path] = []
        self._dirs: dict[str, Path] = {}  # run id -> its directory, while it has one

    @property
    def needs_spares(self) -> bool:
        """Return whether fewer than half the spare directories are left."""
        return len(self._spares) < SPARES // 2

    def fill_spares(self) -> None:
        """Make spare run directories (with their `output/`) until SPARES wait; for a thread."""
        self.root.mkdir(parents=True, exist_ok=True)
        while len(self._spares) < SPARES:
            spare = self.root / f"{SPARE_PREFIX}{uuid.uuid4().hex}"
            os.mkdir(spare, 0o700)
            os.mkdir(spare / "output")
            self._spares.append(spare)

    def path(self, run_id: str) -> Path:
        """Return the run's directory (which may not exist)."""
        if not run_id or run_id in {".", ".."} or "/" in run_id or "\0" in run_id:
            raise ValueError(f"invalid run id {run_id!r}")
        return self._dirs.get(run_id) or self.root / run_id

    def prepare(self, run: Run) -> dict[str, str]:
        """Create the run's directory and input files; return the variables that point at them.

        Raise OSError when the files cannot be written.
        """
        run_dir = self._spares.pop() if self._spares and run.input_data is None else None
        if run_dir is None:
            # A directory left by an earlier daemon would mix its files into this run's data.
            self.remove(run.id)
            run_dir = self.path(run.id)
            self.root.mkdir(parents=True, exist_ok=True)
            run_dir.mkdir(mode=0o700)
            (run_dir / "output").mkdir()
        self._dirs[run.id] = run_dir
        output = run_dir / "output"
        env = {OUTPUT_DIR_ENV: str(output)}
        if run.input_data is not None:
            input_json = run_dir / "input.json"
            input_csv = run_dir / "input.csv"
            input_json.write_text(json.dumps(run.input_data, ensure_ascii=False), encoding="utf-8")
            first = table_to_csv(run.input_data[0]) if run.input_data else ""
            # newline="": the CSV text already holds its line ends.
            with input_csv.open("w", encoding="utf-8", newline="") as file:
                file.write(first)
            env[INPUT_ENV] = str(input_json)
            env[INPUT_CSV_ENV] = str(input_csv)
        return env

    def read_output(
        self, run_id: str, max_bytes: int
    ) -> tuple[dict[str, list[list[str]]], list[str]]:
        """Return (rows keyed by token, notes) from the run's output directory.

        Problems with what the run left there become notes, never exceptions.
        """
        output = self.path(run_id) / "output"
        if not output.is_dir():
            return {}, []
        files: list[tuple[str, bytes]] = []
        notes: list[str] = []
        try:
            entries = sorted(os.scandir(output), key=lambda entry: entry.name)
        except OSError as error:
            return {}, [f"Could not list the output directory: {error.strerror}."]
        for entry in entries:
            # Names are bytes on disk; undecodable ones must not reach the store as surrogates.
            name = entry.name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            if name.startswith("."):
                continue  # the output helper's temp files
            try:
                if entry.is_symlink():
                    notes.append(f"Ignored output file {name}: symbolic links are not read.")
                elif entry.is_dir(follow_symlinks=False):
                    notes.append(f"Ignored output directory {name}: subdirectories are not read.")
                elif not entry.is_file(follow_symlinks=False):
                    notes.append(f"Ignored output file {name}: not a regular file.")
                else:
                    content = _read_regular_file(entry.path, max_bytes + 1)
                    if content is None:
                        notes.append(f"Ignored output file {name}: not a regular file.")
                    else:
                        files.append((name, content))
            except OSError as error:
                notes.append(f"Ignored output file {name}: could not be read ({error.strerror}).")
        data, collected_notes = collect_output(files, max_bytes)
        return data, notes + collected_notes

    def recycle(self, run_id: str) -> bool:
        """Keep the run's directory as a spare if it holds only an empty `output/`.

        Return True when the run left nothing to read (its directory is then a
        spare, or gone); False when the caller must read its output and remove it.
        """
        run_dir = self.path(run_id)
        try:
            with os.scandir(run_dir) as entries:
                names = [entry.name for entry in entries]
            if names != ["output"]:
                return False
            with os.scandir(run_dir / "output") as entries:
                if next(entries, None) is not None:
                    return False
        except FileNotFoundError:
            self._dirs.pop(run_id, None)
            return not run_dir.exists()
        except OSError:
            return False
        del self._dirs[run_id]
        if len(self._spares) < SPARES and run_dir.name.startswith(SPARE_PREFIX):
            self._spares.append(run_dir)
        else:
            _remove_tree(run_dir)
        return True

    def remove(self, run_id: str) -> None:
        """Delete the run's directory, as far as possible; a missing one is fine.

        Never raises: what cannot be deleted now goes with remove_except at the next start.
        """
        _remove_tree(self.path(run_id))
        self._dirs.pop(run_id, None)

    def remove_except(self, keep: Collection[str]) -> None:
        """Delete the run directories a crashed daemon left behind, except those in `keep`."""
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.name not in keep and entry.is_dir(follow_symlinks=False):
                _remove_tree(Path(entry.path))
        self._spares = [spare for spare in self._spares if spare.name in keep]
        self._dirs = {run: path for run, path in self._dirs.items() if path.name in keep}


def _read_regular_file(path: str, limit: int) -> bytes | None:
    """Return up to `limit` bytes of the file, or None when it is not a regular file."""
    # O_NOFOLLOW and O_NONBLOCK: the run (or a child it left behind) may have
    # swapped in a symlink or a FIFO since the directory was listed, and opening
    # a FIFO would block the reader forever.
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks: list[bytes] = []
        remaining = limit
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1024 * 1024))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _remove_tree(path: Path) -> None:
    try:
        shutil.rmtree(path)
        return
    except FileNotFoundError:
        return
    except OSError:
        pass
    # Tools such as Go's module cache leave read-only directories behind, which
    # rmtree cannot empty; make every directory writable and try once more.
    with contextlib.suppress(OSError):
        _make_directories_writable(path)
    shutil.rmtree(path, ignore_errors=True)


def _make_directories_writable(path: Path) -> None:
    if path.is_symlink():
        return
    path.chmod(0o700)
    # Top-down, so each directory is opened up before os.walk tries to list it.
    for parent, directories, _files in os.walk(path):
        for name in directories:
            directory = os.path.join(parent, name)
            if not os.path.islink(directory):  # chmod would follow it out of the tree
                with contextlib.suppress(OSError):
                    os.chmod(directory, 0o700)
