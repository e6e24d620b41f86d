"""serve(): the real uvicorn server in a child process, stopped by SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

SERVE = """
import sys
from pathlib import Path
from runyard.api.server import serve
from runyard.app import Runyard
from runyard.config.loader import load_config

serve(Runyard(load_config(Path(sys.argv[1]))))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str, str]]:
    """Start `serve` and return (process, base URL, first stdout lines)."""
    port = free_port()
    config = tmp_path / "runyard.toml"
    config.write_text(
        f'[daemon]\ndata_dir = "data"\nport = {port}\n\n[tasks.hello]\nrun = "echo hi"\n',
        encoding="utf-8",
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    with (tmp_path / "stderr.txt").open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-c", SERVE, str(config)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=environ,
        )
    try:
        assert process.stdout is not None
        printed = ""
        while "listening on" not in printed:
            line = process.stdout.readline()
            assert line, f"serve exited early: {printed!r}"
            printed += line
        yield process, f"http://127.0.0.1:{port}", printed
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def test_serve_prints_the_new_token_and_url_then_stops_promptly_with_a_stream_open(
    tmp_path: Path, server: tuple[subprocess.Popen[str], str, str]
) -> None:
    process, base, printed = server
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
    assert "Application shutdown complete" in (tmp_path / "stderr.txt").read_text()
    # Well under uvicorn's 3 s graceful timeout: the stream did not wait it out.
    assert time.monotonic() - started < 2.5
