"""Read runyard.toml: the daemon settings and the task definitions."""

from __future__ import annotations

from runyard.config.loader import (
    EXAMPLE_CONFIG_PATH,
    Config,
    DaemonSettings,
    load_config,
    parse_config_text,
    resolve_config_path,
)

__all__ = [
    "EXAMPLE_CONFIG_PATH",
    "Config",
    "DaemonSettings",
    "load_config",
    "parse_config_text",
    "resolve_config_path",
]
