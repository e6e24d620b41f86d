"""The data dir and the daemon's files in it are private, whatever the umask: real files."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from runyard.domain.models import LogOnFull
from runyard.domain.queries import RunQuery
from runyard.engine.start_log import StartLog
from runyard.store import RunStore
from runyard.store.files import (
    make_passable_directory,
    make_private_directory,
    prepare_data_dir,
)
from runyard.store.keys import mark_revoked
from runyard.store.logs import LogWriter

T0 = datetime(2025, 3, 1, tzinfo=UTC)


@pytest.fixture(
    autouse=True, params=[0o002, 0o000, 0o022], ids=["umask-002", "umask-000", "umask-022"]
)
def permissive_umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """Run each test under a umask that would let others read what is not made private."""
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_make_private_directory_makes_each_missing_parent_private(tmp_path: Path) -> None:
    make_private_directory(tmp_path / "a" / "b" / "c")
    assert [mode(tmp_path / part) for part in ("a", "a/b", "a/b/c")] == [0o700] * 3
    (tmp_path / "open").mkdir(mode=0o755)
    os.chmod(tmp_path / "open", 0o755)
    make_private_directory(tmp_path / "open")  # an existing one is left alone
    assert mode(tmp_path / "open") == 0o755


def test_sqlite_database_and_its_wal_and_shm_files_are_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    store = RunStore.open(f"sqlite:///{data_dir / 'runyard.db'}")
    try:
        store.list_runs(RunQuery(limit=1))  # a connection is open: -wal and -shm exist
        names = sorted(path.name for path in data_dir.iterdir())
        assert {"runyard.db", "runyard.db-wal", "runyard.db-shm"} <= set(names), names
        assert mode(data_dir) == 0o700
        assert {name: oct(mode(data_dir / name)) for name in names} == {
            name: "0o600" for name in names
        }
    finally:
        store.close()


def test_log_files_and_their_buckets_are_private(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "01J000" / "01J000RUN.log"
    writer = LogWriter(path, 100, LogOnFull.DROP_OLD)
    for _ in range(10):  # past half the cap: the first segment becomes `.old`
        writer.append("out", b"0123456789abcdef\n", 1, T0)
        writer.flush()
    writer.close()
    assert mode(tmp_path / "logs") == 0o700
    assert mode(path.parent) == 0o700
    files = sorted(path.parent.iterdir())
    assert [file.name for file in files] == ["01J000RUN.log", "01J000RUN.log.old"]
    assert [mode(file) for file in files] == [0o600, 0o600]


def test_started_log_stays_private_when_compacted(tmp_path: Path) -> None:
    log = StartLog(tmp_path / "data" / "started.log", lambda: ["live"])
    log.open()
    for index in range(60_000):  # past the compaction threshold: the file is rewritten
        log.record(f"run-{index:05d}-xxxxxxxxxx")
    log.close()
    assert mode(tmp_path / "data") == 0o700
    assert mode(tmp_path / "data" / "started.log") == 0o600


def test_key_revocation_marker_is_private(tmp_path: Path) -> None:
    mark_revoked(tmp_path / "data")
    assert mode(tmp_path / "data") == 0o700
    assert mode(tmp_path / "data" / "keys.revoked") == 0o600


# ----- a data dir an earlier version left open ------------------------------------------

DAEMON_ENTRIES = ("token", "started.log", "work", "keys.revoked")


def open_data_dir(tmp_path: Path) -> Path:
    """Return a data dir as an earlier version left it: 0755 directories, 0644 files."""
    data_dir = tmp_path / "data"
    for directory in ("", "logs", "logs/01J000", "work"):
        (data_dir / directory).mkdir(exist_ok=True)
        os.chmod(data_dir / directory, 0o755)
    for file in ("runyard.db", "runyard.db-wal", "token", "started.log", "logs/01J000/a.log"):
        (data_dir / file).write_text("x", encoding="utf-8")
        os.chmod(data_dir / file, 0o644)
    return data_dir


def test_an_open_data_dir_is_tightened_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = open_data_dir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="runyard"):
        prepare_data_dir(data_dir, DAEMON_ENTRIES)
    found = {
        str(path.relative_to(data_dir)): oct(mode(path))
        for path in [data_dir, *data_dir.rglob("*")]
    }
    assert found == {
        ".": "0o700",
        "logs": "0o700",
        "logs/01J000": "0o700",
        "logs/01J000/a.log": "0o600",
        "work": "0o700",
        "runyard.db": "0o600",
        "runyard.db-wal": "0o600",
        "token": "0o600",
        "started.log": "0o600",
    }
    [record] = caplog.records
    assert record.name.startswith("runyard")
    assert "tightened the permissions of 9 entries of the data dir" in record.getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="runyard"):
        prepare_data_dir(data_dir, DAEMON_ENTRIES)
    assert caplog.records == []


def test_what_is_not_the_daemons_is_left_alone(tmp_path: Path) -> None:
    data_dir = open_data_dir(tmp_path)
    mine = tmp_path / "outside.txt"
    mine.write_text("the user's", encoding="utf-8")
    os.chmod(mine, 0o644)
    (data_dir / "notes.txt").write_text("the user's too", encoding="utf-8")
    os.chmod(data_dir / "notes.txt", 0o644)
    (data_dir / "token").unlink()
    (data_dir / "token").symlink_to(mine)  # chmod would follow it out of the data dir
    prepare_data_dir(data_dir, DAEMON_ENTRIES)
    assert mode(mine) == 0o644
    assert mode(data_dir / "notes.txt") == 0o644
    assert mode(data_dir) == 0o700


def test_a_data_dir_that_is_a_symlink_is_tightened_at_its_target(tmp_path: Path) -> None:
    target = tmp_path / "real"
    target.mkdir()
    os.chmod(target, 0o755)
    (tmp_path / "link").symlink_to(target)
    prepare_data_dir(tmp_path / "link", DAEMON_ENTRIES)
    assert mode(target) == 0o700


def test_a_new_data_dir_is_made_private_silently(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="runyard"):
        prepare_data_dir(tmp_path / "new" / "data", DAEMON_ENTRIES)
    assert mode(tmp_path / "new") == 0o700
    assert mode(tmp_path / "new" / "data") == 0o700
    assert caplog.records == []


def test_a_passable_data_dir_is_left_passable_and_a_listable_one_tightened(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # 0711: made so by a task's `user`, who passes through to their run's directory.
    data = tmp_path / "data"
    make_private_directory(data / "work")
    make_passable_directory(data)
    make_passable_directory(data / "work")
    (data / "logs").mkdir(mode=0o711)
    with caplog.at_level(logging.WARNING, logger="runyard"):
        prepare_data_dir(data, DAEMON_ENTRIES)
    assert (mode(data), mode(data / "work"), mode(data / "logs")) == (0o711, 0o711, 0o711)
    assert caplog.records == []
    # Readable by others is tightened all the same.
    data.chmod(0o751)
    prepare_data_dir(data, DAEMON_ENTRIES)
    assert mode(data) == 0o700


def test_entries_that_cannot_be_tightened_are_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = open_data_dir(tmp_path)
    real_chmod = os.chmod

    def chmod(path: object, mode: int, **kwargs: object) -> None:
        if str(path).endswith("token"):
            raise PermissionError(1, "Operation not permitted")  # owned by another user
        real_chmod(path, mode)  # type: ignore[arg-type]

    # Root may chmod anything, so a file owned by someone else is simulated.
    monkeypatch.setattr(os, "chmod", chmod)
    with caplog.at_level(logging.WARNING, logger="runyard"):
        prepare_data_dir(data_dir, DAEMON_ENTRIES)
    messages = [record.getMessage() for record in caplog.records]
    assert any(
        "could not tighten the permissions of" in text and "token" in text for text in messages
    )
    assert mode(data_dir / "runyard.db") == 0o600
