"""`[daemon] include = ["tasks.d/*.toml"]`: more files of `[tasks.<name>]` tables.

Patterns are globs relative to the config file's directory, matched in
sorted order. An included file holds task tables only; its relative paths
(`working_dir`, `env_file`) are relative to its own directory, and `${VAR}`
works there as in the main file. A task name defined twice is an error
naming both files.
"""

from __future__ import annotations

import glob
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from runyard.config.checks import Problems, check_str, describe
from runyard.config.interpolate import interpolate
from runyard.config.reading import parse_toml, read_config_text
from runyard.exceptions import ConfigError


@dataclass(frozen=True)
class Included:
    path: Path  # absolute
    shown: str  # as the user would name it: relative to the config's directory
    tasks: object  # the raw `tasks` table


def check_include(value: object, problems: Problems) -> tuple[str, ...] | None:
    """Return the `include` patterns: a list of non-empty strings."""
    if not isinstance(value, list):
        problems.add("daemon.include", f"expected a list of file patterns, got {describe(value)}")
        return None
    patterns = []
    for index, item in enumerate(value):
        pattern = check_str(item, f"daemon.include[{index}]", problems, non_empty=True)
        if pattern is not None:
            patterns.append(pattern)
    return tuple(patterns) if len(patterns) == len(value) else None


def read_included(
    patterns: tuple[str, ...],
    config_path: Path,
    environ: Mapping[str, str],
    problems: Problems,
) -> list[Included]:
    """Read every file the patterns match (each once, never the config itself)."""
    base = config_path.parent
    seen: set[Path] = {config_path}
    found: list[Included] = []
    for index, pattern in enumerate(patterns):
        full = pattern if Path(pattern).is_absolute() else str(base / pattern)
        matches = sorted(Path(match).absolute() for match in glob.glob(full, recursive=True))
        files = [match for match in matches if match.is_file()]
        if not files:
            problems.warn(f"daemon.include[{index}]", f"{pattern!r} matches no file")
        for path in files:
            if path in seen:
                continue
            seen.add(path)
            shown = str(path.relative_to(base)) if path.is_relative_to(base) else str(path)
            own = Problems()
            try:
                document = parse_toml(read_config_text(path), path)
            except ConfigError as error:
                for problem in error.problems:
                    problems.errors.append(f"{shown}: {problem}")
                continue
            expanded = interpolate(document, environ, own)
            assert isinstance(expanded, dict)  # a TOML document is a table
            for key in expanded:
                if key != "tasks":
                    own.add(key, "an included file holds [tasks.<name>] tables only")
            problems.errors += [f"{shown}: {problem}" for problem in own.errors]
            found.append(Included(path, shown, expanded.get("tasks", {})))
    return found
