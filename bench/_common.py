"""What both benchmarks share: the machine description, spawning baselines, the report file."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


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
