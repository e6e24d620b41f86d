"""Per-run log files: line splitting, records, caps, readers and live followers."""

from __future__ import annotations

import asyncio
import random
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from runyard.domain.models import LogOnFull
from runyard.engine.log_follow import LogFollowers
from runyard.store.logs import (
    LineSplitter,
    LogChunk,
    LogWriter,
    count_lines,
    delete_log,
    iter_chunks,
    iter_raw_text,
    read_lines,
)

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
TEXT = b"alpha\nbeta\n\n\xff\xfe binary \x00\nwith\rcarriage\nlast without newline"


def _expected(data: bytes) -> list[bytes]:
    """Split like str.splitlines, but only on b"\\n" (a stray b"\\r" is data)."""
    parts = data.split(b"\n")
    return parts[:-1] if parts[-1] == b"" else parts


def _split_all(splitter: LineSplitter, pieces: list[bytes]) -> list[bytes]:
    out = b""
    total = 0
    for piece in pieces:
        lines, n = splitter.feed(piece)
        out += lines
        total += n
    lines, n = splitter.finish()
    out += lines
    total += n
    assert out.count(b"\n") == total
    assert out == b"" or out.endswith(b"\n")
    return _expected(out)


def _at(i: int) -> datetime:
    return T0 + timedelta(microseconds=i)


# --- LineSplitter ---------------------------------------------------------------------


def test_splitter_byte_by_byte() -> None:
    pieces = [TEXT[i : i + 1] for i in range(len(TEXT))]
    assert _split_all(LineSplitter(), pieces) == _expected(TEXT)


@pytest.mark.parametrize("seed", range(20))
def test_splitter_random_chunks(seed: int) -> None:
    rng = random.Random(seed)
    lines = [rng.choice([b"", b"x" * rng.randrange(300), rng.randbytes(3)]) for _ in range(200)]
    data = b"\n".join(lines) + rng.choice([b"", b"\n"])
    pieces = []
    pos = 0
    while pos < len(data):
        size = rng.randrange(1, 700)
        pieces.append(data[pos : pos + size])
        pos += size
    assert _split_all(LineSplitter(max_line=65536), pieces) == _expected(data)


def test_splitter_keeps_tail_until_newline() -> None:
    s = LineSplitter()
    assert s.feed(b"abc") == (b"", 0)
    assert s.feed(b"def\ngh") == (b"abcdef\n", 1)
    assert s.feed(b"") == (b"", 0)
    assert s.finish() == (b"gh\n", 1)
    assert s.finish() == (b"", 0)


@pytest.mark.parametrize("chunk", [1, 7, 10, 64, 1000])
def test_splitter_cuts_long_lines(chunk: int) -> None:
    data = b"y" * 35 + b"\n" + b"z" * 10 + b"\n" + b"w" * 10
    pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    lines = _split_all(LineSplitter(max_line=10), pieces)
    assert lines == [b"y" * 10, b"y" * 10, b"y" * 10, b"y" * 5, b"z" * 10, b"w" * 10]
    assert all(len(line) <= 10 for line in lines)


def _cut_reference(data: bytes, max_line: int) -> list[bytes]:
    out = []
    for line in _expected(data):
        out += [line[i : i + max_line] for i in range(0, len(line), max_line)] or [b""]
    return out


@pytest.mark.parametrize("seed", range(20))
def test_splitter_random_long_lines(seed: int) -> None:
    rng = random.Random(seed)
    max_line = rng.choice([1, 3, 16, 50])
    lines = [b"L" * rng.randrange(4 * max_line) for _ in range(100)]
    data = b"\n".join(lines) + rng.choice([b"", b"\n"])
    pieces, pos = [], 0
    while pos < len(data):
        size = rng.randrange(1, 8 * max_line)
        pieces.append(data[pos : pos + size])
        pos += size
    assert _split_all(LineSplitter(max_line), pieces) == _cut_reference(data, max_line)


def test_splitter_without_newlines_stays_bounded() -> None:
    s = LineSplitter(max_line=65536)
    total = 0
    for _ in range(160):
        out, n = s.feed(b"q" * 65536)
        total += n
        assert len(s._tail) <= 65536  # memory stays bounded
        assert all(len(line) == 65536 for line in _expected(out))
    total += s.finish()[1]
    assert total == 160


def test_splitter_keeps_binary_and_carriage_returns() -> None:
    s = LineSplitter()
    assert s.feed(b"\x00\xff\r\x1b[31m\n") == (b"\x00\xff\r\x1b[31m\n", 1)


# --- writer and readers ---------------------------------------------------------------


def _write(tmp_path: Path, records: list[tuple[str, bytes]]) -> Path:
    path = tmp_path / "runs" / "r1.log"
    writer = LogWriter(path, 0, LogOnFull.DROP_NEW)
    for i, (stream, data) in enumerate(records):
        writer.append(stream, data, data.count(b"\n"), _at(i))
    writer.close()
    return path


def test_interleaved_streams_keep_order_numbers_and_times(tmp_path: Path) -> None:
    path = _write(tmp_path, [("out", b"o1\no2\n"), ("err", b"e1\n"), ("out", b"o3\n")])
    lines = read_lines(path)
    assert [(x.n, x.stream, x.text) for x in lines] == [
        (0, "out", "o1"),
        (1, "out", "o2"),
        (2, "err", "e1"),
        (3, "out", "o3"),
    ]
    assert [x.at for x in lines] == [_at(0), _at(0), _at(1), _at(2)]
    assert lines[0].at.tzinfo is not None
    assert count_lines(path) == 4


def test_writer_returns_line_numbers_and_counts(tmp_path: Path) -> None:
    writer = LogWriter(tmp_path / "a" / "b.log", 0, LogOnFull.DROP_NEW)
    assert writer.append("out", b"1\n2\n", 2, T0) == (0, 2)
    assert writer.notice("[runyard] hello", T0) == 2
    assert writer.append("err", b"3\n", 1, T0) == (3, 1)
    assert writer.lines == 4
    assert writer.bytes_written == 4 + 16 + 2
    writer.flush()
    assert count_lines(tmp_path / "a" / "b.log") == 4
    writer.close()
    writer.close()  # closing twice is fine
    with pytest.raises(ValueError):
        writer.append("out", b"x\n", 1, T0)


def test_invalid_stream_is_refused(tmp_path: Path) -> None:
    writer = LogWriter(tmp_path / "x.log", 0, LogOnFull.DROP_NEW)
    with pytest.raises(ValueError):
        writer.append("stdout", b"x\n", 1, T0)
    writer.close()


def test_text_is_decoded_with_replacement(tmp_path: Path) -> None:
    path = _write(tmp_path, [("out", "é\n".encode() + b"\xff\n")])
    assert [x.text for x in read_lines(path)] == ["é", "\ufffd"]


@pytest.mark.parametrize(
    ("start", "limit"), [(0, 1000), (0, 3), (5, 4), (37, 10), (99, 5), (150, 5)]
)
def test_paging(tmp_path: Path, start: int, limit: int) -> None:
    records = [
        ("out" if i % 3 else "err", b"".join(b"%d\n" % (i * 10 + j) for j in range(10)))
        for i in range(10)
    ]
    path = _write(tmp_path, records)
    got = read_lines(path, start, limit)
    want = list(range(start, min(start + limit, 100)))
    assert [x.n for x in got] == want
    assert [x.text for x in got] == [str(n) for n in want]


def test_iter_chunks_starts_at_the_record_holding_start(tmp_path: Path) -> None:
    path = _write(tmp_path, [("out", b"a\nb\nc\n"), ("err", b"d\ne\n")])
    chunks = list(iter_chunks(path, 4))
    assert chunks == [LogChunk(3, _at(1), "err", b"d\ne\n", 2)]
    assert [x.n for x in chunks[0].lines()] == [3, 4]
    assert list(iter_chunks(path, 5)) == []


def test_missing_log_reads_as_empty(tmp_path: Path) -> None:
    path = tmp_path / "nope.log"
    assert read_lines(path) == []
    assert count_lines(path) == 0
    assert list(iter_chunks(path)) == []
    assert list(iter_raw_text(path)) == []
    delete_log(path)


def test_raw_text_is_bodies_in_order_with_notices(tmp_path: Path) -> None:
    path = tmp_path / "r.log"
    writer = LogWriter(path, 0, LogOnFull.DROP_NEW)
    writer.append("out", b"a\n", 1, T0)
    writer.notice("[runyard] note", T0)
    big = b"z" * 99 + b"\n"
    for _ in range(6000):
        writer.append("err", big, 1, T0)
    writer.close()
    pieces = list(iter_raw_text(path))
    assert len(pieces) > 1  # streamed, not one 600 KB piece
    assert b"".join(pieces) == b"a\n[runyard] note\n" + big * 6000


@pytest.mark.parametrize("cut", [1, 5, 12, 20])
def test_partial_last_record_is_ignored(tmp_path: Path, cut: int) -> None:
    path = _write(tmp_path, [("out", b"one\ntwo\n"), ("err", b"three\nfour\n")])
    full = path.read_bytes()
    path.write_bytes(full[:-cut])  # the writer is halfway through the last record
    assert [x.text for x in read_lines(path)] == ["one", "two"]
    assert count_lines(path) == 2
    assert b"".join(iter_raw_text(path)) == b"one\ntwo\n"


def test_reader_sees_records_after_flush(tmp_path: Path) -> None:
    path = tmp_path / "live.log"
    writer = LogWriter(path, 0, LogOnFull.DROP_NEW)
    writer.append("out", b"a\n", 1, T0)
    writer.flush()
    assert [x.text for x in read_lines(path)] == ["a"]
    writer.append("out", b"b\n", 1, T0)
    writer.flush()
    assert count_lines(path) == 2
    writer.close()


def test_delete_log(tmp_path: Path) -> None:
    path = tmp_path / "d.log"
    writer = LogWriter(path, 40, LogOnFull.DROP_OLD)
    for i in range(20):
        writer.append("out", b"%08d\n" % i, 1, T0)
    writer.close()
    assert path.exists() and Path(f"{path}.old").exists()
    delete_log(path)
    assert not path.exists() and not Path(f"{path}.old").exists()
    delete_log(path)


# --- caps ------------------------------------------------------------------------------

LINE = b"0123456789abcdefghi\n"  # 20 bytes


def _fill(path: Path, on_full: LogOnFull, max_size: int, n: int, per: int = 1) -> LogWriter:
    writer = LogWriter(path, max_size, on_full)
    for i in range(n):
        writer.append("out", LINE * per, per, _at(i))
    return writer


def _body_bytes(path: Path) -> int:
    return sum(len(c.data) for c in iter_chunks(path) if c.stream != "sys")


@pytest.mark.parametrize("on_full", [LogOnFull.DROP_NEW, LogOnFull.KILL])
def test_drop_new_and_kill_keep_the_beginning(tmp_path: Path, on_full: LogOnFull) -> None:
    path = tmp_path / "c.log"
    writer = _fill(path, on_full, 1000, 30, per=3)  # 1800 bytes offered
    assert writer.overflowed is (on_full is LogOnFull.KILL)
    assert writer.append("out", LINE, 1, T0) == (writer.lines, 0)
    writer.close()
    lines = read_lines(path)
    out = [x for x in lines if x.stream == "out"]
    assert [x.n for x in out] == list(range(50))  # 1000 bytes of 20-byte lines
    assert _body_bytes(path) == 1000
    sys_lines = [x for x in lines if x.stream == "sys"]
    assert len(sys_lines) == 2
    assert sys_lines[0].n == 50  # the notice marks the gap; dropped lines get no numbers
    assert "log_max_size reached" in sys_lines[0].text
    assert ("stopping the run" in sys_lines[0].text) is (on_full is LogOnFull.KILL)
    assert sys_lines[1].text.startswith("[runyard] 41 lines (820 B) of output were dropped")
    assert count_lines(path) == 52


def test_drop_new_keeps_the_whole_lines_that_fit(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    writer = LogWriter(path, 50, LogOnFull.DROP_NEW)
    assert writer.append("out", LINE * 4, 4, T0) == (0, 2)
    assert not writer.overflowed
    writer.close()
    assert _body_bytes(path) == 40


def test_under_the_cap_nothing_is_noted(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    _fill(path, LogOnFull.KILL, 200, 10).close()
    assert [x.stream for x in read_lines(path)] == ["out"] * 10


@pytest.mark.parametrize(("max_size", "per"), [(200, 1), (200, 3), (1000, 7), (100, 20)])
def test_drop_old_keeps_the_most_recent_output(tmp_path: Path, max_size: int, per: int) -> None:
    path = tmp_path / "c.log"
    n = 100
    writer = _fill(path, LogOnFull.DROP_OLD, max_size, n, per=per)
    writer.flush()
    old = Path(f"{path}.old")
    assert old.exists()
    assert _body_bytes(path) <= max_size
    out = [x for x in read_lines(path, 0, 100_000) if x.stream == "out"]
    # Numbers stay absolute: the last line is numbered as if nothing was dropped,
    # counting the notices written at each new segment.
    assert out[-1].n == writer.lines - 1
    assert out[-1].at == _at(n - 1)
    numbers = [x.n for x in out]
    assert numbers == sorted(numbers)
    assert len(out) * len(LINE) > max_size // 4  # a useful part of the cap is kept
    first_sys = next(x for x in read_lines(path) if x.stream == "sys")
    assert "earlier output may have been dropped" in first_sys.text
    assert count_lines(path) == writer.lines
    writer.close()
    last = read_lines(path, count_lines(path) - 1)
    assert "of output were dropped" in last[0].text


def test_drop_old_reader_with_start_in_the_old_segment(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    writer = _fill(path, LogOnFull.DROP_OLD, 200, 30)
    writer.close()
    lines = read_lines(path, 0, 1000)
    mid = lines[len(lines) // 2].n
    assert read_lines(path, mid, 1000) == [x for x in lines if x.n >= mid]
    assert b"".join(iter_raw_text(path)).count(b"\n") == len(lines)


def test_drop_old_chunk_bigger_than_a_segment_keeps_its_tail(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    writer = LogWriter(path, 100, LogOnFull.DROP_OLD)
    writer.append("out", LINE, 1, T0)
    data = b"".join(b"%019d\n" % i for i in range(10))
    first, kept = writer.append("out", data, 10, T0)
    assert (first, kept) == (10, 2)  # lines 1..8 dropped as old, 9 is the notice
    writer.close()
    out = [(x.n, x.text) for x in read_lines(path) if x.stream == "out"]
    assert out == [(0, LINE[:-1].decode()), (10, "0" * 18 + "8"), (11, "0" * 18 + "9")]
    assert _body_bytes(path) <= 100


def test_drop_old_reader_dedupes_a_segment_seen_twice(tmp_path: Path) -> None:
    # A reader racing a rotation may see one segment as both current and .old.
    path = tmp_path / "c.log"
    old = Path(f"{path}.old")
    _fill(path, LogOnFull.DROP_OLD, 200, 30).close()
    both = read_lines(path)
    old.unlink()
    current = read_lines(path)
    assert current == both[-len(current) :] and len(current) < len(both)
    old.write_bytes(path.read_bytes())
    assert read_lines(path) == current
    path.unlink()  # mid-rotation: only .old is there
    assert read_lines(path) == current
    assert count_lines(path) == current[-1].n + 1


def test_rewriting_a_log_starts_afresh(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    _fill(path, LogOnFull.DROP_OLD, 100, 50).close()
    again = LogWriter(path, 100, LogOnFull.DROP_OLD)
    again.append("out", LINE, 1, T0)
    again.close()
    assert not Path(f"{path}.old").exists()
    assert count_lines(path) == 1


def test_a_silent_run_creates_no_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "quiet.log"
    LogWriter(path, 100, LogOnFull.DROP_NEW).close()
    assert not path.exists()
    assert read_lines(path) == []


def test_write_path_batches_small_records(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    writer = LogWriter(path, 0, LogOnFull.DROP_NEW)
    writer.append("out", LINE, 1, T0)
    assert not path.exists()  # buffered until flush; the file comes with the first write
    writer.append("out", LINE * 20_000, 20_000, T0)  # a big chunk goes straight out
    assert count_lines(path) == 20_001
    writer.close()


# --- followers --------------------------------------------------------------------------


def _chunk(i: int) -> LogChunk:
    return LogChunk(i, T0, "out", b"x\n", 1)


def test_followers_receive_chunks_then_none() -> None:
    async def scenario() -> None:
        hub = LogFollowers()
        assert not hub.has_followers("r")
        hub.publish("r", _chunk(0))  # nobody follows: nothing happens
        q1, q2 = hub.subscribe("r"), hub.subscribe("r")
        other = hub.subscribe("s")
        assert hub.has_followers("r")
        hub.publish("r", _chunk(1))
        hub.unsubscribe("r", q2)
        hub.publish("r", _chunk(2))
        hub.close_run("r")
        assert not hub.has_followers("r")
        assert [await q1.get() for _ in range(3)] == [_chunk(1), _chunk(2), None]
        assert [await q2.get()] == [_chunk(1)] and q2.empty()
        assert other.empty() and hub.has_followers("s")
        hub.unsubscribe("s", other)
        hub.unsubscribe("s", other)
        assert not hub.has_followers("s")

    asyncio.run(scenario())


def test_slow_follower_is_dropped() -> None:
    async def scenario() -> None:
        hub = LogFollowers()
        slow = hub.subscribe("r")
        for i in range(10_001):
            hub.publish("r", _chunk(i))
        assert not hub.has_followers("r")
        assert slow.qsize() == 10_001
        items = [slow.get_nowait() for _ in range(10_001)]
        assert items[-1] is None

    asyncio.run(scenario())


@pytest.mark.parametrize("on_full", [LogOnFull.DROP_NEW, LogOnFull.DROP_OLD])
def test_reading_while_another_thread_writes(tmp_path: Path, on_full: LogOnFull) -> None:
    path = tmp_path / "c.log"
    writer = LogWriter(path, 0 if on_full is LogOnFull.DROP_NEW else 2000, on_full)
    done = threading.Event()

    def write() -> None:
        for i in range(3000):
            writer.append("out", b"%019d\n" % i, 1, T0)
            if i % 7 == 0:
                writer.flush()
        writer.close()
        done.set()

    thread = threading.Thread(target=write)
    thread.start()
    seen = 0
    while not done.is_set() or seen < 2:
        lines = [x for x in read_lines(path, 0, 10_000) if x.stream == "out"]
        numbers = [x.n for x in lines]
        assert numbers == sorted(set(numbers))
        assert all(x.text.isdigit() and len(x.text) == 19 for x in lines)
        seen += done.is_set()
    thread.join()
    assert count_lines(path) == writer.lines
