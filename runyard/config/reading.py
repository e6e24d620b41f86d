"""Read the config file's bytes as TOML, each failure a ConfigError naming the file."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from runyard.exceptions import ConfigError

_TOML_POSITION = re.compile(r"\s*\((at line \d+, column \d+|at end of document)\)$")


def read_config_text(path: Path, source: str = "") -> str:
    """Return the text of the config file; `source` says why this path was tried."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        why = f" (looked here as {source})" if source else ""
        raise ConfigError(str(path), [f"file not found{why}"]) from None
    except IsADirectoryError:
        raise ConfigError(str(path), ["is a directory, not a file"]) from None
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read the file: {exc.strerror or exc}"]) from None
    try:
        # utf-8-sig: tolerate the byte-order mark some Windows editors write.
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            str(path), [f"not UTF-8 text (invalid byte at offset {exc.start})"]
        ) from None


def parse_toml(text: str, path: Path) -> dict[str, Any]:
    """Return the TOML document in `text`; a syntax error names its line and column."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [_syntax_problem(exc)]) from None


def _syntax_problem(exc: tomllib.TOMLDecodeError) -> str:
    """Turn tomllib's `Message (at line 3, column 5)` into `TOML syntax error at ...`."""
    message = str(exc)
    match = _TOML_POSITION.search(message)
    if match is None:
        return f"TOML syntax error: {message}"
    return f"TOML syntax error {match.group(1)}: {message[: match.start()]}"
