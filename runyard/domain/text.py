"""Text runyard can store, hash and hand to a process: Unicode without NUL.

JSON lets a request carry two kinds of text that no store takes: a lone
surrogate (`"\\udc80"`), which is not Unicode and cannot be encoded as UTF-8
for the database, a hash or an environment variable; and NUL (`"\\u0000"`),
which PostgreSQL text refuses and which ends a C string (an environment
variable, an argument). Such text is refused where a request brings it in,
so it never reaches a write that other requests share.
"""

from __future__ import annotations

import re

# Any surrogate left in a Python str is a lone one: the JSON decoder joins pairs.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

NUL_PROBLEM = "contains a NUL character (\\u0000) at character {position}, which cannot be stored"
SURROGATE_PROBLEM = (
    "contains a lone surrogate ({escape}) at character {position}, which is not valid Unicode"
)


def text_problem(text: str) -> str | None:
    """Return why `text` cannot be stored ("contains a NUL character ..."), or None if it can."""
    if text.isascii():
        # The common case, without a regular expression: only NUL can be wrong.
        index = text.find("\x00")
        if index < 0:
            return None
    else:
        match = _UNSTORABLE.search(text)
        if match is None:
            return None
        index = match.start()
    if text[index] == "\x00":
        return NUL_PROBLEM.format(position=index + 1)
    return SURROGATE_PROBLEM.format(escape=_escape(text[index]), position=index + 1)


def is_storable(text: str) -> bool:
    """Return whether `text` holds neither NUL nor a lone surrogate."""
    if text.isascii():
        return "\x00" not in text
    return _UNSTORABLE.search(text) is None


def escape_unstorable(text: str) -> str:
    """Return `text` with each NUL and lone surrogate written as its `\\uXXXX` escape.

    For showing a refused value back to the caller: the escaped text can be
    encoded, and reads as what the caller sent.
    """
    if is_storable(text):
        return text
    return _UNSTORABLE.sub(lambda match: _escape(match.group()), text)


def _escape(char: str) -> str:
    return f"\\u{ord(char):04x}"
