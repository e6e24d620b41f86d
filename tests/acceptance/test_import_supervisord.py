"""`runyard import supervisord` against supervisord's own reading of the same file.

supervisor's own config parser (the `supervisor` package, a dev dependency)
reads a crafted supervisord.conf with every rule the import translates; the
imported runyard.toml must validate, and each service must say what
supervisord resolved: each instance's command (run through the shell with its
RUNYARD_REPLICA_INDEX), environment, directory, user, restart and stop rules.
"""

from __future__ import annotations

import os
import pwd
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
from runyard_harness import cli_env, run_cli
from supervisor.options import ServerOptions

CONF = """\
[supervisord]
logfile={here}/supervisord.log
pidfile={here}/supervisord.pid

[unix_http_server]
file={here}/supervisor.sock

[program:web]
command=/usr/bin/python3 -m http.server %(ENV_PORT)s --bind 127.0.0.1 ; the site
directory=%(here)s
environment=MODE="production",GREETING='hi, there',EMPTY=""
autorestart=true
startsecs=5
startretries=10
stopsignal=INT
stopwaitsecs=30
priority=10
stdout_logfile=%(here)s/web.log
redirect_stderr=true

[program:worker]
command=/usr/local/bin/worker --id %(process_num)02d --name %(program_name)s --raw %(process_num)d
process_name=%(program_name)s_%(process_num)02d
numprocs=3
numprocs_start=1
autostart=false
autorestart=unexpected
user=nobody

[program:once]
command=/bin/echo "100%% done" 'it''s'
autorestart=false

[include]
files = conf.d/*.conf
"""

INCLUDED = """\
[program:extra]
command=/bin/sleep 100
directory=/tmp
stopsignal=HUP
"""
RESTART = {
    "RestartUnconditionally": "always",
    "RestartWhenExitUnexpected": "on_failure",
    False: "never",
}


def supervisords_reading(conf: Path) -> dict[str, list[Any]]:
    """Program name -> supervisord's resolved config of each of its processes."""
    options = ServerOptions()
    options.realize(args=["-c", str(conf)])
    return {group.name: list(group.process_configs) for group in options.process_group_configs}


def words_of(run: str, index: int) -> list[str]:
    """The argv the service's `run` execs for the instance `index`, as the shell builds it."""
    assert run.startswith("exec "), run
    printed = subprocess.run(
        ["/bin/sh", "-c", "printf '%s\\n' " + run.removeprefix("exec ")],
        env={"PATH": "/usr/bin:/bin", "PORT": "8123", "RUNYARD_REPLICA_INDEX": str(index)},
        capture_output=True,
        text=True,
        check=True,
    )
    return printed.stdout.splitlines()


def test_imported_services_say_what_supervisord_resolved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.geteuid() != 0:
        pytest.fail("runs as root: a program of user=nobody imports with `user` only then")
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "extra.conf").write_text(INCLUDED, encoding="utf-8")
    conf = tmp_path / "supervisord.conf"
    conf.write_text(CONF.format(here=tmp_path), encoding="utf-8")
    monkeypatch.setenv("PORT", "8123")
    supervisord = supervisords_reading(conf)
    assert sorted(supervisord) == ["extra", "once", "web", "worker"]

    config = tmp_path / "runyard.toml"
    imported = run_cli("import", "supervisord", str(conf), "--write", str(config), env=cli_env())
    assert imported.returncode == 0, imported.stderr
    assert imported.stderr.splitlines()[-1] == f"wrote 4 services to {config}"
    validated = run_cli("--config", str(config), "validate", env=cli_env())
    assert validated.returncode == 0, validated.stdout + validated.stderr
    services = tomllib.loads(config.read_text(encoding="utf-8"))["services"]
    assert sorted(services) == sorted(supervisord)

    for name, processes in supervisord.items():
        service = services[name]
        first = processes[0]
        assert service.get("instances", 1) == len(processes), name
        for index, process in enumerate(processes):
            assert words_of(service["run"], index) == shlex.split(process.command), name
        # supervisord's autorestart: False, or the class of the rule.
        rule = getattr(first.autorestart, "__name__", first.autorestart)
        assert service["restart"] == RESTART[rule], name
        assert service["healthy_after"] == f"{first.startsecs}s"
        assert service["restart_attempts"] == first.startretries
        assert service["stop_signal"] == f"SIG{_signal_name(first.stopsignal)}"
        assert service["graceful_stop"] == f"{first.stopwaitsecs}s"
        assert service["priority"] == first.priority
        assert service["autostart"] is first.autostart
        assert service.get("env", {}) == (first.environment or {})
        assert service.get("working_dir") == first.directory
        user = pwd.getpwuid(first.uid).pw_name if first.uid is not None else None
        assert service.get("user") == user, name

    # What has no runyard form is listed, never dropped.
    listed = imported.stderr
    assert "not translated: stdout_logfile = " in listed
    assert "not translated: process_name = %(program_name)s_%(process_num)02d" in listed
    assert "not translated: supervisord's own settings" in listed


def _signal_name(number: int) -> str:
    import signal

    return signal.Signals(number).name.removeprefix("SIG")


def test_an_unreadable_file_and_an_existing_target(tmp_path: Path) -> None:
    missing = run_cli("import", "supervisord", str(tmp_path / "nope.conf"), env=cli_env())
    assert missing.returncode == 1
    assert f"cannot read {tmp_path / 'nope.conf'}" in missing.stderr
    conf = tmp_path / "supervisord.conf"
    conf.write_text("[program:a]\ncommand=/bin/true\n", encoding="utf-8")
    target = tmp_path / "runyard.toml"
    target.write_text("# mine\n", encoding="utf-8")
    refused = run_cli("import", "supervisord", str(conf), "--write", str(target), env=cli_env())
    assert refused.returncode == 1
    assert f"{target} exists; add --force to replace it" in refused.stderr
    broken = tmp_path / "broken.conf"
    broken.write_text("command=/bin/true\n", encoding="utf-8")
    said = run_cli("import", "supervisord", str(broken), env=cli_env())
    assert said.returncode == 1
    assert said.stderr.startswith(f"runyard import supervisord: {broken}: File contains no section")
