"""The systemd unit that starts runyard at boot (`runyard service install`).

Pure: the caller says where runyard, the config and the data dir are.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

UNIT_NAME = "runyard.service"
# Beyond the daemon's own shutdown_timeout, before systemd sends SIGKILL: the
# daemon needs a moment after its runs stop to record their ends.
STOP_MARGIN = timedelta(seconds=15)


@dataclass(frozen=True)
class UnitSpec:
    command: Path  # the `runyard` script, absolute
    config: Path  # absolute
    data_dir: Path | None  # absolute; None: the config's own (or its default)
    working_dir: Path  # absolute
    shutdown_timeout: timedelta
    path: str  # PATH the runs get, as the installing shell had it
    user: str | None  # User= of a system unit; None: root (or the user manager's user)
    user_unit: bool  # a `systemctl --user` unit rather than a system one
    environment_file: Path | None = None  # 0600 file with secrets (RUNYARD_DATABASE_URL)


def render_unit(spec: UnitSpec) -> str:
    """The unit file's text."""
    argv = [str(spec.command), "--config", str(spec.config)]
    if spec.data_dir is not None:
        argv += ["--data-dir", str(spec.data_dir)]
    argv.append("serve")
    stop_seconds = int((spec.shutdown_timeout + STOP_MARGIN).total_seconds())
    service = [
        "Type=exec",
        f"ExecStart={_exec_line(argv)}",
        "ExecReload=/bin/kill -HUP $MAINPID",
        f"WorkingDirectory={_escape(str(spec.working_dir))}",
        f"Environment={_quote_assignment('PATH', spec.path)}",
        "Environment=PYTHONUNBUFFERED=1",
    ]
    if spec.environment_file is not None:
        service.append(f"EnvironmentFile={_escape(str(spec.environment_file))}")
    if spec.user and not spec.user_unit:
        service.append(f"User={spec.user}")
    service += [
        "Restart=on-failure",
        "RestartSec=5s",
        # SIGTERM to runyard alone: it stops its runs itself (their process
        # groups), waits shutdown_timeout, and records how each ended. SIGKILL
        # for everything left in the unit only after that.
        "KillMode=mixed",
        f"TimeoutStopSec={stop_seconds}s",
    ]
    lines = [
        "# Written by `runyard service install`; `runyard service uninstall` removes it.",
        "[Unit]",
        f"Description=runyard automation runner ({_escape(str(spec.config))})",
    ]
    if not spec.user_unit:
        lines += ["After=network-online.target", "Wants=network-online.target"]
    lines += ["", "[Service]", *service, "", "[Install]"]
    lines.append(f"WantedBy={'default.target' if spec.user_unit else 'multi-user.target'}")
    return "\n".join(lines) + "\n"


def unit_path(user_unit: bool, config_home: Path) -> Path:
    """Where the unit is installed: the system's units, or the user's.

    `config_home` is $XDG_CONFIG_HOME, else ~/.config (systemd's own rule).
    """
    if user_unit:
        return config_home / "systemd" / "user" / UNIT_NAME
    return Path("/etc/systemd/system") / UNIT_NAME


def _escape(value: str) -> str:
    # systemd expands % specifiers in most settings: a literal % is %%.
    return value.replace("%", "%%")


def _exec_line(argv: list[str]) -> str:
    # ExecStart= splits on spaces and honours double and single quotes like a
    # shell; $ starts a variable, written $$ for a literal one.
    return " ".join(_escape(shlex.quote(arg)).replace("$", "$$") for arg in argv)


def _quote_assignment(name: str, value: str) -> str:
    escaped = _escape(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{name}={escaped}"'
