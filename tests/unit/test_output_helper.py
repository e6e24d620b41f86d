"""The helper scripts import to write output data: `from runyard import output`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runyard import output
from runyard.domain.output_data import parse_output_file


@pytest.fixture
def environ(tmp_path: Path) -> dict[str, str]:
    return {output.OUTPUT_DIR_ENV: str(tmp_path)}


def _rows(directory: Path, token: str) -> list[list[str]]:
    filename = f"{token}.csv"
    return parse_output_file(filename, (directory / filename).read_bytes())[1]


@pytest.mark.parametrize("environ", [{}, {output.OUTPUT_DIR_ENV: ""}], ids=["unset", "empty"])
def test_output_dir_outside_a_run(environ: dict[str, str]) -> None:
    with pytest.raises(output.OutputNotAvailable) as caught:
        output.output_dir(environ)
    assert str(caught.value) == (
        "RUNYARD_OUTPUT_DIR is not set: output data can only be written by a process runyard runs."
    )


@pytest.mark.parametrize(
    "call",
    [
        lambda env: output.append("t", ["a"], environ=env),
        lambda env: output.append_rows("t", [["a"]], environ=env),
        lambda env: output.write("t", [["a"]], environ=env),
    ],
    ids=["append", "append_rows", "write"],
)
def test_writers_outside_a_run(call: Callable[[dict[str, str]], None]) -> None:
    with pytest.raises(output.OutputNotAvailable):
        call({})


def test_output_dir(tmp_path: Path, environ: dict[str, str]) -> None:
    assert output.output_dir(environ) == tmp_path
    assert output.OUTPUT_DIR_ENV == "RUNYARD_OUTPUT_DIR"


def test_append_converts_cells(tmp_path: Path, environ: dict[str, str]) -> None:
    output.append("prices", ["apple", 1.25, 3, None, True, "a,b", 'say "hi"'], environ=environ)
    output.append("prices", ["pear"], environ=environ)
    assert _rows(tmp_path, "prices") == [
        ["apple", "1.25", "3", "", "True", "a,b", 'say "hi"'],
        ["pear"],
    ]
    assert (tmp_path / "prices.csv").read_bytes().startswith(b'apple,1.25,3,,True,"a,b"')


def test_append_rows(tmp_path: Path, environ: dict[str, str]) -> None:
    output.append_rows("t", [["h1", "h2"], ("a", "b")], environ=environ)
    output.append_rows("t", iter([["c", "d\nmultiline"]]), environ=environ)
    assert _rows(tmp_path, "t") == [["h1", "h2"], ["a", "b"], ["c", "d\nmultiline"]]


def test_append_rows_without_rows_still_creates_the_token(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    output.append_rows("empty", [], environ=environ)
    assert (tmp_path / "empty.csv").read_bytes() == b""


def test_unicode_is_written_as_utf8(tmp_path: Path, environ: dict[str, str]) -> None:
    output.append("u", ["ünïcødé", "€"], environ=environ)
    assert (tmp_path / "u.csv").read_bytes() == "ünïcødé,€\n".encode()


def test_write_replaces_the_data(tmp_path: Path, environ: dict[str, str]) -> None:
    output.append("t", ["old"], environ=environ)
    output.write("t", [["new", 1], ["row", 2]], environ=environ)
    assert _rows(tmp_path, "t") == [["new", "1"], ["row", "2"]]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["t.csv"]


def test_write_failure_leaves_no_temp_file(tmp_path: Path, environ: dict[str, str]) -> None:
    (tmp_path / "t.csv").mkdir()  # os.replace cannot put a file over a directory
    with pytest.raises(OSError):
        output.write("t", [["x"]], environ=environ)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["t.csv"]


def test_a_failing_row_iterator_keeps_the_old_data(tmp_path: Path, environ: dict[str, str]) -> None:
    output.write("t", [["old"]], environ=environ)

    def rows() -> Iterator[list[str]]:
        yield ["new"]
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError, match="source broke"):
        output.write("t", rows(), environ=environ)
    assert _rows(tmp_path, "t") == [["old"]]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["t.csv"]


@pytest.mark.parametrize("token", ["", "../escape", "a/b", ".hidden", "-x", "x" * 101, "é"])
@pytest.mark.parametrize("writer", ["append", "append_rows", "write"])
def test_invalid_token(tmp_path: Path, environ: dict[str, str], token: str, writer: str) -> None:
    call = getattr(output, writer)
    row_or_rows: object = ["a"] if writer == "append" else [["a"]]
    with pytest.raises(ValueError) as caught:
        call(token, row_or_rows, environ=environ)
    assert repr(token) in str(caught.value)
    assert "letters, digits, spaces, '.', '_' or '-'" in str(caught.value)
    assert list(tmp_path.iterdir()) == []
    assert not (tmp_path.parent / "escape.csv").exists()


def test_a_string_row_is_refused(tmp_path: Path, environ: dict[str, str]) -> None:
    with pytest.raises(TypeError, match="not str"):
        output.append("t", "abc", environ=environ)
    assert list(tmp_path.iterdir()) == []


WORKER = textwrap.dedent(
    """
    import sys
    from runyard import output

    worker = sys.argv[1]
    padding = "x" * 3000  # long lines make a torn write likely if appends were not atomic
    for index in range(200):
        output.append("shared", [worker, index, padding])
    """
)


def test_concurrent_appends_never_interleave(tmp_path: Path) -> None:
    env = {**os.environ, output.OUTPUT_DIR_ENV: str(tmp_path)}
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, f"w{number}"], env=env)
        for number in range(4)
    ]
    assert [worker.wait(timeout=60) for worker in workers] == [0, 0, 0, 0]
    rows = _rows(tmp_path, "shared")
    assert len(rows) == 800
    assert all(row[2] == "x" * 3000 and len(row) == 3 for row in rows)
    for number in range(4):
        indexes = [int(row[1]) for row in rows if row[0] == f"w{number}"]
        assert indexes == list(range(200))  # each worker's rows, whole and in order


READER_WRITER = textwrap.dedent(
    """
    import sys
    from runyard import output

    big = [["a" * 100] for _ in range(2000)]
    small = [["b"]]
    for _ in range(int(sys.argv[1])):
        output.write("swap", big)
        output.write("swap", small)
    """
)


def test_write_replaces_atomically(tmp_path: Path) -> None:
    output.write("swap", [["b"]], environ={output.OUTPUT_DIR_ENV: str(tmp_path)})
    big = ("a" * 100 + "\n") * 2000
    env = {**os.environ, output.OUTPUT_DIR_ENV: str(tmp_path)}
    writer = subprocess.Popen([sys.executable, "-c", READER_WRITER, "300"], env=env)
    seen: set[str] = set()
    try:
        while writer.poll() is None:
            text = (tmp_path / "swap.csv").read_text(encoding="utf-8")
            assert text in {big, "b\n"}, f"a reader saw a partial file of {len(text)} characters"
            seen.add(text)
    finally:
        writer.wait(timeout=60)
    assert writer.returncode == 0
    assert seen  # the loop really read while the writer ran
    assert [path.name for path in tmp_path.iterdir()] == ["swap.csv"]


def test_the_helper_stays_light() -> None:
    code = "import sys, json; from runyard import output; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    loaded = set(json.loads(result.stdout))
    heavy = {"fastapi", "starlette", "sqlalchemy", "pydantic", "uvicorn", "typer", "httpx"}
    assert not heavy & {name.split(".")[0] for name in loaded}
    assert {name for name in loaded if name.startswith("runyard")} <= {
        "runyard",
        "runyard.output",
        "runyard.domain",
        "runyard.domain.input_data",
        "runyard.domain.output_data",
        "runyard.domain.run_environment",  # the variable names: no imports at all
        "runyard.domain.text",  # the storable-text rule of input data: stdlib only
    }
