"""Per-run log files: cut pipe output into lines, store it in records, read it back.

A process may write a gigabyte of short lines, so the write path never loops
over lines in Python: it works on whole chunks (`bytes.rfind`, `bytes.count`)
and stores chunks, not lines.

On-disk format
--------------
A log is a sequence of records. A record is one chunk of complete lines of
one stream that arrived at one moment: an ASCII header line, then exactly
`nbytes` bytes of body::

    @<unix_us> <stream> <first_line> <nlines> <nbytes>\\n
    <body: nlines lines, each ending with b"\\n">

- `unix_us`: arrival time in microseconds since the Unix epoch (UTC).
- `stream`: `out`, `err`, or `sys` (runyard's own notices, "[runyard] ...").
- `first_line`: the absolute, 0-based number of the record's first line in
  the run's whole log; its lines are first_line .. first_line + nlines - 1.
- The body is the bytes as the process wrote them (maybe not UTF-8).

Every header carries its first line number, so readers find line N by
reading headers only (seeking past bodies), and a segment keeps correct
numbers after its predecessor was deleted. A header that is incomplete or
unparsable, or a body running past the end of the file, ends the readable
log: a reader sees the records a writer finished, never half a record.

Caps: `max_size` counts the bytes of out/err line bodies (<= 0: no cap);
notices are extra. Records are buffered up to 256 KiB: call flush() for readers.

- drop_new: the lines that fit are kept, then one notice; later lines are
  dropped and get no line numbers (the notice marks the gap).
- kill: the same, and `overflowed` turns True so the engine stops the run.
- drop_old: two segments, `<path>.old` then `<path>`, each at most half the
  cap. When the current segment would pass half, it replaces `.old` (whose
  lines are gone) and a new current segment starts with a notice. Every line
  gets a number, so the numbers of dropped lines simply vanish.

On close, a notice says how much output was dropped, if any was.

A write the disk refuses (ENOSPC, EDQUOT, an I/O error) never reaches the
process or the engine: the records it held are lost, output is dropped
(unnumbered) while writes keep failing, and once a write succeeds again (or
at close, if one can) a notice says how many lines were lost and why.
"""

from __future__ import annotations

import contextlib
import logging
import os
from datetime import datetime, timedelta
from pathlib import Path

from runyard.clock import utc_now
from runyard.domain.models import LogOnFull
from runyard.store._logformat import (
    STREAMS,
    LogChunk,
    LogLine,
    count_lines,
    delete_log,
    header,
    iter_chunks,
    iter_raw_text,
    old_path,
    read_lines,
    to_unix_us,
)
from runyard.store.files import PRIVATE_FILE_MODE, make_private_directory

__all__ = [
    "LineSplitter",
    "LogChunk",
    "LogLine",
    "LogWriter",
    "count_lines",
    "delete_log",
    "iter_chunks",
    "iter_raw_text",
    "read_lines",
]

log = logging.getLogger("runyard.logs")

_FLUSH_AT = 256 * 1024  # buffered record bytes that trigger a write
_RETRY_WRITE_SECONDS = 1.0  # while writes fail, how often one is tried again


class LineSplitter:
    """Cut one stream's raw pipe chunks into complete lines."""

    def __init__(self, max_line: int = 65536) -> None:
        if max_line < 1:
            raise ValueError("max_line must be at least 1")
        self._max = max_line
        self._tail = b""  # the unterminated last line, at most max_line bytes

    def feed(self, data: bytes) -> tuple[bytes, int]:
        """Return the complete lines `data` finishes and their count; keep the rest."""
        last = data.rfind(b"\n")
        if last < 0:
            self._tail += data
            if len(self._tail) <= self._max:
                return b"", 0
            return self._cut_tail()
        # One copy at most: the memoryview spares slicing `data` first.
        complete = self._tail + memoryview(data)[: last + 1] if self._tail else data[: last + 1]
        self._tail = data[last + 1 :]
        out, count = self._cut_long(complete)
        if len(self._tail) > self._max:
            more, extra = self._cut_tail()
            out += more
            count += extra
        return out, count

    def finish(self) -> tuple[bytes, int]:
        """Return the unterminated tail as a last line, or (b"", 0)."""
        tail, self._tail = self._tail, b""
        return (tail + b"\n", 1) if tail else (b"", 0)

    def _cut_long(self, complete: bytes) -> tuple[bytes, int]:
        """Cut lines longer than max_line in `complete` (which ends with a newline)."""
        count = complete.count(b"\n")
        size, window = len(complete), self._max + 1
        if size <= window:
            return complete, count
        # Jump from the last newline of each window to the next one: this takes
        # about size / max_line steps however short the lines are.
        pieces: list[bytes] = []
        pos = start = 0
        while size - pos > window:
            nl = complete.rfind(b"\n", pos, pos + window)
            if nl >= 0:
                pos = nl + 1
                continue
            pos += self._max
            pieces += (complete[start:pos], b"\n")
            start = pos
            count += 1
        if not pieces:
            return complete, count
        pieces.append(complete[start:])
        return b"".join(pieces), count

    def _cut_tail(self) -> tuple[bytes, int]:
        """Turn max_line pieces of an overlong tail into lines, keeping the rest."""
        tail, m = self._tail, self._max
        cut = (len(tail) - 1) // m * m  # leave 1..max_line bytes in the tail
        self._tail = tail[cut:]
        return b"".join(tail[i : i + m] + b"\n" for i in range(0, cut, m)), cut // m


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" or size >= 100 else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


class LogWriter:
    """Append records to one run's log, within its size cap."""

    def __init__(self, path: Path, max_size: int, on_full: LogOnFull) -> None:
        self._path = path
        self._max = max_size  # <= 0 means no cap
        self._on_full = on_full
        self._half = max(max_size // 2, 1)
        # The file is created with the first write: a run that prints nothing
        # (most cron jobs) costs no file at all.
        self._fd: int | None = None
        self._opened = False  # a segment was opened: any `.old` is this writer's own
        self._closed = False
        self._disk = 0  # bytes of whole records in the current segment file
        self._buf = bytearray()
        self._next = 0  # the next line number
        self._written = 0  # body bytes written, notices included
        self._kept = 0  # out/err body bytes counted against the cap (this segment for drop_old)
        self._seg_lines = 0  # out/err lines in the current segment (drop_old)
        self._old_lines = 0  # ... and in the `.old` segment
        self._old_bytes = 0
        self._full = False  # drop_new / kill: the cap was reached, output is dropped
        self._overflowed = False
        self._dropped_lines = 0
        self._dropped_bytes = 0
        self._buf_lines = 0  # lines in the buffered records
        self._buf_bytes = 0  # ... and their body bytes
        # Set while the disk refuses writes: output is dropped until one succeeds.
        self._write_error: OSError | None = None
        self._retry_write_at: datetime | None = None
        self._lost_lines = 0  # lines lost to refused writes, not yet noted in the log
        self._lost_bytes = 0

    @property
    def overflowed(self) -> bool:
        """Return True once on_full is kill and the cap was reached."""
        return self._overflowed

    @property
    def lines(self) -> int:
        """Return the next line number (lines numbered so far)."""
        return self._next

    @property
    def bytes_written(self) -> int:
        """Return the line-body bytes written so far, notices included."""
        return self._written

    def loss_note(self) -> str | None:
        """Return what was lost to refused writes and is not noted in the log, or None."""
        if self._write_error is None:
            return None
        n = self._lost_lines
        lines = "1 line" if n == 1 else f"{n} lines"
        return (
            f"{lines} ({_human(self._lost_bytes)}) of output were lost: "
            f"the log could not be written ({self._write_error.strerror or self._write_error})."
        )

    @property
    def dropped_lines(self) -> int:
        return self._dropped_lines

    @property
    def dropped_bytes(self) -> int:
        return self._dropped_bytes

    def append(self, stream: str, data: bytes, nlines: int, at: datetime) -> tuple[int, int]:
        """Write `nlines` complete lines of `stream`; return (first line number, lines kept)."""
        if stream not in STREAMS:
            raise ValueError(f"unknown log stream {stream!r}")
        if nlines <= 0 or not data:
            return self._next, 0
        if self._write_error is not None and not self._resume(at):
            self._lose(nlines, len(data))
            return self._next, 0
        if self._full:
            self._drop(nlines, len(data))
            return self._next, 0
        if self._max <= 0:
            return self._record(stream, data, nlines, at), nlines
        if self._on_full is LogOnFull.DROP_OLD:
            return self._append_drop_old(stream, data, nlines, at)
        room = self._max - self._kept
        if len(data) <= room:
            self._kept += len(data)
            return self._record(stream, data, nlines, at), nlines
        # Keep the whole lines that fit, then stop taking output.
        cut = data.rfind(b"\n", 0, room) + 1
        kept = data.count(b"\n", 0, cut)
        first = self._next
        if kept:
            self._kept += cut
            self._record(stream, data[:cut], kept, at)
        self._drop(nlines - kept, len(data) - cut)
        self._full = True
        if self._on_full is LogOnFull.KILL:
            self._overflowed = True
            self.notice("[runyard] log_max_size reached: stopping the run (log_on_full = kill)", at)
        else:
            self.notice("[runyard] log_max_size reached: further output is dropped", at)
        return first, kept

    def _append_drop_old(
        self, stream: str, data: bytes, nlines: int, at: datetime
    ) -> tuple[int, int]:
        skip = 0
        if len(data) > self._half:
            # Even alone this chunk passes a segment: keep its newest lines.
            cut = data.find(b"\n", len(data) - self._half - 1) + 1
            skip = data.count(b"\n", 0, cut)
            self._drop(skip, cut)
            self._next += skip  # these lines were numbered, then dropped as old
            data, nlines = data[cut:], nlines - skip
        if self._kept and (skip or self._kept + len(data) > self._half):
            self._rotate(at)
        elif skip:
            self._notice_dropped_old(at)
        if not nlines:
            return self._next, 0
        self._kept += len(data)
        self._seg_lines += nlines
        return self._record(stream, data, nlines, at), nlines

    def _rotate(self, at: datetime) -> None:
        """Make the current segment `.old` (dropping the older one) and start a new one."""
        self._flush_buf()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        old = old_path(self._path)
        if old.exists():
            self._drop(self._old_lines, self._old_bytes)
        with contextlib.suppress(FileNotFoundError):  # deleted under a running writer
            os.replace(self._path, old)
        self._old_lines, self._old_bytes = self._seg_lines, self._kept
        self._seg_lines = self._kept = 0
        self._disk = 0
        try:
            self._fd = self._open_segment()
        except OSError as error:
            self._refused(error, 0, 0)  # the next write opens it
        # Written ahead: by the time this segment's predecessor is gone, this
        # line stands right after the gap.
        self._notice_dropped_old(at)

    def _notice_dropped_old(self, at: datetime) -> None:
        text = "[runyard] log_max_size reached: earlier output may have been dropped"
        self.notice(f"{text} (log_on_full = drop_old)", at)

    def notice(self, text: str, at: datetime) -> int:
        """Write one runyard "sys" line (never capped); return its line number."""
        line = text.replace("\n", " ").encode("utf-8", errors="replace") + b"\n"
        return self._record("sys", line, 1, at)

    def flush(self) -> None:
        """Hand buffered records to the OS, so readers see them."""
        self._flush_buf()

    def close(self, at: datetime | None = None) -> None:
        """Flush, note how much output was dropped (if any) at `at` or now, and close.

        Never raises for a disk that refuses writes: what cannot be written is
        lost, and the file is closed all the same.
        """
        if self._closed:
            return
        at = at or utc_now()
        try:
            if self._write_error is None or self._resume(at, force=True):
                if self._dropped_lines:
                    n = self._dropped_lines
                    lines = "1 line" if n == 1 else f"{n} lines"
                    self.notice(
                        f"[runyard] {lines} ({_human(self._dropped_bytes)}) of output were "
                        f"dropped: log_max_size {_human(self._max)} reached",
                        at,
                    )
                self._flush_buf()
        finally:
            self._closed = True
            if self._fd is not None:
                fd, self._fd = self._fd, None
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _resume(self, at: datetime, *, force: bool = False) -> bool:
        """While writes fail: try the lost-output notice (once a second); True if it went in."""
        if not force:
            if self._retry_write_at is None:  # the first output since the failure
                self._retry_write_at = at + timedelta(seconds=_RETRY_WRITE_SECONDS)
            if at < self._retry_write_at:
                return False
        self._retry_write_at = at + timedelta(seconds=_RETRY_WRITE_SECONDS)
        text = f"[runyard] {self.loss_note()}"
        lost = self._lost_lines, self._lost_bytes
        self._write_error = None
        self._buf.clear()
        self._buf_lines = self._buf_bytes = 0
        self.notice(text, at)
        self._flush_buf()
        if self._write_error is not None:
            self._lost_lines, self._lost_bytes = lost  # the notice is not output
            return False
        log.info("%s: log writes work again", self._path)
        self._lost_lines = self._lost_bytes = 0
        self._retry_write_at = None
        return True

    def _lose(self, nlines: int, nbytes: int) -> None:
        self._lost_lines += nlines
        self._lost_bytes += nbytes

    def _refused(self, error: OSError, nlines: int, nbytes: int) -> None:
        """Note a write the disk refused: its lines are lost, output is dropped from now on."""
        if self._write_error is None:
            log.warning("%s: cannot write the log, output is dropped: %s", self._path, error)
        self._write_error = error
        self._lose(nlines, nbytes)

    def _record(self, stream: str, data: bytes, nlines: int, at: datetime) -> int:
        if self._closed:
            raise ValueError("the log is closed")
        first = self._next
        head = header(to_unix_us(at), stream, first, nlines, len(data))
        self._next = first + nlines
        self._written += len(data)
        if len(self._buf) + len(head) + len(data) < _FLUSH_AT:
            self._buf += head
            self._buf += data
            self._buf_lines += nlines
            self._buf_bytes += len(data)
        else:
            # Big chunks go out with the buffer in one call, never copied into it.
            self._write((self._buf, head, data), nlines, len(data))
        return first

    def _drop(self, nlines: int, nbytes: int) -> None:
        self._dropped_lines += nlines
        self._dropped_bytes += nbytes

    def _flush_buf(self) -> None:
        if self._buf:
            self._write((self._buf,), 0, 0)

    def _write(self, parts: tuple[bytes | bytearray, ...], nlines: int, nbytes: int) -> None:
        """Write the buffer (parts[0]) and the records after it; clear the buffer.

        `nlines`, `nbytes`: the lines and body bytes of the records after the buffer.
        """
        nlines += self._buf_lines
        nbytes += self._buf_bytes
        try:
            if self._fd is None:
                make_private_directory(self._path.parent)
                if not self._opened:
                    with contextlib.suppress(FileNotFoundError):
                        old_path(self._path).unlink()  # a stale segment of an earlier writer
                self._fd = self._open_segment()
            total = sum(map(len, parts))
            try:
                done = os.writev(self._fd, parts)
                if done < total:  # a regular file takes less only when nearly full
                    rest = b"".join(parts)
                    while done < total:
                        done += os.write(self._fd, rest[done:])
            except OSError:
                # Cut off a half-written record so readers still see a clean log.
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, self._disk)
                raise
            self._disk += total
        except OSError as error:
            # The disk is full or failing: these records are lost, the run goes on.
            self._refused(error, nlines, nbytes)
        finally:
            self._buf.clear()
            self._buf_lines = self._buf_bytes = 0

    def _open_segment(self) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND
        fd = os.open(self._path, flags, PRIVATE_FILE_MODE)
        self._opened = True
        return fd
