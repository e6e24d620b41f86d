"""The record format of per-run log files, and the readers (see `runyard.store.logs`)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

STREAMS = frozenset({"out", "err", "sys"})
MAX_HEADER = 128  # far above the longest header a writer produces
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_RAW_PIECE = 256 * 1024  # what iter_raw_text hands out at a time, at most about


def to_unix_us(at: datetime) -> int:
    """Return `at` as whole microseconds since the epoch (naive means UTC)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    # Integer timedelta division is exact, unlike timestamp() floats.
    return (at - _EPOCH) // _US


def from_unix_us(us: int) -> datetime:
    """Return the aware UTC datetime for `us` microseconds since the epoch."""
    return _EPOCH + timedelta(microseconds=us)


def header(us: int, stream: str, first: int, nlines: int, nbytes: int) -> bytes:
    """Encode one record header."""
    return f"@{us} {stream} {first} {nlines} {nbytes}\n".encode("ascii")


def parse_header(line: bytes) -> tuple[int, str, int, int, int] | None:
    """Decode a header line; None when it is partial or not a header."""
    if not line.startswith(b"@") or not line.endswith(b"\n"):
        return None
    parts = line[1:-1].split(b" ")
    if len(parts) != 5:
        return None
    try:
        us, first, nlines, nbytes = (int(p) for p in (parts[0], *parts[2:]))
        stream = parts[1].decode("ascii")
    except ValueError:  # UnicodeDecodeError is a ValueError too
        return None
    if min(first, nlines, nbytes) < 0 or stream not in STREAMS:
        return None
    return us, stream, first, nlines, nbytes


def old_path(path: Path) -> Path:
    """Return the path of the older drop_old segment of the log at `path`."""
    return path.with_name(path.name + ".old")


@dataclass(frozen=True, slots=True)
class LogLine:
    """One numbered line of a run's log."""

    n: int
    at: datetime
    stream: str
    text: str


@dataclass(frozen=True, slots=True)
class LogChunk:
    """One record: `nlines` complete lines of one stream, numbered from `first_line`."""

    first_line: int
    at: datetime
    stream: str
    data: bytes
    nlines: int

    @property
    def end(self) -> int:
        """Return the number just past the chunk's last line."""
        return self.first_line + self.nlines

    def lines(self) -> list[LogLine]:
        """Split the chunk into decoded lines (at most `nlines`)."""
        parts = self.data.split(b"\n", self.nlines)[: self.nlines]
        return [
            LogLine(self.first_line + i, self.at, self.stream, p.decode("utf-8", errors="replace"))
            for i, p in enumerate(parts)
        ]


@dataclass(frozen=True, slots=True)
class _Header:
    us: int
    stream: str
    first: int
    nlines: int
    nbytes: int
    body_at: int


def _open(path: Path) -> BinaryIO | None:
    try:
        return path.open("rb")
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def _segments(path: Path) -> Iterator[list[BinaryIO]]:
    """Open the log's segments, oldest first.

    The current segment is opened before `.old`: if the writer rotates in
    between, both handles show the same segment (deduplicated by line
    number) instead of skipping the one that just became `.old`.
    """
    cur = _open(path)
    old = _open(old_path(path))
    files = [f for f in (old, cur) if f is not None]
    try:
        yield files
    finally:
        for f in files:
            f.close()


def _headers(f: BinaryIO) -> Iterator[_Header]:
    """Yield the complete records' headers; the file is left at the body after each.

    The size is taken once, so a record the writer is still adding counts
    only when it was complete at that moment.
    """
    size = os.fstat(f.fileno()).st_size
    pos = 0
    while pos < size:
        f.seek(pos)
        raw = f.readline(MAX_HEADER)
        parsed = parse_header(raw)
        if parsed is None:
            return
        body_at = pos + len(raw)
        pos = body_at + parsed[4]
        if pos > size:
            return
        yield _Header(*parsed, body_at=body_at)


def _first_line(f: BinaryIO) -> int | None:
    for h in _headers(f):
        return h.first
    return None


def iter_chunks(path: Path, start: int = 0) -> Iterator[LogChunk]:
    """Yield the records holding lines >= `start`, in order (the caller trims the first)."""
    with _segments(path) as files:
        if len(files) == 2:
            current_first = _first_line(files[1])
            if current_first is not None and current_first <= start:
                files = files[1:]  # the older segment holds nothing wanted
        done = start  # lines below this were already yielded or are not wanted
        for f in files:
            for h in _headers(f):
                if h.first + h.nlines <= done or h.nlines == 0:
                    continue
                data = f.read(h.nbytes)
                if len(data) != h.nbytes:
                    return
                yield LogChunk(h.first, from_unix_us(h.us), h.stream, data, h.nlines)
                done = h.first + h.nlines


def read_lines(path: Path, start: int = 0, limit: int = 1000) -> list[LogLine]:
    """Return at most `limit` lines numbered >= `start`, in order; [] when there is no log."""
    out: list[LogLine] = []
    if limit <= 0:
        return out
    for chunk in iter_chunks(path, start):
        for line in chunk.lines():
            if line.n >= start:
                out.append(line)
                if len(out) >= limit:
                    return out
    return out


def count_lines(path: Path) -> int:
    """Return the next line number of the log at `path` (reads headers only)."""
    with _segments(path) as files:
        for f in reversed(files):  # the newest segment that has a record decides
            end = None
            for h in _headers(f):
                end = h.first + h.nlines
            if end is not None:
                return end
    return 0


def iter_raw_text(path: Path) -> Iterator[bytes]:
    """Yield the log's line bodies in order as plain text, in pieces of about 256 KiB."""
    with _segments(path) as files:
        done = 0
        pending = bytearray()
        for f in files:
            for h in _headers(f):
                if h.first + h.nlines <= done:
                    continue
                done = h.first + h.nlines
                left = h.nbytes
                while left:
                    piece = f.read(min(left, _RAW_PIECE))
                    if not piece:
                        break
                    left -= len(piece)
                    pending += piece
                    if len(pending) >= _RAW_PIECE:
                        yield bytes(pending)
                        pending.clear()
        if pending:
            yield bytes(pending)


def delete_log(path: Path) -> None:
    """Remove the log and its older segment; missing files are fine."""
    for p in (path, old_path(path)):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
