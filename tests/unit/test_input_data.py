from __future__ import annotations

import csv
import io
import json

import pytest

from runyard.domain.input_data import (
    SHAPE_MESSAGE,
    InputDataError,
    UnstorableCell,
    cell_text,
    json_kind,
    normalise_input,
    table_to_csv,
)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param([], [[]], id="empty-is-one-table-without-rows"),
        pytest.param([[]], [[[]]], id="one-empty-row"),
        pytest.param(
            [["name", "age"], ["ann", "31"]],
            [[["name", "age"], ["ann", "31"]]],
            id="2d-one-table",
        ),
        pytest.param([[], ["a"]], [[[], ["a"]]], id="2d-empty-row-kept"),
        pytest.param(
            [[["a", "b"]], [["c"], ["d"]]],
            [[["a", "b"]], [["c"], ["d"]]],
            id="3d-two-tables",
        ),
        pytest.param([[["a"]]], [[["a"]]], id="3d-one-table"),
        pytest.param([[], [["a"]]], [[], [["a"]]], id="3d-empty-table-first"),
        pytest.param([[["a"]], []], [[["a"]], []], id="3d-empty-table-last"),
        pytest.param([[[]]], [[[]]], id="3d-one-table-one-empty-row"),
        pytest.param(
            [[1, 2.0, 2.5, True, False, None, "x", ""]],
            [[["1", "2", "2.5", "true", "false", "", "x", ""]]],
            id="2d-coercions",
        ),
        pytest.param(
            [[[0, -0.0, 1e21, None]], [[False]]],
            [[["0", "0", "1e+21", ""]], [["false"]]],
            id="3d-coercions",
        ),
        pytest.param(
            [["ünïcødé ✓", "a,b", 'say "hi"', "two\nlines"]],
            [[["ünïcødé ✓", "a,b", 'say "hi"', "two\nlines"]]],
            id="strings-kept-verbatim",
        ),
    ],
)
def test_normalise_input(data: object, expected: list[list[list[str]]]) -> None:
    assert normalise_input(data) == expected


def test_normalise_input_from_json_text() -> None:
    data = json.loads('{"data": [["id", "price"], [7, 12.50], [8, null]]}')["data"]
    assert normalise_input(data) == [[["id", "price"], ["7", "12.5"], ["8", ""]]]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param("a,b\nc,d", id="string"),
        pytest.param("", id="empty-string"),
        pytest.param({"rows": [["a"]]}, id="object"),
        pytest.param({}, id="empty-object"),
        pytest.param(42, id="number"),
        pytest.param(1.5, id="float"),
        pytest.param(True, id="boolean"),
        pytest.param(None, id="null"),
        pytest.param(["a", "b"], id="rows-not-arrays"),
        pytest.param([1, 2], id="rows-are-numbers"),
        pytest.param([None], id="row-is-null"),
        pytest.param([{"a": 1}], id="row-is-object"),
        pytest.param([["a"], "b"], id="mixed-row-and-string"),
        pytest.param([["a"], {"b": 1}], id="mixed-row-and-object"),
        pytest.param([[["a"]], ["b"]], id="3d-table-with-string-row"),
        pytest.param([[["a"]], [["b"], "c"]], id="3d-row-not-array"),
        pytest.param([[["a"]], [None]], id="3d-row-null"),
        pytest.param([[["a"]], "b"], id="3d-then-string"),
        # An array among a row's cells makes the whole value read as 3-D, where
        # "a" is then a row that is not an array.
        pytest.param([["a", ["nested"]]], id="2d-array-cell-reads-as-3d"),
        pytest.param([["a"], ["b", ["c"]]], id="2d-array-cell-in-row-2"),
        pytest.param([[{"k": 1}], "x"], id="shape-checked-before-cells"),
        pytest.param([[["a"]], [[{"k": 1}]], ["b"]], id="3d-shape-checked-before-cells"),
    ],
)
def test_wrong_shapes_are_refused(data: object) -> None:
    with pytest.raises(InputDataError) as caught:
        normalise_input(data)
    assert caught.value.message == SHAPE_MESSAGE
    assert str(caught.value) == SHAPE_MESSAGE


def test_shape_message_is_the_documented_text() -> None:
    assert SHAPE_MESSAGE == "Data must be sent as an array of arrays."


@pytest.mark.parametrize(
    ("data", "where"),
    [
        pytest.param([["a", {"k": 1}]], "table 1, row 1, column 2 holds an object", id="2d-object"),
        pytest.param(
            [["a"], ["b", "c", {}]], "table 1, row 2, column 3 holds an object", id="2d-row2"
        ),
        pytest.param(
            [[["a"]], [["b"], ["c", ["d"]]]],
            "table 2, row 2, column 2 holds an array",
            id="3d-nested-array",
        ),
        pytest.param(
            [[["a", {"k": "v"}]]], "table 1, row 1, column 2 holds an object", id="3d-object"
        ),
        pytest.param([[[[]]]], "table 1, row 1, column 1 holds an array", id="depth-4"),
    ],
)
def test_nested_cells_are_refused(data: object, where: str) -> None:
    with pytest.raises(InputDataError) as caught:
        normalise_input(data)
    assert caught.value.message == (
        f"Data cells must be strings, numbers, booleans or null: {where}."
    )


@pytest.mark.parametrize(
    ("data", "path", "where", "problem", "shown"),
    [
        pytest.param(
            [["ok", "\udc80"]],
            (0, 1),
            "table 1, row 1, column 2",
            "contains a lone surrogate (\\udc80) at character 1, which is not valid Unicode",
            "\\udc80",
            id="2d-surrogate",
        ),
        pytest.param(
            [["h"], [1, "a\x00b"]],
            (1, 1),
            "table 1, row 2, column 2",
            "contains a NUL character (\\u0000) at character 2, which cannot be stored",
            "a\\u0000b",
            id="2d-nul",
        ),
        pytest.param(
            [[["a"]], [["b"], ["c", "\ud800x"]]],
            (1, 1, 1),
            "table 2, row 2, column 2",
            "contains a lone surrogate (\\ud800) at character 1, which is not valid Unicode",
            "\\ud800x",
            id="3d-surrogate",
        ),
        # Two halves of a pair in neighbouring cells are two lone surrogates.
        pytest.param(
            [["\ud83d", "\ude00"]],
            (0, 0),
            "table 1, row 1, column 1",
            "contains a lone surrogate (\\ud83d) at character 1, which is not valid Unicode",
            "\\ud83d",
            id="split-pair",
        ),
    ],
)
def test_cells_that_cannot_be_stored_are_refused(
    data: object, path: tuple[int, ...], where: str, problem: str, shown: str
) -> None:
    with pytest.raises(UnstorableCell) as caught:
        normalise_input(data)
    assert caught.value.path == path
    assert caught.value.location == "".join(f"[{index}]" for index in path)
    assert caught.value.problem == problem
    assert caught.value.shown == shown
    assert caught.value.message == f"Data cell at {where} {problem}."
    caught.value.message.encode("utf-8")  # the v3 answer can carry it


def test_a_wrong_shape_is_answered_before_a_cell_that_cannot_be_stored() -> None:
    with pytest.raises(InputDataError) as caught:
        normalise_input([["\x00"], "row"])
    assert not isinstance(caught.value, UnstorableCell)
    assert caught.value.message == SHAPE_MESSAGE


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("text", "text"),
        ("", ""),
        (None, ""),
        (True, "true"),
        (False, "false"),
        (0, "0"),
        (-12, "-12"),
        (12345678901234567890123, "12345678901234567890123"),
        (2.0, "2"),
        (-2.0, "-2"),
        (-0.0, "0"),
        (1.5, "1.5"),
        (0.1 + 0.2, "0.30000000000000004"),
        (1e20, "100000000000000000000"),
        (1e21, "1e+21"),
        (1.5e300, "1.5e+300"),
        (0.000001, "0.000001"),
        (1e-7, "1e-7"),
        (-2.5e-10, "-2.5e-10"),
        (123.456, "123.456"),
        (float("nan"), "NaN"),
        (float("inf"), "Infinity"),
        (float("-inf"), "-Infinity"),
        ({}, None),
        ([], None),
        ((), None),
    ],
)
def test_cell_text_matches_javascript_string(cell: object, expected: str | None) -> None:
    assert cell_text(cell) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [({}, "an object"), ([], "an array"), ("", "a string"), (True, "a boolean"), (1.5, "a number")],
)
def test_json_kind(value: object, expected: str) -> None:
    assert json_kind(value) == expected


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ([], ""),
        ([["a", "b"], ["c", "d"]], "a,b\nc,d\n"),
        ([["a,b", 'say "hi"', "x\ny"]], '"a,b","say ""hi""","x\ny"\n'),
        ([[], ["a"]], "\na\n"),
        ([["", "z"]], ",z\n"),
    ],
)
def test_table_to_csv(table: list[list[str]], expected: str) -> None:
    assert table_to_csv(table) == expected


def test_table_to_csv_round_trips() -> None:
    table = [["name", "note"], ["ann", "likes, commas"], ["bob", 'a "quote"\nand a newline']]
    assert list(csv.reader(io.StringIO(table_to_csv(table), newline=""))) == table
