"""LogWriter on a real, tiny tmpfs: a disk that refuses writes never raises into the run."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from runyard.domain.models import LogOnFull
from runyard.store.logs import LogWriter, read_lines

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
LINE = b"y" * 99 + b"\n"
CHUNK = LINE * 1000  # 100 KB, 1000 lines


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    where = tmp_path / "disk"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.fail(
            "this test needs a real 1 MB tmpfs and could not mount one "
            f"(mount needs root): {mounted.stderr.strip()}"
        )
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _open_fds_to(path: Path) -> int:
    fds = Path("/proc/self/fd")
    count = 0
    for fd in fds.iterdir():
        try:
            count += os.readlink(fd) == str(path)
        except FileNotFoundError:
            continue
    return count


def test_a_full_disk_drops_output_with_a_notice_and_never_raises(tiny_disk: Path) -> None:
    filler = tiny_disk / "filler"
    filler.write_bytes(b"\0" * (512 * 1024))
    path = tiny_disk / "logs" / "run.log"
    writer = LogWriter(path, 0, LogOnFull.DROP_NEW)
    at = T0
    for _ in range(20):  # 2 MB into what is left of 1 MB
        writer.append("out", CHUNK, 1000, at)
    writer.flush()
    note = writer.loss_note()
    assert note is not None and "No space left on device" in note, note
    written = read_lines(path, 0, 100_000)
    assert written and all(line.text == "y" * 99 for line in written)

    # Space comes back: a second later, the next write notes the loss, then output resumes.
    filler.unlink()
    at += timedelta(seconds=1)
    writer.append("out", b"after\n", 1, at)
    writer.close(at)
    assert _open_fds_to(path) == 0
    assert writer.loss_note() is None
    lines = read_lines(path, 0, 100_000)
    [notice] = [line for line in lines if line.stream == "sys"]
    assert notice.text.startswith("[runyard] ") and "of output were lost" in notice.text
    assert "No space left on device" in notice.text
    assert lines[-1].text == "after"
    assert [line.n for line in lines] == sorted(line.n for line in lines)


def _fill(disk: Path) -> None:
    """Take every byte left on the disk."""
    with (disk / "filler").open("ab", buffering=0) as filler:
        try:
            while True:
                filler.write(b"\0" * 4096)
        except OSError:
            pass


def test_close_on_a_full_disk_closes_the_file(tiny_disk: Path) -> None:
    path = tiny_disk / "run.log"
    writer = LogWriter(path, 0, LogOnFull.DROP_NEW)
    for _ in range(15):
        writer.append("err", CHUNK, 1000, T0)
    assert writer.loss_note() is not None
    _fill(tiny_disk)
    assert _open_fds_to(path) == 1
    writer.close(T0)  # no exception, whatever the notice's fate
    assert _open_fds_to(path) == 0
    # The loss is told: in the log if the notice fit (in the file's last page), else by
    # loss_note(), which the engine adds to the run's description.
    noted = [line.text for line in read_lines(path, 0, 100_000) if line.stream == "sys"]
    note = writer.loss_note()
    assert (note is not None) != bool(noted), (note, noted)
    assert "of output were lost" in (note or noted[0])
