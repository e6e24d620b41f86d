"""The lookup rule for the config, the data dir and the token, step by step."""

from __future__ import annotations

from pathlib import Path

import pytest

from runyard.config.locate import (
    Located,
    explicit_data_dir,
    find_config,
    find_data_dir,
    token_file,
    token_from_environ,
)

CONFIG = Path("/srv/app/runyard.toml")


@pytest.mark.parametrize(
    ("flag", "environ", "expected"),
    [
        ("x.toml", {"RUNYARD_CONFIG": "/etc/ry.toml"}, Located(Path.cwd() / "x.toml", "--config")),
        (
            None,
            {"RUNYARD_CONFIG": "/etc/ry.toml"},
            Located(Path("/etc/ry.toml"), "$RUNYARD_CONFIG"),
        ),
        (
            None,
            {"RUNYARD_CONFIG": ""},
            Located(Path.cwd() / "runyard.toml", "the default ./runyard.toml"),
        ),
        (None, {}, Located(Path.cwd() / "runyard.toml", "the default ./runyard.toml")),
    ],
)
def test_find_config(flag: str | None, environ: dict[str, str], expected: Located) -> None:
    assert find_config(flag, environ) == expected


@pytest.mark.parametrize(
    ("flag", "environ", "from_file", "expected"),
    [
        ("d", {"RUNYARD_DATA_DIR": "/e"}, "f", Located(Path.cwd() / "d", "--data-dir")),
        (None, {"RUNYARD_DATA_DIR": "e"}, "f", Located(Path.cwd() / "e", "$RUNYARD_DATA_DIR")),
        (
            None,
            {},
            "state",
            Located(Path("/srv/app/state"), "[daemon] data_dir in /srv/app/runyard.toml"),
        ),
        (
            None,
            {},
            None,
            Located(Path("/srv/app/.runyard"), ".runyard next to /srv/app/runyard.toml"),
        ),
    ],
)
def test_find_data_dir(
    flag: str | None, environ: dict[str, str], from_file: str | None, expected: Located
) -> None:
    assert find_data_dir(flag, environ, CONFIG, from_file) == expected


def test_explicit_data_dir_needs_no_config() -> None:
    assert explicit_data_dir(None, {}) is None
    assert explicit_data_dir(None, {"RUNYARD_DATA_DIR": "/d"}) == Located(
        Path("/d"), "$RUNYARD_DATA_DIR"
    )


def test_token() -> None:
    assert token_file(Path("/d")) == Path("/d/token")
    assert token_from_environ({"RUNYARD_TOKEN": "t"}) == "t"
    assert token_from_environ({"RUNYARD_TOKEN": ""}) is None
    assert str(Located(Path("/d"), "--data-dir")) == "/d (--data-dir)"
