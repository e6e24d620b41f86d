"""Health probes against real listeners: an HTTP server, a TCP socket, real commands."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from runyard.domain.services import HealthCheck, ProbeKind
from runyard.services.probes import MAX_MESSAGE, ProbeResult, run_probe

pytestmark = pytest.mark.anyio

SHORT = timedelta(milliseconds=300)
STATUSES = {
    "/ok": "200 OK",
    "/moved": "302 Found",
    "/missing": "404 Not Found",
    "/down": "503 Service Unavailable",
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class HttpServer:
    """A real HTTP/1.1 server on an ephemeral port answering each GET by path."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.requests.append(head)
        path = head.split(b" ")[1].decode()
        try:
            if path == "/hang":
                await reader.read()  # answers nothing, until the client gives up
            elif path == "/close":
                pass
            elif path == "/garbage":
                writer.write(b"SSH-2.0-OpenSSH\r\n")
            else:
                status = STATUSES.get(path, "200 OK")
                head = f"HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"
                writer.write(head.encode() + b"hi")
            await writer.drain()
        finally:
            writer.close()


@pytest.fixture
async def http() -> AsyncIterator[HttpServer]:
    server = HttpServer()
    await server.start()
    yield server
    await server.close()


def http_check(url: str, timeout: timedelta = timedelta(seconds=5)) -> HealthCheck:
    return HealthCheck(kind=ProbeKind.HTTP, target=url, timeout=timeout)


def free_port() -> int:
    """A port with nothing listening on it (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/ok", ProbeResult(True, "HTTP 200 OK")),
        ("/moved", ProbeResult(True, "HTTP 302 Found")),
        ("/missing", ProbeResult(False, "HTTP 404 Not Found")),
        ("/down", ProbeResult(False, "HTTP 503 Service Unavailable")),
        ("/close", ProbeResult(False, "connection closed before a status line")),
        ("/garbage", ProbeResult(False, "malformed status line b'SSH-2.0-OpenSSH\\r\\n'")),
    ],
)
async def test_http_probe_judges_the_status(
    http: HttpServer, path: str, expected: ProbeResult
) -> None:
    assert await run_probe(http_check(http.url(path))) == expected


async def test_http_probe_sends_one_plain_get(http: HttpServer) -> None:
    await run_probe(http_check(http.url("/ok?verbose=1")))
    (request,) = http.requests
    lines = request.decode().split("\r\n")
    assert lines[0] == "GET /ok?verbose=1 HTTP/1.1"
    assert f"Host: 127.0.0.1:{http.port}" in lines
    assert "Connection: close" in lines


async def test_http_probe_times_out_on_a_server_that_never_answers(http: HttpServer) -> None:
    result = await run_probe(http_check(http.url("/hang"), timeout=SHORT))
    assert result == ProbeResult(False, "timed out after 300ms")


async def test_http_probe_without_a_listener_is_refused() -> None:
    result = await run_probe(http_check(f"http://127.0.0.1:{free_port()}/"))
    assert result == ProbeResult(False, "connection refused")


async def test_tcp_probe_connects_to_a_real_listener() -> None:
    accepted: list[int] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        check = HealthCheck(kind=ProbeKind.TCP, target=f"127.0.0.1:{port}")
        assert await run_probe(check) == ProbeResult(True, f"connected to 127.0.0.1:{port}")
    finally:
        server.close()
        await server.wait_closed()
    assert accepted == [1]
    assert await run_probe(check) == ProbeResult(False, "connection refused")


async def test_tcp_probe_times_out_when_the_connect_hangs() -> None:
    # A listening socket whose backlog is full leaves further SYNs unanswered.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        try:
            result = None
            for _ in range(8):
                check = HealthCheck(kind=ProbeKind.TCP, target=f"127.0.0.1:{port}", timeout=SHORT)
                result = await run_probe(check)
                if not result.passed:
                    break
                filler = socket.socket()
                filler.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    filler.connect(("127.0.0.1", port))
                fillers.append(filler)
            assert result == ProbeResult(False, "timed out after 300ms")
        finally:
            for filler in fillers:
                filler.close()


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("exit 0", ProbeResult(True, "exit 0")),
        ("echo ready; echo; exit 0", ProbeResult(True, "exit 0: ready")),
        ("echo 'db down' >&2; exit 3", ProbeResult(False, "exit 3: db down")),
        ("kill -KILL $$", ProbeResult(False, "killed by SIGKILL")),
    ],
)
async def test_command_probe_passes_on_exit_zero(command: str, expected: ProbeResult) -> None:
    assert await run_probe(HealthCheck(kind=ProbeKind.RUN, target=command)) == expected


async def test_command_probe_quotes_the_shells_complaint() -> None:
    result = await run_probe(HealthCheck(kind=ProbeKind.RUN, target="no-such-command-here"))
    # The shell's wording differs (dash, bash); the code and the name do not.
    assert not result.passed and result.message.startswith("exit 127: ")
    assert "no-such-command-here" in result.message


async def test_command_probe_times_out_and_kills_its_group(tmp_path: Path) -> None:
    marker = tmp_path / "survived"
    # The background child would write the marker if the timeout left it alive.
    command = f"(sleep 1; touch {marker}) & sleep 30"
    result = await run_probe(HealthCheck(kind=ProbeKind.RUN, target=command, timeout=SHORT))
    assert result == ProbeResult(False, "timed out after 300ms")
    await asyncio.sleep(1.5)
    assert not marker.exists()


async def test_command_probe_gets_the_environment_and_working_dir(tmp_path: Path) -> None:
    check = HealthCheck(kind=ProbeKind.RUN, target='test "$(pwd)" = "$WANT" && echo "$WANT"')
    result = await run_probe(check, env={"WANT": str(tmp_path)}, cwd=tmp_path)
    assert result == ProbeResult(True, f"exit 0: {tmp_path}")


async def test_a_long_message_is_shortened() -> None:
    check = HealthCheck(kind=ProbeKind.RUN, target=f"echo {'x' * 500}; exit 1")
    result = await run_probe(check)
    assert len(result.message) == MAX_MESSAGE and result.message.endswith("...")


async def test_a_command_probe_with_a_missing_shell_fails_cleanly() -> None:
    check = HealthCheck(kind=ProbeKind.RUN, target="true")
    result = await run_probe(check, shell="/nonexistent/sh")
    assert result == ProbeResult(False, "no such file or directory")


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl), and its key."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_https_probe_checks_the_certificate(
    tls_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = tls_files
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, ssl.SSLError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/health"
    try:
        refused = await run_probe(http_check(url))
        assert not refused.passed
        assert refused.message.startswith("TLS error: CERTIFICATE_VERIFY_FAILED")
        # Trusted through OpenSSL's own variable, as a system CA bundle would be.
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        assert await run_probe(http_check(url)) == ProbeResult(True, "HTTP 204 No Content")
    finally:
        server.close()
        await server.wait_closed()
