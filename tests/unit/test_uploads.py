"""Finding a v3 body's key without parsing it, and what an invalid key counts for."""

from __future__ import annotations

import json

import pytest

from runyard.api.uploads import INVALID_KEY_BYTES_PER_CALL, invalid_key_weight, key_of

DATA = [["x" * 10] for _ in range(20_000)]


def body(*members: tuple[str, object]) -> bytes:
    return json.dumps(dict(members)).encode()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (body(("key", "ryk_first"), ("name", "a"), ("data", DATA)), "ryk_first"),
        (body(("name", "a"), ("data", DATA), ("key", "ryk_last")), "ryk_last"),
        (b'  {  "key" :  "ryk_spaced" , "data": [["a"]] }  ', "ryk_spaced"),
        (b'{"data": [["a"]], "key": "ryk_\\"quoted\\u0041"}\n', 'ryk_"quotedA'),
        # In the middle, after the data: not found without parsing.
        (body(("data", DATA), ("key", "ryk_mid"), ("name", "a")), None),
        # Not a string: left to the full check.
        (body(("key", 12345), ("data", DATA)), None),
        # A "key" inside the data is not the body's key.
        (body(("name", "a"), ("data", [['"key": "inner"']])), None),
        (b'{"data": [["\\", \\"key\\": \\"inner\\"}"]]}', None),
        (b"not json at all", None),
        (b"", None),
    ],
    ids=[
        "first",
        "last",
        "blanks",
        "escapes",
        "middle",
        "number",
        "inside-data",
        "escaped-inside-data",
        "not-json",
        "empty",
    ],
)
def test_key_of(raw: bytes, expected: str | None) -> None:
    assert key_of(raw) == expected


def test_key_of_agrees_with_the_parser_on_first_and_last_members() -> None:
    for raw in (
        body(("key", "k1"), ("data", DATA)),
        body(("data", DATA), ("key", "k2")),
    ):
        assert key_of(raw) == json.loads(raw)["key"]


@pytest.mark.parametrize(
    ("size", "weight"),
    [
        (0, 1),
        (INVALID_KEY_BYTES_PER_CALL - 1, 1),
        (INVALID_KEY_BYTES_PER_CALL, 2),
        (10 * 2**20, 11),
    ],
)
def test_an_invalid_key_counts_one_call_plus_one_per_mib_of_body(size: int, weight: int) -> None:
    assert invalid_key_weight(size) == weight
