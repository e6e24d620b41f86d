from __future__ import annotations

import pytest

from runyard.domain.text import escape_unstorable, is_storable, text_problem

NUL = "contains a NUL character (\\u0000) at character {}, which cannot be stored"
SURROGATE = "contains a lone surrogate ({}) at character {}, which is not valid Unicode"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param("", None, id="empty"),
        pytest.param("plain ascii, with\ttab and\nnewline", None, id="ascii"),
        pytest.param("ünïcødé ✓ 😀", None, id="unicode-with-astral"),
        pytest.param("\x01\x7f", None, id="other-control-characters"),
        pytest.param("\x00", NUL.format(1), id="nul-alone"),
        pytest.param("ab\x00", NUL.format(3), id="nul-ascii"),
        pytest.param("ü\x00", NUL.format(2), id="nul-after-non-ascii"),
        pytest.param("\udc80", SURROGATE.format("\\udc80", 1), id="low-surrogate"),
        pytest.param("x\ud83d", SURROGATE.format("\\ud83d", 2), id="high-surrogate-alone"),
        pytest.param("\ude00\ud83d", SURROGATE.format("\\ude00", 1), id="pair-in-wrong-order"),
        pytest.param("é\udfff\x00", SURROGATE.format("\\udfff", 2), id="first-problem-wins"),
    ],
)
def test_text_problem(text: str, problem: str | None) -> None:
    assert text_problem(text) == problem
    assert is_storable(text) is (problem is None)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain", "plain"),
        ("a\x00b", "a\\u0000b"),
        ("\udc80ü\ud800", "\\udc80ü\\ud800"),
    ],
)
def test_escape_unstorable(text: str, shown: str) -> None:
    assert escape_unstorable(text) == shown
    assert is_storable(shown)
    shown.encode("utf-8")  # what the answer carries can be encoded
