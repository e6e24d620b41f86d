"""Services run by a real daemon: started in dependency order, stopped in reverse, none left."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import httpx
from runyard_harness import cli_env, free_port, start_daemon, stop_daemon, until

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


def is_alive(pid: int) -> bool:
    """Return whether `pid` is a process that has not ended (a zombie has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat.rpartition(b")")[2].split()[0] not in (b"Z", b"X")


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
