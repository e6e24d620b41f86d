"""supervisord's programs as runyard services: each key and expansion, and what is listed."""

from __future__ import annotations

from pathlib import Path

from runyard.importers.common import render_config
from runyard.importers.supervisord import import_supervisord

CONF = """\
[supervisord]
logfile=/var/log/supervisord.log

[unix_http_server]
file=/run/supervisor.sock

[program:web]
command=/usr/bin/python3 -m http.server %(ENV_PORT)s --bind 127.0.0.1 ; serves the site
directory=%(here)s/site
environment=MODE="production",GREETING='hi, there',EMPTY=""
autorestart=true
startsecs=5
startretries=10
stopsignal=INT
stopwaitsecs=30
priority=10
stdout_logfile=/var/log/web.log
redirect_stderr=true

[program:worker]
command=/usr/local/bin/worker --id %(process_num)02d --name %(program_name)s
process_name=%(program_name)s_%(process_num)02d
numprocs=3
numprocs_start=1
autostart=false
user=alice

[program:defaults]
command=/bin/cat

[program:bad]
command=/bin/run --host %(host_node_name)s

[group:all]
programs=web,worker

[eventlistener:crashmail]
command=crashmail -a

[include]
files = conf.d/*.conf
"""

INCLUDED = """\
[program:extra]
command=/bin/sleep 100
autorestart=unexpected
exitcodes=0,2
"""


def imported(tmp_path: Path, daemon_user: str = "root") -> tuple[dict, list[tuple[str, str]]]:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "extra.conf").write_text(INCLUDED, encoding="utf-8")
    conf = tmp_path / "supervisord.conf"
    conf.write_text(CONF, encoding="utf-8")
    result = import_supervisord(conf, daemon_user=daemon_user)
    return result.services, [(s.text, s.reason) for s in result.skipped]


def test_programs_become_services_key_by_key(tmp_path: Path) -> None:
    services, _ = imported(tmp_path)
    assert list(services) == ["web", "worker", "defaults", "extra"]
    assert services["web"] == {
        "run": 'exec /usr/bin/python3 -m http.server "${PORT}" --bind 127.0.0.1',
        "restart": "always",
        "healthy_after": "5s",
        "graceful_stop": "30s",
        "restart_attempts": 10,
        "stop_signal": "SIGINT",
        "priority": 10,
        "autostart": True,
        "working_dir": f"{tmp_path}/site",
        "env": {"MODE": "production", "GREETING": "hi, there", "EMPTY": ""},
    }
    assert services["worker"]["run"] == (
        "exec /usr/local/bin/worker --id "
        '"$(printf \'%02d\' "$((RUNYARD_REPLICA_INDEX + 1))")" --name worker'
    )
    assert (services["worker"]["instances"], services["worker"]["user"]) == (3, "alice")
    assert services["worker"]["autostart"] is False
    # supervisord's defaults, written out: restart only after an unexpected exit.
    assert services["defaults"] == {
        "run": "exec /bin/cat",
        "restart": "on_failure",
        "healthy_after": "1s",
        "graceful_stop": "10s",
        "restart_attempts": 3,
        "stop_signal": "SIGTERM",
        "priority": 999,
        "autostart": True,
    }


def test_what_has_no_runyard_form_is_listed_with_why(tmp_path: Path) -> None:
    _, skipped = imported(tmp_path)
    logs = "runyard keeps each instance's output in its own log"
    assert skipped == [
        ("[supervisord]", "supervisord's own settings; runyard has [daemon]"),
        ("[unix_http_server]", "supervisord's own settings; runyard has [daemon]"),
        ("[program:web]", f"redirect_stderr = true: {logs}"),
        ("[program:web]", f"stdout_logfile = /var/log/web.log: {logs}"),
        (
            "[program:worker]",
            "process_name = %(program_name)s_%(process_num)02d: runyard names the instances "
            "worker/0, worker/1, ... and tells each its index in RUNYARD_REPLICA_INDEX",
        ),
        ("[program:bad]", "command: %(host_node_name)s: no runyard form here"),
        ("[group:all]", "runyard has no groups; its programs are imported"),
        ("[eventlistener:crashmail]", "eventlistener sections have no runyard form"),
        (
            "[program:extra]",
            "exitcodes = 0,2: a runyard service's expected exit is 0; "
            "autorestart = unexpected restarts after any other",
        ),
    ]


def test_another_users_program_needs_a_root_daemon(tmp_path: Path) -> None:
    services, skipped = imported(tmp_path, daemon_user="bob")
    assert "worker" not in services
    assert ("[program:worker]", "user = alice: a service runs as another user than the "
            "daemon's (bob) only when the daemon runs as root") in skipped  # fmt: skip


def test_the_config_lists_what_was_left_out_above_the_services(tmp_path: Path) -> None:
    conf = tmp_path / "supervisord.conf"
    conf.write_text("[program:a]\ncommand=/bin/true\nstdout_logfile=x\n", encoding="utf-8")
    text = render_config(
        import_supervisord(conf, daemon_user="root"), str(conf), "import supervisord"
    )
    assert text.startswith(
        f"# Imported from {conf} by `runyard import supervisord`.\n# Not translated:\n"
        "#   [program:a]\n"
        "#     stdout_logfile = x: runyard keeps each instance's output in its own log\n"
    )
    assert '[services.a]\nrun = "exec /bin/true"\n' in text
