"""Clients without credentials cannot exhaust the daemon: real daemon, real sockets.

Each test has clients misbehave (slowloris, unfinished bodies, a flood of
bogus keys, clients leaving mid-body) and asserts the daemon still answers
`/health` and keeps its log short. No timing is asserted: a probe only has to
answer within a generous client timeout. bench/abuse.py measures the latency.
"""

from __future__ import annotations

import contextlib
import json
import math
import resource
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from runyard_harness import (
    TEST_TOKEN,
    cli_env,
    free_port,
    run_cli,
    stop_process,
    until,
    wait_for_health,
)

CONFIG = """\
[daemon]
host = "127.0.0.1"
port = {port}
data_dir = "{data_dir}"
{extra}

[tasks.hello]
run = 'echo hello'
"""

# A probe of /health during an attack must answer within this (it hangs without the fix).
PROBE_TIMEOUT = 5.0
# The daemon's open-file limit in the exhaustion tests: small, so a few hundred
# connections would exhaust it, as 20,000 would at the default limit.
DAEMON_FILES = 1000
ATTACK_CONNECTIONS = 1500
DEPARTURE_LINE = "closed its connection before sending the whole body"


@dataclass
class RunningDaemon:
    process: subprocess.Popen[bytes]
    url: str
    port: int
    config: Path
    output: Path
    env: dict[str, str]

    def log(self) -> str:
        return self.output.read_text(errors="replace")

    def health(self) -> int:
        return httpx.get(f"{self.url}/health", timeout=PROBE_TIMEOUT).status_code


def start(tmp_path: Path, extra: str = "", open_files: int | None = None) -> RunningDaemon:
    port = free_port()
    config = tmp_path / "runyard.toml"
    config.write_text(
        CONFIG.format(port=port, data_dir=tmp_path / "data", extra=extra), encoding="utf-8"
    )
    env = cli_env(RUNYARD_TOKEN=TEST_TOKEN)
    output = tmp_path / "daemon.log"

    def limit_files() -> None:
        if open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    with output.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "runyard", "--config", str(config), "serve"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            preexec_fn=limit_files,
        )
    url = f"http://127.0.0.1:{port}"
    problem = wait_for_health(url, process)
    if problem is not None:
        stop_process(process)
        raise AssertionError(f"{problem}:\n{output.read_text(errors='replace')}")
    return RunningDaemon(process, url, port, config, output, env)


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Callable[..., RunningDaemon]]:
    started: list[RunningDaemon] = []

    def make(extra: str = "", open_files: int | None = None) -> RunningDaemon:
        daemon = start(tmp_path, extra, open_files)
        started.append(daemon)
        return daemon

    yield make
    for daemon in started:
        code = stop_process(daemon.process)
        assert code == 0, f"daemon exited {code}:\n{daemon.log()}"


class Attack:
    """Many raw connections that each send a request prefix, then dribble or stall."""

    def __init__(self, port: int, prefix: bytes, dribble: bytes | None) -> None:
        self.port = port
        self.prefix = prefix
        self.dribble = dribble
        self.sockets: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._dribble, daemon=True)

    def open(self, count: int) -> None:
        for _ in range(count):
            sock = socket.socket()
            sock.settimeout(5.0)
            try:
                sock.connect(("127.0.0.1", self.port))
                sock.sendall(self.prefix)
            except OSError:
                sock.close()
                continue
            sock.setblocking(False)
            self.sockets.append(sock)
        self._thread.start()

    def _dribble(self) -> None:
        while not self._stop.wait(0.2):
            for sock in list(self.sockets):
                if self.dribble is None:
                    continue
                try:
                    sock.send(self.dribble)
                except OSError:
                    # Closed by the daemon: a real attacker would reconnect.
                    self.sockets.remove(sock)
                    sock.close()
                    self._reconnect()

    def _reconnect(self) -> None:
        sock = socket.socket()
        sock.settimeout(1.0)
        try:
            sock.connect(("127.0.0.1", self.port))
            sock.sendall(self.prefix)
        except OSError:
            sock.close()
            return
        sock.setblocking(False)
        self.sockets.append(sock)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for sock in self.sockets:
            sock.close()


@pytest.mark.parametrize(
    ("prefix", "dribble"),
    [
        # Headers sent a byte at a time, never finished.
        (b"GET /health HTTP/1.1\r\nHost: x\r\n", b"X"),
        # A body announced, started, never finished.
        (
            b"POST /api/tasks/hello/run HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000\r\n\r\n" + b"[" * 1000,
            None,
        ),
    ],
    ids=["headers-byte-by-byte", "unfinished-bodies"],
)
def test_slow_clients_holding_every_connection_leave_health_answering(
    daemons: Callable[..., RunningDaemon], prefix: bytes, dribble: bytes | None
) -> None:
    daemon = daemons(open_files=DAEMON_FILES)
    attack = Attack(daemon.port, prefix, dribble)
    try:
        attack.open(ATTACK_CONNECTIONS)
        for _ in range(5):
            assert daemon.health() == 200
            time.sleep(0.5)
    finally:
        attack.close()
    assert "Traceback" not in daemon.log()


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    """Return what the daemon sent before closing `sock` (fail if it stays open)."""
    sock.settimeout(timeout)
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_a_request_whose_headers_never_end_is_closed_after_header_timeout(
    daemons: Callable[..., RunningDaemon],
) -> None:
    daemon = daemons('header_timeout = "1s"')
    with socket.create_connection(("127.0.0.1", daemon.port)) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        # Closed without an answer, long before the client gives up (socket.timeout).
        assert read_until_closed(sock, timeout=20.0) == b""


def test_a_body_that_stops_arriving_is_closed_after_body_timeout(
    daemons: Callable[..., RunningDaemon],
) -> None:
    daemon = daemons('body_timeout = "1s"')
    with socket.create_connection(("127.0.0.1", daemon.port)) as sock:
        sock.sendall(b"POST /api/v3/trigger HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n{")
        assert read_until_closed(sock, timeout=20.0) == b""
    assert daemon.health() == 200


def bogus_body(size: int) -> bytes:
    cells = [["abc"] for _ in range(size // 9)]
    return json.dumps({"key": "ryk_bogus", "name": "hello", "data": cells}).encode()


def test_a_bogus_key_flood_is_cut_off_and_health_keeps_answering(
    daemons: Callable[..., RunningDaemon],
) -> None:
    daemon = daemons()
    body = bogus_body(3 * 2**20)
    statuses: list[int] = []
    stop = threading.Event()

    def flood() -> None:
        with httpx.Client(timeout=30.0) as client:
            while not stop.is_set():
                try:
                    response = client.post(
                        f"{daemon.url}/api/v3/trigger",
                        content=body,
                        headers={"Content-Type": "application/json"},
                    )
                except httpx.TransportError:
                    continue  # a refusal that closed the connection mid-upload
                statuses.append(response.status_code)

    flooders = [threading.Thread(target=flood, daemon=True) for _ in range(4)]
    for thread in flooders:
        thread.start()
    try:
        until(lambda: 429 in statuses, timeout=60.0)
        for _ in range(5):
            assert daemon.health() == 200
            time.sleep(0.3)
    finally:
        stop.set()
        for thread in flooders:
            thread.join(timeout=30)
    assert set(statuses) <= {401, 429}, sorted(set(statuses))
    # Each body counts as one call per MiB (plus one) of the 100 a minute; the
    # other flooders' requests already past the check when the limit was hit
    # are answered too.
    cut_off_after = math.ceil(100 / (1 + len(body) // 2**20))
    assert statuses.count(401) <= cut_off_after + len(flooders) - 1


def v3_call(url: str, body: dict[str, object], address: str) -> httpx.Response:
    # The daemon trusts X-Forwarded-For from loopback, as from a local proxy:
    # that is how these requests come from several addresses.
    return httpx.post(
        f"{url}/api/v3/list-automations",
        json=body,
        headers={"X-Forwarded-For": address},
        timeout=PROBE_TIMEOUT,
    )


def test_invalid_keys_are_limited_per_address(
    daemons: Callable[..., RunningDaemon],
) -> None:
    daemon = daemons("max_invalid_keys_per_minute = 10")
    created = run_cli(
        "--config", str(daemon.config), "keys", "create", "--account", "default", env=daemon.env
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    for _ in range(10):
        assert v3_call(daemon.url, {"key": "ryk_wrong"}, "10.0.0.1").status_code == 401
    refused = v3_call(daemon.url, {"key": "ryk_wrong"}, "10.0.0.1")
    assert refused.status_code == 429
    assert refused.json() == {
        "status": "error",
        "message": "Rate limit exceeded. Try again in a few seconds.",
    }
    assert int(refused.headers["Retry-After"]) >= 1
    # The address is refused whatever it sends, until its minute has passed.
    assert v3_call(daemon.url, {"key": key}, "10.0.0.1").status_code == 429
    # Other addresses are not affected.
    assert v3_call(daemon.url, {"key": key}, "10.0.0.2").status_code == 200
    assert v3_call(daemon.url, {"key": "ryk_wrong"}, "10.0.0.2").status_code == 401


def test_concurrent_large_uploads_are_capped_per_address(
    daemons: Callable[..., RunningDaemon],
) -> None:
    daemon = daemons("max_uploads_per_client = 2")
    head = (
        b"POST /api/tasks/hello/run HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + TEST_TOKEN.encode()
        + b"\r\nContent-Length: 2000000\r\n\r\n"
        + b" " * 1000
    )
    uploads = []
    try:
        for _ in range(5):
            sock = socket.create_connection(("127.0.0.1", daemon.port))
            sock.sendall(head)
            uploads.append(sock)
        answered: dict[socket.socket, bytes] = {}
        deadline = time.monotonic() + 10.0
        while len(answered) < 3 and time.monotonic() < deadline:
            ready, _, _ = select.select([s for s in uploads if s not in answered], [], [], 0.5)
            for sock in ready:
                answered[sock] = read_until_closed(sock, timeout=10.0)
        # Two uploads hold the address's slots; the other three are refused at once.
        assert len(answered) == 3, answered
        for reply in answered.values():
            assert reply.startswith(b"HTTP/1.1 429"), reply
            assert b"max_uploads_per_client" in reply
    finally:
        for sock in uploads:
            sock.close()
    assert daemon.health() == 200


@pytest.mark.parametrize("path", ["/api/v3/trigger", "/api/tasks/hello/run"], ids=["v3", "rest"])
def test_a_client_leaving_mid_body_costs_one_log_line_at_most(
    daemons: Callable[..., RunningDaemon], path: str
) -> None:
    daemon = daemons()
    departures = 20
    for _ in range(departures):
        with socket.create_connection(("127.0.0.1", daemon.port)) as sock:
            sock.sendall(
                f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TEST_TOKEN}\r\n"
                "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n".encode()
                + b"{" * 5000
            )
            time.sleep(0.05)
    assert daemon.health() == 200
    until(lambda: DEPARTURE_LINE in daemon.log())
    time.sleep(0.5)  # the last departures reach the log
    log = daemon.log()
    lines = [line for line in log.splitlines() if DEPARTURE_LINE in line]
    assert "Traceback" not in log and "ClientDisconnect" not in log, log
    # One line per departure at most, and identical lines rate-limited (5 per 10 s).
    assert 1 <= len(lines) <= 5, lines
    assert "a client at 127.0.0.1" in lines[0] and path in lines[0]
