"""Which nodes run a config unlike the others (runyard.domain.cluster): the CLI and dashboard."""

from __future__ import annotations

import pytest

from runyard.domain.cluster import config_norm, odd_nodes


@pytest.mark.parametrize(
    ("hashes", "answering", "norm", "odd"),
    [
        ({}, "a", "", []),
        ({"a": "x"}, "a", "x", []),
        ({"a": "x", "b": "x", "c": "x"}, "b", "x", []),
        # The hash most nodes share is the norm, whoever answers.
        ({"a": "x", "b": "y", "c": "x"}, "b", "x", ["b"]),
        ({"a": "y", "b": "x", "c": "x", "d": "z"}, "a", "x", ["a", "d"]),
        # A tie goes to the answering node's hash...
        ({"a": "x", "b": "y"}, "b", "y", ["a"]),
        ({"a": "x", "b": "y"}, "a", "x", ["b"]),
        # ...or, when it is not part of the tie, to the first hash listed.
        ({"a": "x", "b": "x", "c": "y", "d": "y", "e": "z"}, "e", "x", ["c", "d", "e"]),
        # An answering node missing from the list (it could not be read) breaks no tie.
        ({"a": "x", "b": "y"}, "gone", "x", ["b"]),
    ],
)
def test_the_norm_and_the_nodes_off_it(
    hashes: dict[str, str], answering: str, norm: str, odd: list[str]
) -> None:
    assert config_norm(hashes, answering) == norm
    assert odd_nodes(hashes, answering) == odd
