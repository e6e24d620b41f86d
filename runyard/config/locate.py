"""Where runyard finds its config file, its data dir and its API token.

One rule, used by `runyard serve` and by every other command alike, so the
CLI finds the daemon that was started from the same place:

- config:   `--config PATH`, else `$RUNYARD_CONFIG`, else `./runyard.toml`;
- data dir: `--data-dir PATH`, else `$RUNYARD_DATA_DIR` (both relative to the
  current directory), else `[daemon] data_dir` (relative to the config file),
  else `.runyard` next to the config file;
- token:    `$RUNYARD_TOKEN`, else the file `<data dir>/token`;
- daemon URL (the CLI only): `--url`, else `$RUNYARD_URL`, else the config's
  `[daemon] host` and `port`.

Each choice remembers which step of the rule made it, so an error can name the
path it tried and why it tried that one. This module imports nothing heavy:
every CLI command passes through it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

CONFIG_ENV = "RUNYARD_CONFIG"
DATA_DIR_ENV = "RUNYARD_DATA_DIR"
TOKEN_ENV = "RUNYARD_TOKEN"
URL_ENV = "RUNYARD_URL"
DEFAULT_CONFIG_NAME = "runyard.toml"
DEFAULT_DATA_DIR_NAME = ".runyard"
TOKEN_FILE = "token"


@dataclass(frozen=True)
class Located:
    """A path the rule chose, and the step of the rule that chose it."""

    path: Path  # absolute
    source: str  # e.g. "--config", "$RUNYARD_CONFIG", "the default ./runyard.toml"

    def __str__(self) -> str:
        return f"{self.path} ({self.source})"


def absolute_path(base_dir: Path, raw: str) -> Path:
    """Return `raw` as an absolute path, a relative one taken from `base_dir`."""
    # normpath, not resolve(): keep the symlinks the user wrote.
    return Path(os.path.normpath(base_dir / Path(raw).expanduser()))


def find_config(cli_value: str | None, environ: Mapping[str, str] = os.environ) -> Located:
    """Return the config file to read: --config, else $RUNYARD_CONFIG, else ./runyard.toml."""
    cwd = Path.cwd()
    if cli_value:
        return Located(absolute_path(cwd, cli_value), "--config")
    from_env = environ.get(CONFIG_ENV)
    if from_env:
        return Located(absolute_path(cwd, from_env), f"${CONFIG_ENV}")
    return Located(absolute_path(cwd, DEFAULT_CONFIG_NAME), f"the default ./{DEFAULT_CONFIG_NAME}")


def find_data_dir(
    cli_value: str | None,
    environ: Mapping[str, str],
    config_path: Path,
    from_file: str | None,
) -> Located:
    """Return the data dir: --data-dir, else $RUNYARD_DATA_DIR, else the file's, else .runyard."""
    # The flag and the variable come from the shell, so they are relative to the
    # current directory; the file's value is relative to the file, wherever it is
    # run from.
    cwd = Path.cwd()
    if cli_value:
        return Located(absolute_path(cwd, cli_value), "--data-dir")
    from_env = environ.get(DATA_DIR_ENV)
    if from_env:
        return Located(absolute_path(cwd, from_env), f"${DATA_DIR_ENV}")
    config_dir = config_path.parent
    if from_file:
        return Located(absolute_path(config_dir, from_file), f"[daemon] data_dir in {config_path}")
    return Located(
        config_dir / DEFAULT_DATA_DIR_NAME, f"{DEFAULT_DATA_DIR_NAME} next to {config_path}"
    )


def explicit_data_dir(cli_value: str | None, environ: Mapping[str, str]) -> Located | None:
    """Return the data dir given by --data-dir or $RUNYARD_DATA_DIR, or None (read the config)."""
    if not (cli_value or environ.get(DATA_DIR_ENV)):
        return None
    # The config path does not matter: both steps come before the config's own.
    return find_data_dir(cli_value, environ, Path.cwd() / DEFAULT_CONFIG_NAME, None)


def token_file(data_dir: Path) -> Path:
    """Return the file the daemon keeps its generated token in."""
    return data_dir / TOKEN_FILE


def token_from_environ(environ: Mapping[str, str]) -> str | None:
    """Return $RUNYARD_TOKEN when set: it wins over the token file."""
    return environ.get(TOKEN_ENV) or None
