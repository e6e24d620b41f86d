"""Services run by a real daemon: started in dependency order, stopped in reverse, none left."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
from runyard_harness import cli_env, free_port, run_cli, start_daemon, stop_daemon, until
from support.processes import is_alive

TOKEN = "services-test-token"

# A dependant that notes, when it starts and when it is told to stop, whether web answers.
WORKER = """\
import signal, sys, time, urllib.request

url, out = sys.argv[1], sys.argv[2]


def web():
    try:
        urllib.request.urlopen(url, timeout=2).read()
        return "up"
    except OSError:
        return "down"


def term(*_):
    with open(out, "a") as f:
        f.write(f"stop: web {web()}\\n")
    sys.exit(0)


signal.signal(signal.SIGTERM, term)
with open(out, "a") as f:
    f.write(f"start: web {web()}\\n")
while True:
    time.sleep(1)
"""


def write_config(tmp_path: Path, port: int, web_port: int, mark: str) -> Path:
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER, encoding="utf-8")
    config = tmp_path / "runyard.toml"
    config.write_text(
        f"""
[daemon]
host = "127.0.0.1"
port = {port}
data_dir = "{tmp_path / "data"}"

[services.web]
run = "exec {sys.executable} -m http.server {web_port} --bind 127.0.0.1"
working_dir = "{tmp_path}"
env = {{ SERVICE_TEST_MARK = "{mark}" }}

[services.web.health_check]
http = "http://127.0.0.1:{web_port}/"
interval = "200ms"
start_period = "20s"

[services.worker]
run = "exec {sys.executable} {worker} http://127.0.0.1:{web_port}/ {tmp_path / "events"}"
depends_on = ["web"]
env = {{ SERVICE_TEST_MARK = "{mark}" }}
""",
        encoding="utf-8",
    )
    return config


def marked_pids(mark: str) -> set[int]:
    """Return the live processes whose environment holds SERVICE_TEST_MARK=<mark>."""
    wanted = f"SERVICE_TEST_MARK={mark}".encode()
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if wanted in environ.split(b"\0") and is_alive(int(entry)):
            found.add(int(entry))
    return found


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_the_daemon_starts_its_services_in_order_and_stops_them_all(tmp_path: Path) -> None:
    port, web_port = free_port(), free_port()
    mark = uuid.uuid4().hex
    config = write_config(tmp_path, port, web_port, mark)
    output = tmp_path / "daemon.log"
    process, _url = start_daemon(config, cli_env(RUNYARD_TOKEN=TOKEN), output, port)
    events = tmp_path / "events"
    try:
        until(lambda: answers(f"http://127.0.0.1:{web_port}/"))
        until(lambda: events.exists() and events.read_text(encoding="utf-8").endswith("\n"))
        # The worker started only once web answered its health check.
        assert events.read_text(encoding="utf-8") == "start: web up\n"
        pids = marked_pids(mark)
        assert len(pids) == 2, pids
    finally:
        stop_daemon(process, output)
    # The worker was stopped while web still answered: dependants first.
    assert events.read_text(encoding="utf-8") == "start: web up\nstop: web up\n"
    assert not any(is_alive(pid) for pid in pids)
    assert marked_pids(mark) == set()
    assert not answers(f"http://127.0.0.1:{web_port}/")


def test_the_cli_lists_stops_starts_and_restarts_services(tmp_path: Path) -> None:
    port, web_port = free_port(), free_port()
    mark = uuid.uuid4().hex
    config = write_config(tmp_path, port, web_port, mark)
    env = cli_env(RUNYARD_TOKEN=TOKEN)
    output = tmp_path / "daemon.log"
    process, _url = start_daemon(config, env, output, port)
    events = tmp_path / "events"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli("--config", str(config), *args, env=env)

    def rows() -> dict[str, list[str]]:
        listed = cli("services")
        assert listed.returncode == 0, listed.stderr
        header, *lines = listed.stdout.splitlines()
        assert header.split() == ["NAME", "INSTANCE", "STATE", "PID", "RESTARTS", "HEALTH"]
        return {line.split()[0]: line.split() for line in lines}

    def listed(name: str) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(cli("services", "--json").stdout)
        return next(service for service in found["services"] if service["name"] == name)

    try:
        until(lambda: events.exists() and events.read_text(encoding="utf-8").endswith("\n"))
        until(lambda: rows()["web"][2] == "healthy")
        web = rows()["web"]
        web_pid = int(web[3])
        assert web[:3] == ["web", "0", "healthy"] and web[4] == "0"
        assert " ".join(web[5:]) == "HTTP 200 OK"
        worker = rows()["worker"]
        assert worker[:3] == ["worker", "0", "running"]
        worker_pid = int(worker[3])

        stopped = cli("stop", "worker")
        assert stopped.returncode == 0, stopped.stderr
        assert stopped.stdout == "stopped worker (0: stopped)\n"
        assert not is_alive(worker_pid)
        assert rows()["worker"][2:4] == ["stopped", "-"]

        started = cli("start", "worker")
        assert started.returncode == 0, started.stderr
        assert started.stdout.startswith("starting worker (0: ")
        until(lambda: rows()["worker"][2] == "running")

        restarted = cli("restart", "web", "--json")
        assert restarted.returncode == 0, restarted.stderr
        assert json.loads(restarted.stdout)["name"] == "web"
        assert not is_alive(web_pid)
        until(lambda: listed("web")["instances"][0]["state"] == "healthy")
        assert listed("web")["instances"][0]["pid"] != web_pid
        assert answers(f"http://127.0.0.1:{web_port}/")

        worker_pid = int(rows()["worker"][3])
        web_pid = int(rows()["web"][3])
        text = config.read_text(encoding="utf-8").replace("depends_on", "priority = 1\ndepends_on")
        config.write_text(text, encoding="utf-8")
        reloaded = cli("reload")
        assert reloaded.returncode == 0, reloaded.stderr
        assert reloaded.stdout == "services restarted: worker\n"
        assert not is_alive(worker_pid) and is_alive(web_pid)
        until(lambda: rows()["worker"][2] == "running")

        unknown = cli("stop", "nope")
        assert unknown.returncode == 1
        assert "No service named 'nope' exists." in unknown.stderr
        assert cli("start", "nope").returncode == 1
    finally:
        stop_daemon(process, output)
    assert marked_pids(mark) == set()


def test_after_a_crash_the_next_daemon_kills_the_old_services_first(tmp_path: Path) -> None:
    port, web_port = free_port(), free_port()
    mark = uuid.uuid4().hex
    config = write_config(tmp_path, port, web_port, mark)
    env = cli_env(RUNYARD_TOKEN=TOKEN)
    events = tmp_path / "events"
    first, _url = start_daemon(config, env, tmp_path / "first.log", port)
    try:
        until(lambda: events.exists() and events.read_text(encoding="utf-8").endswith("\n"))
        old = marked_pids(mark)
        assert len(old) == 2, old
    finally:
        first.kill()
        first.wait()
    # kill -9 leaves the services running, web still holding its port (it
    # accepts connections; its answers fail on the output pipe the daemon held).
    assert all(is_alive(pid) for pid in old)
    with socket.create_connection(("127.0.0.1", web_port), timeout=5):
        pass

    output = tmp_path / "second.log"
    second, _url = start_daemon(config, env, output, port)
    try:
        assert not any(is_alive(pid) for pid in old)
        # A fresh web bound the same port (the old one would have kept it from
        # doing so), and a fresh worker started once it answered.
        until(lambda: events.read_text(encoding="utf-8").count("start: web up\n") == 2)
        until(lambda: len(marked_pids(mark)) == 2)
        new = marked_pids(mark)
        assert new.isdisjoint(old)
        assert answers(f"http://127.0.0.1:{web_port}/")
        log = output.read_text(encoding="utf-8")
        assert log.count("killed a service process the previous daemon left running") == 2
    finally:
        stop_daemon(second, output)
    assert marked_pids(mark) == set()
