"""Health probes of a service instance: HTTP GET, TCP connect, or a command.

Each probe ends within its timeout and answers a ProbeResult with a short
message for the API and the dashboard; none raises. HTTP is spoken over
asyncio streams (one GET, `Connection: close`): the daemon has no HTTP client
among its dependencies, and a status line is all a probe reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from runyard.domain.durations import format_duration
from runyard.domain.services import HealthCheck, ProbeKind, split_host_port

MAX_MESSAGE = 200  # characters of a probe's message kept
_MAX_STATUS_LINE = 8192
_OUTPUT_KEPT = 4096  # bytes of a probe command's output read for its message


@dataclass(frozen=True)
class ProbeResult:
    passed: bool
    message: str  # "HTTP 200", "connected", "exit 0", "timed out after 5s", ...


async def run_probe(
    check: HealthCheck,
    *,
    shell: str = "/bin/sh",
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ProbeResult:
    """Probe once as `check` says, within its timeout; a command runs as `<shell> -c <run>`."""
    timeout = check.timeout.total_seconds()
    try:
        if check.kind is ProbeKind.HTTP:
            async with asyncio.timeout(timeout):
                result = await _http(check.target)
        elif check.kind is ProbeKind.TCP:
            async with asyncio.timeout(timeout):
                result = await _tcp(check.target)
        else:
            result = await _command(check.target, timeout, shell, env, cwd)
    except TimeoutError:
        result = ProbeResult(False, f"timed out after {format_duration(check.timeout)}")
    except ssl.SSLError as exc:
        result = ProbeResult(False, f"TLS error: {exc.reason or exc}")
    except OSError as exc:
        result = ProbeResult(False, _os_error(exc))
    return ProbeResult(result.passed, _short(result.message))


async def _tcp(target: str) -> ProbeResult:
    address = split_host_port(target)
    if address is None:
        return ProbeResult(False, f"not host:port: {target!r}")
    _, writer = await asyncio.open_connection(*address)
    await _close(writer)
    return ProbeResult(True, f"connected to {target}")


async def _http(url: str) -> ProbeResult:
    parts = urllib.parse.urlsplit(url)
    secure = parts.scheme == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    context = ssl.create_default_context() if secure else None
    reader, writer = await asyncio.open_connection(host, port, ssl=context)
    try:
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        host_header = parts.netloc.rpartition("@")[2]
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: runyard-health-check\r\n"
            "Accept: */*\r\nConnection: close\r\n\r\n"
        )
        writer.write(request.encode("latin-1", errors="replace"))
        await writer.drain()
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            return _status(exc.partial[:_MAX_STATUS_LINE])
        return ProbeResult(False, "connection closed before a status line")
    except asyncio.LimitOverrunError:
        return ProbeResult(False, "status line too long")
    finally:
        await _close(writer)
    return _status(line[:_MAX_STATUS_LINE])


def _status(line: bytes) -> ProbeResult:
    """Judge an HTTP status line: 2xx and 3xx pass (a redirect is a live server)."""
    fields = line.decode("latin-1").strip().split(" ", 2)
    if len(fields) < 2 or not fields[0].startswith("HTTP/") or not fields[1].isdigit():
        return ProbeResult(False, f"malformed status line {line[:60]!r}")
    code = int(fields[1])
    text = f"HTTP {code}" + (f" {fields[2]}" if len(fields) == 3 and fields[2] else "")
    return ProbeResult(200 <= code < 400, text)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()


async def _command(
    command: str,
    timeout: float,
    shell: str,
    env: Mapping[str, str] | None,
    cwd: Path | None,
) -> ProbeResult:
    process = await asyncio.create_subprocess_exec(
        shell,
        "-c",
        command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=None if env is None else dict(env),
        cwd=cwd,
        # Its own group: a timeout kills what the command started too.
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(timeout):
            output, _ = await process.communicate()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        raise
    finally:
        if process.returncode is not None:
            # Leftovers of the group would outlive the probe.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
    code = process.returncode
    assert code is not None
    last = _last_line(output[-_OUTPUT_KEPT:])
    if code < 0:
        try:
            text = f"killed by {signal.Signals(-code).name}"
        except ValueError:
            text = f"killed by signal {-code}"
    else:
        text = f"exit {code}"
    return ProbeResult(code == 0, f"{text}: {last}" if last else text)


def _last_line(output: bytes) -> str:
    lines = [line for line in output.decode("utf-8", errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def _os_error(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    return str(exc) or type(exc).__name__


def _short(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."
