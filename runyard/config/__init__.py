"""Read runyard.toml: the daemon settings and the task definitions.

The names below load on first use: a CLI command that only needs the
`[daemon]` table (`runyard.config.daemon`) must not pay for the task checks
and the cron parser that `load_config` brings in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runyard.config.daemon import DaemonSettings
    from runyard.config.loader import (
        EXAMPLE_CONFIG_PATH,
        Config,
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


def __getattr__(name: str) -> Any:
    if name in __all__:
        from runyard.config import loader

        return getattr(loader, name)
    raise AttributeError(f"module 'runyard.config' has no attribute {name!r}")
