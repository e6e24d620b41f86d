"""The data dir and the daemon's files in it: its user's alone, whatever the umask.

The database, the logs and the run directories hold params, input and output
data. Directories are made 0700 and files 0600 by passing those modes when
they are created; the process umask is left alone, since task processes
inherit it and their own files must keep the user's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Collection, Iterator
from pathlib import Path

log = logging.getLogger("runyard.store.files")

PRIVATE_DIRECTORY_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
# A directory others may pass through to a path they know, not list: the data
# dir and work/ once a task runs as another user, whose run directory inside
# is then that user's own.
PASSABLE_DIRECTORY_MODE = 0o711
_SHARED_BITS = 0o077  # any of these set on a file: someone but the owner may read it
_SHARED_DIRECTORY_BITS = 0o066  # on a directory: someone but the owner may list or change it

SQLITE_DATABASE = "runyard.db"
LOGS_DIR = "logs"
# The store's entries in the data dir: SQLite's files (SQLite makes the journal,
# -wal and -shm files with the database file's mode) and the logs.
_STORE_ENTRIES = (
    SQLITE_DATABASE,
    f"{SQLITE_DATABASE}-wal",
    f"{SQLITE_DATABASE}-shm",
    f"{SQLITE_DATABASE}-journal",
    LOGS_DIR,
)


def make_private_directory(path: Path) -> None:
    """Make `path` and any missing parents, each one 0700; an existing one is left as it is."""
    try:
        os.mkdir(path, PRIVATE_DIRECTORY_MODE)
    except FileExistsError:
        return
    except FileNotFoundError:
        make_private_directory(path.parent)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, PRIVATE_DIRECTORY_MODE)


def create_private_file(path: Path) -> None:
    """Create `path` empty with mode 0600 unless it exists (whatever its mode then)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE_MODE))


def prepare_data_dir(data_dir: Path, daemon_entries: Collection[str]) -> None:
    """Make the data dir 0700, or tighten an existing one and the daemon's files in it.

    `daemon_entries` names what the daemon keeps there besides the store's
    files; nothing else in the directory is touched. A data dir made by an
    earlier version (0755, files 0644) is tightened once, with a warning; the
    log files are walked only then, when `logs/` itself was open to others.
    What cannot be changed (owned by someone else) is reported, not fatal.
    """
    make_private_directory(data_dir)
    tightened: list[Path] = []
    failed: list[str] = []
    for path in _daemon_entries(data_dir, [*_STORE_ENTRIES, *daemon_entries]):
        try:
            if _tighten(path, follow=path == data_dir):
                tightened.append(path)
        except FileNotFoundError:
            continue
        except OSError as error:
            failed.append(f"{path} ({error.strerror})")
    if tightened:
        log.warning(
            "tightened the permissions of %d entries of the data dir %s that other users "
            "could read (directories are now 0700, files 0600): %s",
            len(tightened),
            data_dir,
            ", ".join(str(path.relative_to(data_dir)) or "." for path in tightened[:10])
            + (", ..." if len(tightened) > 10 else ""),
        )
    if failed:
        log.warning("could not tighten the permissions of %s", ", ".join(failed))


def _daemon_entries(data_dir: Path, names: list[str]) -> Iterator[Path]:
    logs = data_dir / LOGS_DIR
    logs_open = _is_shared_directory(logs)  # asked before the walk tightens it
    yield data_dir
    yield from (data_dir / name for name in names)
    if logs_open:
        # Made by an earlier version: the buckets and log files inside are too.
        for bucket in _listing(logs):
            yield Path(bucket.path)
            if bucket.is_dir(follow_symlinks=False):
                yield from (Path(entry.path) for entry in _listing(Path(bucket.path)))


def _listing(directory: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as entries:
            return list(entries)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _is_shared_directory(path: Path) -> bool:
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISDIR(status.st_mode) and bool(status.st_mode & _SHARED_BITS)


def _tighten(path: Path, *, follow: bool) -> bool:
    """Take group and other permissions off `path`; return whether it had any.

    A directory only others can pass through (0711, see make_passable_directory)
    is left as it is.
    """
    status = os.stat(path) if follow else os.lstat(path)
    if stat.S_ISLNK(status.st_mode):
        return False  # chmod would follow the link out of the data dir
    directory = stat.S_ISDIR(status.st_mode)
    if not status.st_mode & (_SHARED_DIRECTORY_BITS if directory else _SHARED_BITS):
        return False
    os.chmod(path, PRIVATE_DIRECTORY_MODE if directory else PRIVATE_FILE_MODE)
    return True


def make_passable_directory(path: Path) -> None:
    """Let other users pass through `path` (0711) to what they own inside; not list it."""
    os.chmod(path, PASSABLE_DIRECTORY_MODE)
