"""Each run's scratch directory: its input data files and the output dir it writes to."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import uuid
from collections.abc import Collection
from pathlib import Path

from runyard.domain.input_data import table_to_csv
from runyard.domain.models import Run
from runyard.domain.output_data import collect_output, printable_name
from runyard.domain.run_environment import INPUT_CSV_ENV, INPUT_ENV, OUTPUT_DIR_ENV
from runyard.engine.identity import RunAs
from runyard.store.files import (
    PRIVATE_DIRECTORY_MODE,
    PRIVATE_FILE_MODE,
    make_passable_directory,
    make_private_directory,
)
from runyard.store.inputs import InputFiles

# Directory operations are slow on some disks (mkdir 130 us, rmdir 150 us here),
# and a run needs a directory made before it starts and removed after it ends.
# Spare run directories are made ahead of time off the event loop and handed
# out as they are; the empty directories of ended runs are removed in the same
# thread. A directory serves one run only, ever: a process a run left behind
# may still hold it open, and must never see another run's files there. One
# directory per run, no nesting: the run's directory is its output directory.
SPARE_PREFIX = ".spare-"
INPUT_SUFFIX = ".input"  # <run id>.input/ holds the input data files of a run that has them
SPARES = 32
WORK_DIR = "work"  # in the data dir

__all__ = ["Workspace"]


class Workspace:
    """Run directories under `root` (`<data_dir>/work`), one per running run.

    A run's directory is its `$RUNYARD_OUTPUT_DIR`; a run triggered with input
    data also gets `<run id>.input/` beside it, holding its input files.
    """

    def __init__(self, root: Path) -> None:
        # Absolute: the paths go into the environment of processes that run
        # in the task's own working_dir.
        self.root = root.absolute()
        # Taken on the event loop, added by upkeep in a thread (and the other
        # way round for _discarded): list.pop and list.append are atomic, so no
        # lock is needed.
        self._spares: list[Path] = []
        self._discarded: list[Path] = []  # empty directories of ended runs, to remove
        self._dirs: dict[str, Path] = {}  # run id -> its directory, while it has one
        self._with_input: set[str] = set()  # runs that have an input directory
        self._passable = False  # whether the data dir and root are 0711 (see _hand_over)

    @property
    def needs_upkeep(self) -> bool:
        """Return whether fewer than half the spares are left, or as many ended runs' dirs wait."""
        return len(self._spares) < SPARES // 2 or len(self._discarded) >= SPARES // 2

    def upkeep(self) -> None:
        """Remove the discarded directories of ended runs and make spares; for a thread."""
        while self._discarded:
            run_dir = self._discarded.pop()
            try:
                os.rmdir(run_dir)  # rmtree would list it first
            except OSError:
                _remove_tree(run_dir)  # something was written there since
        self.fill_spares()

    def fill_spares(self) -> None:
        """Make spare run directories until SPARES wait; for a thread."""
        self._make_root()
        while len(self._spares) < SPARES:
            spare = self.root / f"{SPARE_PREFIX}{uuid.uuid4().hex}"
            os.mkdir(spare, PRIVATE_DIRECTORY_MODE)
            self._spares.append(spare)

    def _make_root(self) -> None:
        make_private_directory(self.root)

    def path(self, run_id: str) -> Path:
        """Return the run's directory, its output directory (which may not exist)."""
        if not run_id or run_id in {".", ".."} or "/" in run_id or "\0" in run_id:
            raise ValueError(f"invalid run id {run_id!r}")
        return self._dirs.get(run_id) or self.root / run_id

    def input_path(self, run_id: str) -> Path:
        """Return the directory of the run's input files (which may not exist)."""
        return self.root / f"{self.path(run_id).name}{INPUT_SUFFIX}"

    def prepare(
        self, run: Run, inputs: InputFiles | None = None, owner: RunAs | None = None
    ) -> dict[str, str]:
        """Create the run's directory and input files; return the variables that point at them.

        Inline input data is written out; input data kept in `inputs` is
        copied from there. With `owner` (a task's `user`), the directories and
        files are that user's, and the data dir and work/ let them pass through
        (0711). Raise OSError when the files cannot be written.
        """
        run_dir = self._spares.pop() if self._spares and not run.has_input else None
        if run_dir is None:
            run_dir = self._make_run_dir(run)
        self._dirs[run.id] = run_dir
        env = {OUTPUT_DIR_ENV: str(run_dir)}
        if run.has_input:
            input_dir = self.input_path(run.id)
            self._with_input.add(run.id)
            os.mkdir(input_dir, PRIVATE_DIRECTORY_MODE)
            input_json = input_dir / "input.json"
            input_csv = input_dir / "input.csv"
            if run.input_data is None:
                if inputs is None:
                    raise ValueError(f"run {run.id}: its input is in a file; no InputFiles given")
                inputs.copy_into(run.id, input_json, input_csv)
            else:
                _write_private(input_json, json.dumps(run.input_data, ensure_ascii=False))
                _write_private(input_csv, table_to_csv(run.input_data[0]) if run.input_data else "")
            env[INPUT_ENV] = str(input_json)
            env[INPUT_CSV_ENV] = str(input_csv)
        if owner is not None:
            self._hand_over(run.id, owner)
        return env

    def _make_run_dir(self, run: Run) -> Path:
        """Make the run's own directory (no spare was left, or it has input data)."""
        run_dir = self.path(run.id)
        if not run.has_input:
            # On the event loop (no spare was left): one mkdir when nothing is
            # in the way, which is always but after a crash.
            try:
                os.mkdir(run_dir, PRIVATE_DIRECTORY_MODE)
                return run_dir
            except OSError as error:
                if not isinstance(error, FileExistsError | FileNotFoundError):
                    raise
        # A directory left by an earlier daemon would mix its files into this run's data.
        self.remove(run.id)
        self._make_root()
        os.mkdir(run_dir, PRIVATE_DIRECTORY_MODE)
        return run_dir

    def _hand_over(self, run_id: str, owner: RunAs) -> None:
        """Give the run's directories and input files to `owner`; open the way to them."""
        if not self._passable:
            make_passable_directory(self.root.parent)  # the data dir
            make_passable_directory(self.root)
            self._passable = True
        blocked = _first_impassable(self.root.parent, owner)
        if blocked is not None:
            raise PermissionError(
                f"user {owner.name!r} cannot reach the run's directory: {blocked} does not "
                "let them pass; put the data dir where they can (e.g. under /var/lib)"
            )
        paths = [self.path(run_id)]
        if run_id in self._with_input:
            input_dir = self.input_path(run_id)
            paths += [input_dir, *(input_dir / name for name in os.listdir(input_dir))]
        for path in paths:
            os.chown(path, owner.uid, owner.gid, follow_symlinks=False)

    def read_output(
        self, run_id: str, max_bytes: int
    ) -> tuple[dict[str, list[list[str]]], list[str]]:
        """Return (rows keyed by token, notes) from the run's output directory.

        Problems with what the run left there become notes, never exceptions. A
        directory the run replaced by a symbolic link is not followed: the files
        there could be anyone's.
        """
        try:
            output_fd = _open_directory(self.path(run_id))
        except FileNotFoundError:
            return {}, []
        except OSError as error:
            return {}, [_refusal(self.path(run_id), error)]
        try:
            return _read_output_directory(output_fd, max_bytes)
        finally:
            os.close(output_fd)

    def collect(self, run_id: str, max_bytes: int) -> tuple[dict[str, list[list[str]]], list[str]]:
        """Read the run's output (as read_output), then remove its directory; for a thread."""
        try:
            return self.read_output(run_id, max_bytes)
        finally:
            self.remove(run_id)

    def discard_if_empty(self, run_id: str) -> bool:
        """Give up the run's directory, to be removed later, if the run left it empty.

        Return True when the run left nothing to read (its directory is then
        queued for removal, or gone); False when the caller must collect it.
        A run with input data always has something to collect: its input files.
        """
        run_dir = self.path(run_id)
        try:
            if not stat.S_ISDIR(os.lstat(run_dir).st_mode):
                return False  # replaced by a link: collect says what it found
            with os.scandir(run_dir) as entries:
                if next(entries, None) is not None:
                    return False
            if run_id in self._with_input:
                return False
        except FileNotFoundError:
            self._dirs.pop(run_id, None)
            return not os.path.lexists(run_dir)
        except OSError:
            return False
        self._dirs.pop(run_id, None)
        self._discarded.append(run_dir)
        return True

    def remove(self, run_id: str) -> None:
        """Delete the run's directories, as far as possible; a missing one is fine.

        Never raises: what cannot be deleted now goes with remove_except at the next start.
        """
        _remove_tree(self.input_path(run_id))
        _remove_tree(self.path(run_id))
        self._dirs.pop(run_id, None)
        self._with_input.discard(run_id)

    def remove_except(self, keep: Collection[str]) -> None:
        """Delete the run directories a crashed daemon left behind, except those in `keep`.

        `keep` holds directory names (a run id, or a spare's name); a kept run's
        input directory is kept with it.
        """
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return
        for entry in entries:
            # A symbolic link is a run directory a task replaced: it goes too.
            if entry.name.removesuffix(INPUT_SUFFIX) not in keep and (
                entry.is_dir(follow_symlinks=False) or entry.is_symlink()
            ):
                _remove_tree(Path(entry.path))
        self._spares = [spare for spare in self._spares if spare.name in keep]
        self._discarded = []
        self._dirs = {run: path for run, path in self._dirs.items() if path.name in keep}
        self._with_input &= set(self._dirs)


def _first_impassable(data_dir: Path, owner: RunAs) -> Path | None:
    """Return the first directory above `data_dir` that `owner` may not pass through, if any."""
    for directory in reversed(data_dir.absolute().parents):
        status = os.stat(directory)
        if status.st_uid == owner.uid:
            allowed = status.st_mode & stat.S_IXUSR
        elif status.st_gid == owner.gid or status.st_gid in owner.groups:
            allowed = status.st_mode & stat.S_IXGRP
        else:
            allowed = status.st_mode & stat.S_IXOTH
        if not allowed:
            return directory
    return None


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    # newline="": the CSV text already holds its line ends.
    with open(fd, "w", encoding="utf-8", newline="") as file:
        file.write(text)


def _open_directory(path: Path) -> int:
    """Open a directory without following a symbolic link in its last component."""
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)


def _refusal(path: Path, error: OSError) -> str:
    """Return the note that says why the output directory was not read."""
    # O_NOFOLLOW | O_DIRECTORY on a symbolic link fails with ELOOP or ENOTDIR.
    if error.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(path):
        found = "a symbolic link, which runyard does not follow"
    elif error.errno == errno.ENOTDIR:
        found = "something that is not a directory"
    else:
        return f"Output data was not read: could not open {OUTPUT_DIR_ENV} ({error.strerror})."
    return f"Output data was not read: the run replaced {OUTPUT_DIR_ENV} by {found}."


def _read_output_directory(
    output_fd: int, max_bytes: int
) -> tuple[dict[str, list[list[str]]], list[str]]:
    """Read the output files of the directory open at `output_fd`; problems become notes."""
    files: list[tuple[str, bytes]] = []
    notes: list[str] = []
    try:
        with os.scandir(output_fd) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
    except OSError as error:
        return {}, [f"Could not list the output directory: {error.strerror}."]
    for entry in entries:
        # Names are bytes on disk; undecodable ones must not reach the store as surrogates.
        name = entry.name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        if name.startswith("."):
            continue  # the output helper's temp files
        shown = printable_name(name)
        try:
            if entry.is_symlink():
                notes.append(f"Ignored output file {shown}: symbolic links are not read.")
            elif entry.is_dir(follow_symlinks=False):
                notes.append(f"Ignored output directory {shown}: subdirectories are not read.")
            elif not entry.is_file(follow_symlinks=False):
                notes.append(f"Ignored output file {shown}: not a regular file.")
            else:
                content = _read_regular_file(entry.name, max_bytes + 1, output_fd)
                if content is None:
                    notes.append(f"Ignored output file {shown}: not a regular file.")
                else:
                    files.append((name, content))
        except OSError as error:
            notes.append(f"Ignored output file {shown}: could not be read ({error.strerror}).")
    data, collected_notes = collect_output(files, max_bytes)
    return data, notes + collected_notes


def _read_regular_file(name: str, limit: int, dir_fd: int) -> bytes | None:
    """Return up to `limit` bytes of the file, or None when it is not a regular file."""
    # O_NOFOLLOW and O_NONBLOCK: the run (or a child it left behind) may have
    # swapped in a symlink or a FIFO since the directory was listed, and opening
    # a FIFO would block the reader forever.
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
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
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            # A run replaced its directory by a symbolic link (or a file): remove
            # the link, never what it points at.
            os.unlink(path)
            return
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
