"""`${VAR}` and `${VAR:-default}` in config values, from the daemon's environment.

Values only (never keys), after TOML has read them, so TOML's own escaping is
untouched. `$${` writes a literal `${`. A task's or service's `run` (and a
health check's `run`) is left alone: it is a shell script, and the shell
expands its `${VAR}` when the process starts (with its own environment,
params included).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from runyard.config.checks import Problems, key_path

_REFERENCE = re.compile(r"\$(\$?)\{([^}]*)\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Keys whose strings are shell scripts, expanded by the shell instead.
_SCRIPTS = frozenset({"run"})


def interpolate(
    document: object,
    environ: Mapping[str, str],
    problems: Problems,
    at: tuple[str, ...] = (),
) -> object:
    """Return `document` with every `${...}` in its string values replaced.

    `at` is where `document` sits in the file (e.g. `("daemon",)`), for messages.
    """
    return _walk(document, at, environ, problems)


def _walk(
    value: object, keys: tuple[str, ...], environ: Mapping[str, str], problems: Problems
) -> object:
    if isinstance(value, str):
        return _expand(value, _path(keys), environ, problems)
    if isinstance(value, dict):
        return {
            key: item if _is_script(keys, key) else _walk(item, (*keys, key), environ, problems)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [
            _walk(item, (*keys[:-1], f"{keys[-1]}[{index}]") if keys else keys, environ, problems)
            for index, item in enumerate(value)
        ]
    return value


def _is_script(keys: tuple[str, ...], key: str) -> bool:
    # [tasks.<name>] and [services.<name>] run = ..., and a service's health check command.
    if key not in _SCRIPTS or not keys or keys[0] not in ("tasks", "services"):
        return False
    return len(keys) == 2 or keys[0] == "services" and keys[2:] == ("health_check",)


def _path(keys: tuple[str, ...]) -> str:
    path = ""
    for key in keys:
        path = key_path(path, key) if not key.endswith("]") else f"{path}.{key}"
    return path


def _expand(text: str, path: str, environ: Mapping[str, str], problems: Problems) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(1):
            return "${" + match.group(2) + "}"  # $${...}: a literal ${...}
        inner = match.group(2)
        name, separator, default = inner.partition(":-")
        if not _NAME.fullmatch(name):
            problems.add(path, f"${{{inner}}}: expected ${{NAME}} or ${{NAME:-default}}")
            return match.group(0)
        found = environ.get(name)
        if found:
            return found
        if separator:
            return default
        if found is None:
            problems.add(
                path,
                f"${{{name}}} is not set in the daemon's environment "
                f"(write ${{{name}:-default}} for a fallback, or $${{{name}}} for the text)",
            )
            return match.group(0)
        return found  # set but empty, and no default asked for

    return _REFERENCE.sub(replace, text)
