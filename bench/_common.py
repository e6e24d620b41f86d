"""What the benchmarks share: the machine, spawning baselines, the daemon, the report file."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def spawn_rate(count: int, concurrency: int, argv: list[str]) -> float:
    """Spawn `argv` `count` times, `concurrency` at a time, with no bookkeeping; return runs/s."""
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            process = await asyncio.create_subprocess_exec(*argv)
            await process.wait()

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    return count / (time.perf_counter() - started)


def merge_report(out: Path, report: dict[str, Any]) -> dict[str, Any]:
    """Write `report` into the JSON file `out`, keeping parts measured earlier; return all."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        report = {**json.loads(out.read_text()), **report}
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report


@dataclass
class Daemon:
    """`runyard --config <config> serve` as a subprocess, its stderr in the work dir."""

    process: subprocess.Popen[bytes]
    url: str
    stderr_path: Path

    @classmethod
    def start(
        cls, work: Path, config: Path, port: int, env: Mapping[str, str], timeout_s: float = 60
    ) -> Daemon:
        """Start the daemon in `work` and wait until GET /health answers 200."""
        stderr_path = work / "daemon.err"
        with open(stderr_path, "wb") as err:
            process = subprocess.Popen(
                [sys.executable, "-m", "runyard", "--config", str(config), "serve"],
                env=dict(env),
                stdout=subprocess.DEVNULL,
                stderr=err,
                cwd=work,
            )
        daemon = cls(process, f"http://127.0.0.1:{port}", stderr_path)
        daemon.wait_for_health(timeout_s)
        return daemon

    def wait_for_health(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with httpx.Client(base_url=self.url, timeout=5) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the daemon exited early:\n{self.tail()}")
                try:
                    if client.get("/health").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"the daemon did not answer /health within {timeout_s:g} s:\n{self.tail()}"
        )

    def tail(self) -> str:
        """The last 20 lines the daemon wrote to stderr."""
        return "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-20:])

    def stop(self, deadline_s: float = 120) -> tuple[int, float]:
        """Send SIGTERM and wait (SIGKILL after `deadline_s`); return the exit code and seconds."""
        started = time.perf_counter()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=deadline_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            code = -9
        return code, time.perf_counter() - started
