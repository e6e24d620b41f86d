"""Memory benchmark: the daemon's idle RSS with 1,000 tasks, and its RSS growth over runs.

1. Idle RSS. One daemon, SQLite, 1,000 tasks (`run = "/bin/true"`, each on a
   yearly cron schedule so the scheduler holds them all, none fires during
   the bench) and a task `t`. Once `/health` answers, the daemon is left idle
   for a few seconds and its VmRSS read; it is then stopped and started again
   on the same data dir (every start but the first finds its database up to
   date), and read again: the figure held to the target. The first start is
   reported beside it. The baseline, measured in the same
   run: the bare framework (bench/_bare_app.py: FastAPI with one route under
   uvicorn, SQLAlchemy with a SQLite engine connected), idle the same way.
   Target: runyard <= 75 MB.
2. RSS growth. The same daemon then runs `t` (`/bin/true`) through the path a
   user hits: `POST /api/tasks/t/run` from 8 keep-alive clients. After the
   first 1,000 runs have ended, the daemon idles and its RSS is read; then
   again after 100,000 runs in all (and at checkpoints between, to show the
   curve). Target: RSS after 100,000 runs within 10 % of RSS after 1,000.

Not a test: it prints a table and writes bench/results/memory.json.

    .venv/bin/python bench/memory.py                      # 100,000 runs (~8 min)
    .venv/bin/python bench/memory.py --runs 10000         # quick check
    .venv/bin/python bench/memory.py --only idle          # idle RSS alone
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/http.py would stand in for the standard library's `http` package.
BENCH = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != BENCH]
sys.path.append(str(BENCH))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import httpx  # noqa: E402
from _common import Daemon, free_port, machine, merge_report  # noqa: E402

ROOT = BENCH.parent
RESULTS = ROOT / "bench" / "results"
TOKEN = "bench-memory-token"
TASKS = 1000
TASK = "t"
TRIGGER_PATH = f"/api/tasks/{TASK}/run"
FIRST_RUNS = 1000
CONNECTIONS = 8
# Runs sent before waiting for them all to end: the first measurement's own
# size, so every stretch has the same peak of queued runs. Python keeps the
# arenas of a higher peak (a few live objects pin each one), so a larger
# chunk later would measure the peak, not what runs leave behind.
CHUNK = FIRST_RUNS
SETTLE_S = 5.0  # idle time before RSS is read
TARGET_IDLE_MB = 75.0
TARGET_GROWTH = 0.10


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def rss_parts_mb(pid: int) -> dict[str, float]:
    """RssAnon (the heaps), RssFile (libraries, mapped files), RssShmem, in MB."""
    parts = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("RssAnon", "RssFile", "RssShmem"):
            parts[name.removeprefix("Rss").lower() + "_mb"] = round(int(value.split()[0]) / 1024, 1)
    return parts


def write_config(work: Path, port: int, tasks: int) -> Path:
    lines = [
        "[daemon]",
        'host = "127.0.0.1"',
        f"port = {port}",
        f'data_dir = "{work / "data"}"',
        "",
        f"[tasks.{TASK}]",
        'run = "/bin/true"',
        "max_concurrent = 64",
        "max_queued = 1000000",
    ]
    for index in range(tasks):
        # Yearly, at a minute that differs per task: the scheduler holds every
        # task's next tick, and none fires during the bench.
        lines += [
            "",
            f"[tasks.task{index:04d}]",
            'run = "/bin/true"',
            f'cron = "{index % 60} {index // 60 % 24} 1 1 *"',
        ]
    config = work / "runyard.toml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config


def environ() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    env["RUNYARD_TOKEN"] = TOKEN
    return env


def idle_rss(pid: int, settle_s: float = SETTLE_S) -> float:
    time.sleep(settle_s)
    return round(rss_mb(pid), 1)


def bare_idle_rss(work: Path) -> dict[str, Any]:
    """Idle RSS of bench/_bare_app.py, after a few requests as the daemon gets."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(BENCH / "_bare_app.py"), str(port), str(work / "bare.sqlite3")],
        cwd=work,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the bare app did not answer /health")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        return {"rss_mb": idle_rss(process.pid)}
    finally:
        process.terminate()
        process.wait()


async def _burst(port: int, requests: int, connections: int) -> list[int]:
    """POST TRIGGER_PATH `requests` times over `connections` keep-alive connections."""
    request = (
        f"POST {TRIGGER_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    statuses: list[int] = []
    left = [requests]

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while left[0] > 0:
                left[0] -= 1
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                length = next(
                    int(line.split(":", 1)[1])
                    for line in lines[1:]
                    if line.lower().startswith("content-length:")
                )
                await reader.readexactly(length)
                statuses.append(int(lines[0].split(" ", 2)[1]))
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    return statuses


def ended_runs(client: httpx.Client) -> int:
    answer = client.get("/api/runs", params={"task_name": TASK, "status": "ended", "limit": 1})
    answer.raise_for_status()
    return int(answer.json()["total"])


def run_until(client: httpx.Client, port: int, target: int) -> int:
    """Trigger `t` until `target` runs of it have ended; return the runs refused."""
    refused = 0
    while (done := ended_runs(client)) < target:
        burst = min(CHUNK, target - done)
        statuses = asyncio.run(_burst(port, burst, CONNECTIONS))
        refused += sum(status != 201 for status in statuses)
        deadline = time.monotonic() + 600
        while ended_runs(client) < done + burst - refused:
            if time.monotonic() > deadline:
                raise RuntimeError(f"runs did not end within 600 s (target {target})")
            time.sleep(0.05)
        if refused:
            raise RuntimeError(f"{refused} triggers refused: {sorted(set(statuses))}")
    return refused


def bench_daemon(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    config = write_config(work, port, args.tasks)
    result: dict[str, Any] = {"tasks": args.tasks}
    # First start: a new data dir, whose database the daemon creates.
    daemon = Daemon.start(work, config, port, environ(), timeout_s=120)
    try:
        result["first_start_rss_mb"] = idle_rss(daemon.process.pid)
    finally:
        daemon.stop(120)
    # Every later start: the database exists and is up to date.
    daemon = Daemon.start(work, config, port, environ(), timeout_s=120)
    pid = daemon.process.pid
    try:
        result["idle_rss_mb"] = idle_rss(pid)
        if args.only == "idle":
            return result
        checkpoints: list[dict[str, Any]] = []
        with httpx.Client(
            base_url=daemon.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
        ) as client:
            marks = [FIRST_RUNS] + [
                n for n in range(10_000, args.runs, max(10_000, args.runs // 10))
            ]
            marks = sorted({*(m for m in marks if m < args.runs), args.runs})
            started = time.perf_counter()
            for mark in marks:
                run_until(client, port, mark)
                checkpoints.append(
                    {
                        "runs": mark,
                        "rss_mb": idle_rss(pid),
                        **rss_parts_mb(pid),
                        "elapsed_s": round(time.perf_counter() - started, 1),
                    }
                )
                print(
                    f"  after {mark:>7,} runs: RSS {checkpoints[-1]['rss_mb']:6.1f} MB", flush=True
                )
        first, last = checkpoints[0]["rss_mb"], checkpoints[-1]["rss_mb"]
        result.update(
            {
                "runs": args.runs,
                "client": f"{CONNECTIONS} keep-alive connections, POST {TRIGGER_PATH}",
                "rss_after_first_mb": first,
                "rss_after_all_mb": last,
                "growth": round(last / first - 1, 4),
                "checkpoints": checkpoints,
            }
        )
        return result
    finally:
        result["daemon_exit_code"] = daemon.stop(120)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=TASKS)
    parser.add_argument("--runs", type=int, default=100_000, help="runs in all (>= 1,000)")
    parser.add_argument("--only", choices=["idle"], help="measure the idle RSS alone")
    parser.add_argument("--out", type=Path, default=RESULTS / "memory.json")
    args = parser.parse_args()
    args.runs = max(args.runs, FIRST_RUNS)
    with tempfile.TemporaryDirectory(prefix="runyard-bench-memory-") as tmp:
        work = Path(tmp)
        bare = bare_idle_rss(work)
        daemon = bench_daemon(work, args)
    idle = {
        "tasks": args.tasks,
        "bare_framework_rss_mb": bare["rss_mb"],
        "runyard_rss_mb": daemon["idle_rss_mb"],
        "runyard_first_start_rss_mb": daemon["first_start_rss_mb"],
        "ratio": round(daemon["idle_rss_mb"] / bare["rss_mb"], 2),
        "target_mb": TARGET_IDLE_MB,
        "passed": daemon["idle_rss_mb"] <= TARGET_IDLE_MB,
    }
    report: dict[str, Any] = {"machine": machine(), "idle": idle}
    print(f"idle RSS, {args.tasks} tasks (after {SETTLE_S:g} s idle):")
    print(f"  bare framework (FastAPI + uvicorn + SQLAlchemy): {bare['rss_mb']:6.1f} MB")
    print(
        f"  runyard:                                         {daemon['idle_rss_mb']:6.1f} MB"
        f"  ({idle['ratio']}x; target <= {TARGET_IDLE_MB:g} MB)"
    )
    print(
        f"  runyard, first start (creates its database):   {daemon['first_start_rss_mb']:6.1f} MB"
    )
    if args.only != "idle":
        growth = {
            key: daemon[key]
            for key in (
                "runs",
                "client",
                "rss_after_first_mb",
                "rss_after_all_mb",
                "growth",
                "checkpoints",
            )
        }
        growth["target_growth"] = TARGET_GROWTH
        growth["passed"] = abs(daemon["growth"]) <= TARGET_GROWTH
        growth["daemon_exit_code"] = daemon["daemon_exit_code"]
        report["growth"] = growth
        print(
            f"RSS after {FIRST_RUNS:,} runs {daemon['rss_after_first_mb']:.1f} MB, after"
            f" {args.runs:,} {daemon['rss_after_all_mb']:.1f} MB: {100 * daemon['growth']:+.1f} %"
            f" (target within {100 * TARGET_GROWTH:g} %)"
        )
    merge_report(args.out, report)


if __name__ == "__main__":
    main()
