"""serve(): the real uvicorn server in a child process, stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx
import pytest

from runyard.api.server import bind_listener


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LogReader:
    """Collect a process's log lines in a thread, so a full pipe never blocks it."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._stream = stream
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._stream:
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert self._thread.is_alive(), f"serve exited early: {self.text()!r}"
            assert time.monotonic() < deadline, f"no {text!r} in: {self.text()!r}"
            time.sleep(0.05)
        return self.text()

    def text(self) -> str:
        return "".join(self.lines)

    def finish(self) -> str:
        self._thread.join(timeout=10)
        return self.text()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str, LogReader]]:
    """Start `runyard serve`; return the process, its base URL and its log."""
    port = free_port()
    config = tmp_path / "runyard.toml"
    config.write_text(
        f'[daemon]\ndata_dir = "data"\nport = {port}\n\n[tasks.hello]\nrun = "echo hi"\n',
        encoding="utf-8",
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "runyard", "--config", str(config), "serve"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=environ,
    )
    assert process.stderr is not None
    log = LogReader(process.stderr)
    try:
        yield process, f"http://127.0.0.1:{port}", log
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        log.finish()
        process.stderr.close()


def test_serve_prints_the_new_token_and_url_then_stops_promptly_with_a_stream_open(
    tmp_path: Path, server: tuple[subprocess.Popen[str], str, LogReader]
) -> None:
    process, base, log = server
    printed = log.wait_for("listening on")
    token = (tmp_path / "data" / "token").read_text(encoding="utf-8").strip()
    assert token in printed
    assert str(tmp_path / "data" / "token") in printed
    assert f"runyard listening on {base}" in printed

    with httpx.Client(base_url=base, timeout=10) as client:
        assert client.get("/health").json()["status"] == "ok"
        headers = {"Authorization": f"Bearer {token}"}
        assert client.get("/api/tasks", headers=headers).status_code == 200
        with client.stream("GET", "/api/events", headers=headers) as response:
            assert response.status_code == 200
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            # The open SSE stream ends instead of holding the shutdown.
            assert list(response.iter_lines()) == []
    # uvicorn re-raises the signal it handled once shut down, as a service manager expects.
    assert process.wait(timeout=10) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in log.finish()
    # Well under uvicorn's 3 s graceful timeout: the stream did not wait it out.
    assert time.monotonic() - started < 2.5


@pytest.mark.anyio
async def test_connections_on_the_bound_socket_have_nagle_off(anyio_backend: str) -> None:
    # Nagle's algorithm on a server socket makes each small answer of a
    # kept-alive connection wait for the client's delayed ACK (40 ms).
    listener = bind_listener("127.0.0.1", 0)
    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    server = await asyncio.get_running_loop().create_server(Probe, sock=listener)
    port = listener.getsockname()[1]
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        assert await asyncio.wait_for(accepted, 10) == 1
    finally:
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
