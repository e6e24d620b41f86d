from __future__ import annotations

import pytest

from runyard.domain.output_data import (
    TOKEN_PATTERN,
    OutputDataError,
    collect_output,
    is_valid_token,
    parse_output_file,
    printable_name,
    split_output_name,
)

MIB = 1024 * 1024


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("sheet", True),
        ("A", True),
        ("9", True),
        ("google-sheet-data", True),
        ("My Sheet 2.v1_final", True),
        ("a" * 100, True),
        ("a" * 101, False),
        ("", False),
        (".hidden", False),
        ("-dash", False),
        (" space", False),
        ("_under", False),
        ("a/b", False),
        ("a\\b", False),
        ("tab\there", False),
        ("sheet\n", False),  # "$" alone would let a trailing newline through
        ("ünï", False),
        ("a:b", False),
    ],
)
def test_is_valid_token(name: str, valid: bool) -> None:
    assert is_valid_token(name) is valid


def test_token_pattern_is_the_published_one() -> None:
    assert TOKEN_PATTERN == r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}$"


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("sheet.csv", ("sheet", "csv")),
        ("a.b.tsv", ("a.b", "tsv")),
        ("Data.JSON", ("Data", "json")),
        ("x.jsonl", ("x", "jsonl")),
        ("notes.txt", None),
        ("csv", None),
        ("sheet.csv.bak", None),
    ],
)
def test_split_output_name(filename: str, expected: tuple[str, str] | None) -> None:
    assert split_output_name(filename) == expected


@pytest.mark.parametrize(
    ("filename", "content", "expected"),
    [
        pytest.param("s.csv", b"a,b\nc,d\n", ("s", [["a", "b"], ["c", "d"]]), id="csv"),
        pytest.param("s.csv", b"a,b\r\nc,d\r\n", ("s", [["a", "b"], ["c", "d"]]), id="csv-crlf"),
        pytest.param("s.csv", b"a,b\nc,d", ("s", [["a", "b"], ["c", "d"]]), id="csv-no-final-eol"),
        pytest.param("s.csv", b"\xef\xbb\xbfa,b\n", ("s", [["a", "b"]]), id="csv-bom"),
        pytest.param(
            "s.csv",
            b'"a,b","say ""hi""","x\ny"\n',
            ("s", [["a,b", 'say "hi"', "x\ny"]]),
            id="csv-quoting",
        ),
        pytest.param("s.csv", b"a\n\n\n\n", ("s", [["a"]]), id="csv-trailing-blank-lines"),
        pytest.param("s.csv", b"a\n\nb\n", ("s", [["a"], [], ["b"]]), id="csv-inner-blank-kept"),
        pytest.param("s.csv", b"", ("s", []), id="csv-empty"),
        pytest.param("s.csv", "prix,€\n".encode(), ("s", [["prix", "€"]]), id="csv-utf8-multibyte"),
        pytest.param("s.tsv", b"a\tb,c\n1\t2\n", ("s", [["a", "b,c"], ["1", "2"]]), id="tsv"),
        pytest.param(
            "s.json",
            b'[["a", 1, 2.0, 1.5, true, null], []]',
            ("s", [["a", "1", "2", "1.5", "true", ""], []]),
            id="json",
        ),
        pytest.param("s.json", b"[]", ("s", []), id="json-empty"),
        pytest.param("s.json", b'\xef\xbb\xbf[["a"]]', ("s", [["a"]]), id="json-bom"),
        pytest.param("s.json", b"[[NaN, -Infinity]]", ("s", [["NaN", "-Infinity"]]), id="json-nan"),
        pytest.param(
            "s.jsonl",
            b'["a", 1]\n\n  \n["b", false]\n',
            ("s", [["a", "1"], ["b", "false"]]),
            id="jsonl-blank-lines-skipped",
        ),
        pytest.param("s.jsonl", b'["a"]\r\n["b"]', ("s", [["a"], ["b"]]), id="jsonl-crlf"),
        pytest.param(
            "s.jsonl",
            '["one\u2028two"]\n'.encode(),
            ("s", [["one\u2028two"]]),
            id="jsonl-line-separator-inside-string",
        ),
        pytest.param("s.jsonl", b"", ("s", []), id="jsonl-empty"),
        pytest.param("My Sheet.v2.csv", b"x\n", ("My Sheet.v2", [["x"]]), id="token-with-dots"),
    ],
)
def test_parse_output_file(
    filename: str, content: bytes, expected: tuple[str, list[list[str]]]
) -> None:
    assert parse_output_file(filename, content) == expected


@pytest.mark.parametrize(
    ("filename", "content", "message"),
    [
        pytest.param(
            "notes.txt",
            b"",
            "notes.txt: only .csv, .tsv, .json and .jsonl files are read",
            id="ext",
        ),
        pytest.param(
            "-bad.csv",
            b"a\n",
            "-bad.csv: invalid token name '-bad': use up to 100 letters, digits, spaces, "
            "'.', '_' or '-', starting with a letter or digit",
            id="token",
        ),
        pytest.param(".csv", b"a\n", ".csv: invalid token name ''", id="empty-token"),
        pytest.param("s.csv", b"a,\xff\n", "s.csv: not valid UTF-8 (byte 2)", id="utf8"),
        pytest.param(
            "s.json",
            b'[\n  ["a"],\n    ,\n]',
            "s.json: not valid JSON (line 3, column 5: Expecting value)",
            id="json-syntax",
        ),
        pytest.param(
            "s.json", b"", "s.json: not valid JSON (line 1, column 1: Expecting value)", id="empty"
        ),
        pytest.param(
            "s.json",
            b'{"a": 1}',
            "s.json: must hold a 2-D array (an array of rows of cells)",
            id="json-object",
        ),
        pytest.param("s.json", b'"text"', "s.json: must hold a 2-D array", id="json-string"),
        pytest.param("s.json", b'["a", "b"]', "s.json: must hold a 2-D array", id="json-1d"),
        pytest.param("s.json", b'[["a"], 3]', "s.json: must hold a 2-D array", id="json-mixed"),
        pytest.param(
            "s.json",
            b'[["a"], ["b", "c", ["d"]]]',
            "s.json: row 2, cell 3 holds an array; "
            "cells must be strings, numbers, booleans or null",
            id="json-nested-array",
        ),
        pytest.param(
            "s.json",
            b'[[{"k": 1}]]',
            "s.json: row 1, cell 1 holds an object",
            id="json-object-cell",
        ),
        pytest.param(
            "s.json", b"[" * 100_000, "s.json: JSON nested too deeply", id="json-too-deep"
        ),
        pytest.param(
            "s.jsonl",
            b'["a"]\n\n["b",]\n',
            "s.jsonl: not valid JSON (line 3, column 6: Expecting value)",
            id="jsonl-syntax-line-number",
        ),
        pytest.param(
            "s.jsonl", b'["a"]\n{"b": 1}\n', "s.jsonl: line 2 is not a JSON array", id="jsonl-obj"
        ),
        pytest.param(
            "s.jsonl", b'["a"]\n"b"\n', "s.jsonl: line 2 is not a JSON array", id="jsonl-string"
        ),
        pytest.param(
            "s.jsonl",
            b'["a"]\n["b", {"c": 1}]\n',
            "s.jsonl: line 2, cell 2 holds an object",
            id="jsonl-nested",
        ),
    ],
)
def test_parse_output_file_errors(filename: str, content: bytes, message: str) -> None:
    with pytest.raises(OutputDataError) as caught:
        parse_output_file(filename, content)
    assert caught.value.message.startswith(message)
    assert caught.value.filename == filename


def test_csv_with_a_cell_over_the_field_limit_is_an_error_not_a_crash() -> None:
    with pytest.raises(OutputDataError, match=r"^s\.csv: not valid CSV \(line 1: field larger"):
        parse_output_file("s.csv", b'"' + b"x" * 200_000 + b'"\n')


def _notes_and_data(
    files: list[tuple[str, bytes]], max_bytes: int = MIB
) -> tuple[dict[str, list[list[str]]], list[str]]:
    return collect_output(files, max_bytes)


def test_collect_output_reads_every_format() -> None:
    data, notes = _notes_and_data(
        [
            ("d.jsonl", b'["4"]\n'),
            ("a.csv", b"1,2\n"),
            ("c.json", b'[["3"]]'),
            ("b.tsv", b"x\ty\n"),
        ]
    )
    assert data == {"a": [["1", "2"]], "b": [["x", "y"]], "c": [["3"]], "d": [["4"]]}
    assert notes == []


def test_collect_output_with_nothing() -> None:
    assert collect_output([], MIB) == ({}, [])


def test_collect_output_ignores_dot_files_silently() -> None:
    data, notes = _notes_and_data([(".sheet.csv.123.tmp", b"half"), (".hidden.csv", b"a\n")])
    assert (data, notes) == ({}, [])


def test_collect_output_notes_other_extensions() -> None:
    data, notes = _notes_and_data([("notes.txt", b"hello"), ("s.csv", b"a\n")])
    assert data == {"s": [["a"]]}
    assert notes == [
        "Ignored output file notes.txt: only .csv, .tsv, .json and .jsonl files are read."
    ]


def test_collect_output_turns_malformed_files_into_notes() -> None:
    data, notes = _notes_and_data(
        [("bad.json", b"[\n  [1],\n  nope\n]"), ("good.csv", b"a\n"), ("-x.csv", b"a\n")]
    )
    assert data == {"good": [["a"]]}
    assert notes == [
        "Ignored output file -x.csv: invalid token name '-x': use up to 100 letters, digits, "
        "spaces, '.', '_' or '-', starting with a letter or digit.",
        "Ignored output file bad.json: not valid JSON (line 3, column 3: Expecting value).",
    ]


def test_collect_output_keeps_the_first_file_of_a_token_in_name_order() -> None:
    data, notes = _notes_and_data(
        [("sheet.json", b'[["from json"]]'), ("sheet.csv", b"from csv\n"), ("sheet.tsv", b"t\n")]
    )
    assert data == {"sheet": [["from csv"]]}
    assert notes == [
        "Ignored output file sheet.json: sheet.csv already holds the data for token sheet.",
        "Ignored output file sheet.tsv: sheet.csv already holds the data for token sheet.",
    ]


def test_a_malformed_file_does_not_claim_its_token() -> None:
    data, notes = _notes_and_data([("sheet.csv", b"\xff\n"), ("sheet.json", b'[["ok"]]')])
    assert data == {"sheet": [["ok"]]}
    assert notes == ["Ignored output file sheet.csv: not valid UTF-8 (byte 0)."]


@pytest.mark.parametrize(
    ("max_bytes", "kept", "skipped"),
    [
        pytest.param(14, ["a", "b", "c"], [], id="all-fit-exactly"),
        pytest.param(13, ["a", "b"], ["c.csv"], id="last-one-over"),
        pytest.param(7, ["a", "c"], ["b.csv"], id="smaller-later-file-still-fits"),
        pytest.param(3, ["c"], ["a.csv", "b.csv"], id="only-the-small-one"),
        pytest.param(0, [], ["a.csv", "b.csv", "c.csv"], id="none"),
    ],
)
def test_collect_output_caps_total_bytes(
    max_bytes: int, kept: list[str], skipped: list[str]
) -> None:
    files = [("c.csv", b"c\n"), ("b.csv", b"bbbbbbb\n"), ("a.csv", b"aaa\n")]  # 2 + 8 + 4 bytes
    data, notes = _notes_and_data(files, max_bytes)
    assert sorted(data) == kept
    assert notes == [
        f"Ignored output file {name}: output data is capped at 0.0 MiB per run." for name in skipped
    ]


@pytest.mark.parametrize(
    ("max_bytes", "shown"),
    [(10 * MIB, "10.0 MiB"), (MIB + MIB // 2, "1.5 MiB"), (MIB // 10, "0.1 MiB")],
)
def test_cap_note_shows_mib(max_bytes: int, shown: str) -> None:
    data, notes = _notes_and_data([("big.csv", b"x" * (max_bytes + 1))], max_bytes)
    assert data == {}
    assert notes == [f"Ignored output file big.csv: output data is capped at {shown} per run."]


def test_skipped_duplicates_and_malformed_files_do_not_use_the_cap() -> None:
    files = [("a.csv", b"\xff"), ("b.csv", b"12345"), ("b.json", b'[["1"]]'), ("c.csv", b"123")]
    data, _notes = _notes_and_data(files, 8)
    assert data == {"b": [["12345"]], "c": [["123"]]}


# ----- file names in descriptions ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("sheet.csv", "sheet.csv"),
        ("Zoë résumé 2.csv", "Zoë résumé 2.csv"),
        ("a\u00a0b.csv", "a\u00a0b.csv"),  # a no-break space breaks no line
        ("a\\b.csv", "a\\b.csv"),
        ("x\nSucceeded.csv", "x\\nSucceeded.csv"),
        ("x\r\n.csv", "x\\r\\n.csv"),
        ("tab\there.csv", "tab\\there.csv"),
        ("\x1b[31mred.csv", "\\x1b[31mred.csv"),
        ("nul\x00.csv", "nul\\x00.csv"),
        ("del\x7f.csv", "del\\x7f.csv"),
        ("next\x85line.csv", "next\\x85line.csv"),
        ("line\u2028sep.csv", "line\\u2028sep.csv"),
        ("para\u2029sep.csv", "para\\u2029sep.csv"),
        ("evil\u202egnp.csv", "evil\\u202egnp.csv"),
        ("iso\u2066late.csv", "iso\\u2066late.csv"),
    ],
)
def test_printable_name(name: str, shown: str) -> None:
    assert printable_name(name) == shown


def test_collect_output_escapes_names_in_its_notes() -> None:
    files = [
        ("x\nSucceeded after 1s (exit code 0).txt", b""),
        ("bad\x1b.csv", b"a\n"),
        ("sheet\n.json", b"{"),
        ("sheet.json", b"[[1]]"),
        ("sheet.csv", b"a\n"),
    ]
    data, notes = collect_output(files, 10)
    assert data == {"sheet": [["a"]]}
    assert notes == [
        "Ignored output file bad\\x1b.csv: invalid token name 'bad\\x1b': use "
        "up to 100 letters, digits, spaces, '.', '_' or '-', starting with a letter or digit.",
        "Ignored output file sheet\\n.json: invalid token name 'sheet\\n': use "
        "up to 100 letters, digits, spaces, '.', '_' or '-', starting with a letter or digit.",
        "Ignored output file sheet.json: sheet.csv already holds the data for token sheet.",
        "Ignored output file x\\nSucceeded after 1s (exit code 0).txt: "
        "only .csv, .tsv, .json and .jsonl files are read.",
    ]
    assert all(len(note.splitlines()) == 1 for note in notes)


def test_output_data_error_names_the_file_printably() -> None:
    with pytest.raises(OutputDataError) as caught:
        parse_output_file("a\nb.csv", b"x")
    assert caught.value.message.startswith("a\\nb.csv: ")
    assert caught.value.filename == "a\nb.csv"
