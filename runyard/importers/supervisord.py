"""`runyard import supervisord`: supervisord's programs as runyard services.

supervisord keeps programs running; a runyard service does the same. Each
`[program:x]` becomes `[services.x]`, key by key where runyard has the same
idea (numprocs → instances, autorestart → restart, startsecs →
healthy_after, startretries → restart_attempts, ...). What runyard has no
form for (its own log files, event listeners, the supervisord daemon's own
sections) is listed with the reason, never dropped silently.

supervisord runs `command` without a shell; the service's `run` is the same
command after `exec`, so the shell runyard starts is replaced by the program
and signals reach it directly.
"""

from __future__ import annotations

import configparser
import glob
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from runyard.importers.common import Imported, Skipped, unique_name

# supervisord's defaults, where they differ from runyard's.
_DEFAULTS = {
    "autorestart": "unexpected",
    "startsecs": "1",
    "startretries": "3",
    "stopsignal": "TERM",
    "stopwaitsecs": "10",
    "numprocs": "1",
    "numprocs_start": "0",
    "priority": "999",
    "autostart": "true",
    "exitcodes": "0",
}
_RESTART = {"true": "always", "false": "never", "unexpected": "on_failure"}
# Keys whose work runyard does itself, differently: listed, not translated.
_OWN_LOGS = (
    "stdout_logfile",
    "stdout_logfile_maxbytes",
    "stdout_logfile_backups",
    "stdout_capture_maxbytes",
    "stdout_events_enabled",
    "stdout_syslog",
    "stderr_logfile",
    "stderr_logfile_maxbytes",
    "stderr_logfile_backups",
    "stderr_capture_maxbytes",
    "stderr_events_enabled",
    "stderr_syslog",
    "redirect_stderr",
)
_NOTES = {
    **{key: "runyard keeps each instance's output in its own log" for key in _OWN_LOGS},
    "stopasgroup": "runyard always signals the whole process group",
    "killasgroup": "runyard always signals the whole process group",
    "serverurl": "no supervisorctl inside runyard services",
}
_HANDLED = {
    "command",
    "process_name",
    "numprocs",
    "numprocs_start",
    "priority",
    "autostart",
    "autorestart",
    "startsecs",
    "startretries",
    "exitcodes",
    "stopsignal",
    "stopwaitsecs",
    "user",
    "directory",
    "environment",
    "umask",
}
_EXPANSION = re.compile(r"%\((\w+)\)([-#0 +]*\d*)([sd])")
_DAEMON_SECTIONS = ("supervisord", "supervisorctl", "unix_http_server", "inet_http_server")


@dataclass
class _Program:
    name: str
    keys: dict[str, object] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def import_supervisord(path: Path, *, daemon_user: str) -> Imported:
    """Translate the supervisord config at `path` (and the files it includes)."""
    result = Imported()
    parser = configparser.RawConfigParser(
        inline_comment_prefixes=(";",), strict=False, default_section="__none__"
    )
    here = path.absolute().parent
    files = [path]
    parser.read(path, encoding="utf-8")
    if parser.has_section("include"):
        for pattern in parser.get("include", "files", fallback="").split():
            found = sorted(glob.glob(str(here / pattern)))
            if not found:
                result.skipped.append(Skipped(0, f"[include] files = {pattern}", "no file matches"))
            files += [Path(name) for name in found]
            parser.read(found, encoding="utf-8")
    for section in parser.sections():
        kind, _, name = section.partition(":")
        if section == "include":
            continue
        if kind in _DAEMON_SECTIONS or kind == "rpcinterface":
            result.skipped.append(
                Skipped(0, f"[{section}]", "supervisord's own settings; runyard has [daemon]")
            )
            continue
        if kind == "group":
            result.skipped.append(
                Skipped(0, f"[{section}]", "runyard has no groups; its programs are imported")
            )
            continue
        if kind != "program" or not name:
            result.skipped.append(
                Skipped(0, f"[{section}]", f"{kind or section} sections have no runyard form")
            )
            continue
        values = dict(parser.items(section))
        translated = _program(name, values, here, daemon_user)
        if isinstance(translated, str):
            result.skipped.append(Skipped(0, f"[{section}]", translated))
            continue
        for note in translated.notes:
            result.skipped.append(Skipped(0, f"[{section}]", note))
        service_name = unique_name(result.services, _sanitise(name))
        result.add_service(service_name, translated.keys, 0, f"[{section}]")
    return result


def _program(name: str, raw: dict[str, str], here: Path, daemon_user: str) -> _Program | str:
    """The service keys of one `[program:x]`, or why it cannot be one."""
    values = {**_DEFAULTS, **raw}
    program = _Program(name)
    keys = program.keys
    if "command" not in raw:
        return "no command"
    start = _int(values["numprocs_start"])
    count = _int(values["numprocs"])
    if count is None or not 1 <= count <= 64:
        return f"numprocs = {values['numprocs']}: runyard runs 1 to 64 instances"
    if start is None:
        return f"numprocs_start = {values['numprocs_start']}: not a number"
    command, problems = _expand(values["command"], name, here, start, in_shell=True)
    if problems:
        return "command: " + "; ".join(problems)
    try:
        words = shlex.split(command, posix=True)
    except ValueError as error:
        return f"command: {error}"
    if not words:
        return "empty command"
    keys["run"] = "exec " + command
    if count != 1:
        keys["instances"] = count
    if (restart := _RESTART.get(values["autorestart"].lower())) is None:
        return f"autorestart = {values['autorestart']}: expected true, false or unexpected"
    keys["restart"] = restart
    if values["exitcodes"].replace(" ", "") != "0":
        program.notes.append(
            f"exitcodes = {values['exitcodes']}: a runyard service's expected exit is 0; "
            "autorestart = unexpected restarts after any other"
        )
    for key, target in (("startsecs", "healthy_after"), ("stopwaitsecs", "graceful_stop")):
        seconds = _int(values[key])
        if seconds is None:
            return f"{key} = {values[key]}: not a number of seconds"
        keys[target] = f"{seconds}s"
    attempts = _int(values["startretries"])
    if attempts is None or not 0 <= attempts <= 100:
        return f"startretries = {values['startretries']}: runyard allows 0 to 100"
    keys["restart_attempts"] = attempts
    keys["stop_signal"] = "SIG" + values["stopsignal"].upper().removeprefix("SIG")
    priority = _int(values["priority"])
    if priority is None:
        return f"priority = {values['priority']}: not a number"
    keys["priority"] = priority
    keys["autostart"] = values["autostart"].lower() == "true"
    if "directory" in raw:
        directory, problems = _expand(raw["directory"], name, here, start, in_shell=False)
        if problems:
            return "directory: " + "; ".join(problems)
        keys["working_dir"] = directory
    if "user" in raw and raw["user"] != daemon_user:
        if daemon_user != "root":
            return (
                f"user = {raw['user']}: a service runs as another user than the daemon's "
                f"({daemon_user}) only when the daemon runs as root"
            )
        keys["user"] = raw["user"]
    if "environment" in raw:
        env = _environment(raw["environment"])
        if isinstance(env, str):
            return env
        keys["env"] = env
    if raw.get("process_name", "%(program_name)s") != "%(program_name)s":
        program.notes.append(
            f"process_name = {raw['process_name']}: runyard names the instances "
            f"{name}/0, {name}/1, ... and tells each its index in RUNYARD_REPLICA_INDEX"
        )
    if "umask" in raw:
        program.notes.append(f"umask = {raw['umask']}: services take the daemon's umask")
    for key in sorted(set(raw) - _HANDLED):
        note = _NOTES.get(key, "no runyard form")
        program.notes.append(f"{key} = {raw[key]}: {note}")
    return program


def _expand(
    text: str, name: str, here: Path, start: int, *, in_shell: bool
) -> tuple[str, list[str]]:
    """supervisord's %(...)s expansions in runyard's terms, and those that have none.

    In a command the environment is the shell's (`"${X}"`); elsewhere it is
    the config's own `${X}`, read from the daemon's environment at load.
    """
    problems: list[str] = []

    def replace(match: re.Match[str]) -> str:
        key, spec, kind = match.groups()
        if key == "here":
            return str(here)
        if key in ("program_name", "group_name"):
            return name
        if key.startswith("ENV_"):
            variable = "${" + key.removeprefix("ENV_") + "}"
            return f'"{variable}"' if in_shell else variable
        if key == "process_num" and in_shell:
            number = "$RUNYARD_REPLICA_INDEX"
            if start:
                number = f"$((RUNYARD_REPLICA_INDEX + {start}))"
            if spec:  # a width or padding: %(process_num)02d
                return f'"$(printf \'%{spec}d\' "{number}")"'
            return f'"{number}"'
        problems.append(f"{match.group(0)}: no runyard form here")
        return ""

    return _EXPANSION.sub(replace, text).replace("%%", "%"), problems


def _environment(text: str) -> dict[str, str] | str:
    """`KEY="value",KEY2='v'` as supervisord writes it."""
    lexer = shlex.shlex(text, posix=True)
    lexer.whitespace = ","
    lexer.whitespace_split = True
    env: dict[str, str] = {}
    try:
        for item in lexer:
            key, equals, value = item.strip().partition("=")
            if not equals or not key:
                return f"environment: {item!r} is not KEY=value"
            env[key.strip()] = value
    except ValueError as error:
        return f"environment: {error}"
    return env


def _int(text: str) -> int | None:
    try:
        return int(text.strip())
    except ValueError:
        return None


def _sanitise(name: str) -> str:
    cleaned = re.sub(r"[^a-zA-Z0-9._-]+", "-", name).strip("-.")[:100]
    return cleaned or "program"
