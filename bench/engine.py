"""Engine benchmarks: run throughput, log capture, history queries.

Each measurement runs next to its own baseline in the same process and run, so
the ratio is what counts, not the machine. Not a test: it prints a table and
writes bench/results/engine.json.

    .venv/bin/python bench/engine.py                    # everything (~15 min on 2 cores)
    .venv/bin/python bench/engine.py --only throughput  # one part
    .venv/bin/python bench/engine.py --history-sizes 10000,100000 --log-bytes 268435456
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
# A script's folder comes first on sys.path, and bench/http.py would shadow the
# standard library's `http` package that httpx imports: keep it, but last.
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != BENCH]
sys.path.append(str(BENCH))

import httpx  # noqa: E402
from ulid import ULID  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import free_port, machine, merge_report, spawn_rate  # noqa: E402

from runyard.daemon_log import LogFormat, LogLevel, configure_logging  # noqa: E402
from runyard.domain.models import (  # noqa: E402
    EndReason,
    Run,
    RunStatus,
    TaskDefinition,
    TriggeredBy,
)
from runyard.domain.queries import RunQuery, SortDirection, SortField  # noqa: E402
from runyard.engine.core import Engine  # noqa: E402
from runyard.engine.process import use_pidfd_child_watcher  # noqa: E402
from runyard.store.runs import RunStore  # noqa: E402

RESULTS = ROOT / "bench" / "results"
TRUE_ARGV = ["/bin/sh", "-e", "-c", "/bin/true", "bench"]


# ----- 1. throughput --------------------------------------------------------


async def _runyard_runs(
    count: int, concurrency: int, work: Path, cpu: dict[str, float] | None = None
) -> tuple[float, dict[str, int]]:
    """Push `count` runs of /bin/true through admission, process, log and store; return runs/s.

    `cpu`, when given, receives the CPU seconds per run of the event loop's
    thread (`loop`) and of the whole process (`process`: the writer and
    worker threads too) over the measured part.
    """
    store = RunStore.open(f"sqlite:///{work / 'throughput.db'}")
    task = TaskDefinition(
        name="true", run="/bin/true", max_concurrent=concurrency, max_queued=count + 1
    )
    engine = Engine(
        tasks={"true": task},
        store=store,
        data_dir=work,
        max_concurrent_runs=concurrency,
        base_environ={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )
    await engine.start()
    try:
        ended = asyncio.Event()
        finished = 0
        queue = engine.events.subscribe()

        async def count_ends() -> None:
            nonlocal finished
            while finished < count:
                event = await queue.get()
                if event is not None and event.kind == "run.ended":
                    finished += 1
            ended.set()

        counter = asyncio.create_task(count_ends())
        started = time.perf_counter()
        loop_cpu, process_cpu = time.thread_time(), time.process_time()
        # The same burst the baseline gets: every trigger at once, 8 running at a time.
        await asyncio.gather(*(engine.trigger("true", {}, TriggeredBy.API) for _ in range(count)))
        await ended.wait()
        elapsed = time.perf_counter() - started
        if cpu is not None:
            cpu["loop"] = (time.thread_time() - loop_cpu) / count
            cpu["process"] = (time.process_time() - process_cpu) / count
        await counter
    finally:
        await engine.shutdown(timeout=10)
        store.close()
    runs, total = store_after(work / "throughput.db")
    reasons: dict[str, int] = {}
    for run in runs:
        key = run.end_reason.value if run.end_reason else run.status.value
        reasons[key] = reasons.get(key, 0) + 1
    assert total == count, f"expected {count} runs stored, found {total}"
    return count / elapsed, reasons


def store_after(path: Path) -> tuple[list[Run], int]:
    store = RunStore.open(f"sqlite:///{path}")
    try:
        runs: list[Run] = []
        offset = 0
        while True:
            page, total = store.list_runs(RunQuery(limit=1000, offset=offset))
            runs.extend(page)
            offset += len(page)
            if not page:
                return runs, total
    finally:
        store.close()


def bench_throughput(count: int, concurrency: int, rounds: int) -> dict[str, Any]:
    """Alternate baseline and runyard `rounds` times; report the median of each and the ratio.

    Alternating cancels most of the drift of a shared machine between the two.
    """

    async def both() -> dict[str, Any]:
        # Both sides use the child watcher the daemon uses.
        use_pidfd_child_watcher()
        # The daemon's log as `runyard serve` sets it up, at INFO: each run's
        # start and end lines are formatted and written, as in the daemon.
        log_file = tempfile.NamedTemporaryFile("w+", prefix="runyard-bench-log-")  # noqa: SIM115
        configure_logging(LogLevel.INFO, LogFormat.TEXT, log_file)
        await spawn_rate(50, concurrency, TRUE_ARGV)  # warm the page cache and the loop
        baselines, rates, ratios = [], [], []
        # CPU microseconds per run: the event loop's thread of each side, and
        # runyard's whole process. Less at the mercy of other load than rates.
        baseline_cpu, loop_cpu, process_cpu = [], [], []
        reasons: dict[str, int] = {}
        for _ in range(rounds):
            spent = time.thread_time()
            baselines.append(await spawn_rate(count, concurrency, TRUE_ARGV))
            baseline_cpu.append((time.thread_time() - spent) / count * 1e6)
            cpu: dict[str, float] = {}
            with tempfile.TemporaryDirectory(prefix="runyard-bench-") as tmp:
                rate, reasons = await _runyard_runs(count, concurrency, Path(tmp), cpu)
            rates.append(rate)
            ratios.append(rate / baselines[-1])
            loop_cpu.append(cpu["loop"] * 1e6)
            process_cpu.append(cpu["process"] * 1e6)
        bin_true = await spawn_rate(count, concurrency, ["/bin/true"])
        log_file.seek(0)
        logged = sum(1 for _ in log_file)
        log_file.close()
        return {
            "runs": count,
            "concurrency": concurrency,
            "rounds": rounds,
            "baseline_runs_per_s": round(statistics.median(baselines), 1),
            "baseline_bin_true_runs_per_s": round(bin_true, 1),
            "runyard_runs_per_s": round(statistics.median(rates), 1),
            "ratio": round(statistics.median(ratios), 3),
            "ratios": [round(ratio, 3) for ratio in ratios],
            "baseline_loop_cpu_us_per_run": round(statistics.median(baseline_cpu)),
            "runyard_loop_cpu_us_per_run": round(statistics.median(loop_cpu)),
            "runyard_process_cpu_us_per_run": round(statistics.median(process_cpu)),
            "target_ratio": 0.8,
            "end_reasons": reasons,
            "daemon_log_lines": logged,
        }

    return asyncio.run(both())


# ----- 2. log capture --------------------------------------------------------


def _log_command(total_bytes: int) -> str:
    # 99 characters and a newline: 100-byte lines.
    return f"yes \"$(printf '%099d' 0)\" | head -c {total_bytes}"


def bench_log_capture(total_bytes: int) -> dict[str, Any]:
    command = _log_command(total_bytes)
    with tempfile.TemporaryDirectory(prefix="runyard-bench-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        subprocess.run(["/bin/sh", "-e", "-c", f"{command} > {work / 'plain.out'}"], check=True)
        baseline = time.perf_counter() - started
        assert (work / "plain.out").stat().st_size == total_bytes
        (work / "plain.out").unlink()

        port = free_port()
        config = work / "runyard.toml"
        config.write_text(
            f'[daemon]\nport = {port}\ndata_dir = "{work / "data"}"\n\n'
            f'[tasks.flood]\nrun = "{_escape(command)}"\nlog_max_size = "{total_bytes * 2}"\n',
            encoding="utf-8",
        )
        token = "bench-token"
        env = {**os.environ, "RUNYARD_TOKEN": token}
        daemon = subprocess.Popen(
            [sys.executable, "-m", "runyard", "--config", str(config), "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=base, headers=headers, timeout=10) as client:
                _wait_for_health(client)
                latencies: list[float] = []
                done = threading.Event()
                prober = threading.Thread(target=_probe_health, args=(base, latencies, done))
                prober.start()
                started = time.perf_counter()
                answer = client.post("/api/tasks/flood/run")
                answer.raise_for_status()
                run_id = answer.json()["id"]
                run: dict[str, Any] = {}
                while True:
                    run = client.get(f"/api/runs/{run_id}").json()
                    if run["status"] == "ended":
                        break
                    time.sleep(0.1)
                wall = time.perf_counter() - started
                done.set()
                prober.join()
                log_page = client.get(
                    f"/api/runs/{run_id}/log", params={"from": 0, "limit": 1}
                ).json()
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=30)
        duration = run.get("duration_ms", 0) / 1000
        return {
            "bytes": total_bytes,
            "lines": total_bytes // 100,
            "baseline_s": round(baseline, 3),
            "runyard_run_s": round(duration, 3),
            "runyard_wall_s": round(wall, 3),
            "ratio": round(duration / baseline, 3),
            "target_ratio": 3.0,
            "end_reason": run.get("end_reason"),
            "lines_logged": log_page.get("total_lines"),
            "health_checks": len(latencies),
            "health_max_ms": round(max(latencies) * 1000, 1),
            "health_p50_ms": round(statistics.median(latencies) * 1000, 2),
            "health_target_max_ms": 100,
        }


def _probe_health(base: str, latencies: list[float], done: threading.Event) -> None:
    """GET /health every 10 ms from its own connection until `done`; record each latency."""
    with httpx.Client(base_url=base, timeout=10) as client:
        while not done.is_set():
            sent = time.perf_counter()
            client.get("/health").raise_for_status()
            latencies.append(time.perf_counter() - sent)
            time.sleep(0.01)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _wait_for_health(client: httpx.Client) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if client.get("/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the daemon did not answer /health within 30 s")


# ----- 3. history -------------------------------------------------------------


def _fill(store: RunStore, count: int, tasks: int) -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    reasons = [EndReason.SUCCESS] * 8 + [EndReason.FAILED, EndReason.TIMEOUT]
    batch: list[Run] = []
    for index in range(count):
        created = base + timedelta(seconds=index * 7)
        ended = index < count - 20  # the newest few are still pending or running
        reason = reasons[index % len(reasons)] if ended else None
        status = (
            RunStatus.ENDED if ended else (RunStatus.RUNNING if index % 2 else RunStatus.PENDING)
        )
        start = (
            created + timedelta(milliseconds=index % 900)
            if status is not RunStatus.PENDING
            else None
        )
        end = start + timedelta(milliseconds=(index * 7919) % 600_000) if ended and start else None
        batch.append(
            Run(
                id=str(ULID.from_timestamp(created.timestamp())),
                task_name=f"task-{index % tasks}",
                status=status,
                created_at=created,
                triggered_by=TriggeredBy.CRON if index % 3 else TriggeredBy.API,
                exit_code=(0 if reason is EndReason.SUCCESS else (index % 5) + 1) if ended else 0,
                end_reason=reason,
                start_at=start,
                end_at=end,
                description="bench run",
            )
        )
        if len(batch) == 10_000:
            store.apply(batch, [])
            batch = []
    if batch:
        store.apply(batch, [])


def _time_query(store: RunStore, query: RunQuery, repeat: int) -> float:
    store.list_runs(query)  # warm
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        store.list_runs(query)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def _history_queries() -> dict[str, RunQuery]:
    queries: dict[str, RunQuery] = {}
    for field in SortField:
        for direction in SortDirection:
            queries[f"task, sort {field.value} {direction.value}"] = RunQuery(
                task_name="task-0", sort_field=field, sort_direction=direction
            )
            queries[f"all, sort {field.value} {direction.value}"] = RunQuery(
                sort_field=field, sort_direction=direction
            )
    queries["task, status=ended"] = RunQuery(task_name="task-0", status=RunStatus.ENDED)
    queries["all, status=running"] = RunQuery(status=RunStatus.RUNNING)
    queries["all, status=failed"] = RunQuery(end_reason=EndReason.FAILED)
    queries["task, offset 500"] = RunQuery(task_name="task-0", offset=500)
    queries["search (task, 'timeout')"] = RunQuery(task_name="task-0", search="timeout")
    return queries


def bench_history(sizes: list[int], tasks: int, repeat: int) -> dict[str, Any]:
    results: dict[str, dict[str, float]] = {}
    fill_seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="runyard-bench-") as tmp:
        for size in sizes:
            path = Path(tmp) / f"history-{size}.db"
            store = RunStore.open(f"sqlite:///{path}")
            started = time.perf_counter()
            _fill(store, size, tasks)
            fill_seconds[str(size)] = round(time.perf_counter() - started, 1)
            for name, query in _history_queries().items():
                results.setdefault(name, {})[str(size)] = round(
                    _time_query(store, query, repeat), 3
                )
            store.close()
            path.unlink()
    small, large = str(sizes[0]), str(sizes[-1])
    rows = []
    worst = 0.0
    for name, timings in results.items():
        ratio = timings[large] / timings[small] if timings[small] else float("inf")
        if not name.startswith("search"):
            worst = max(worst, ratio)
        rows.append(
            {"query": name, **{f"ms_{k}": v for k, v in timings.items()}, "ratio": round(ratio, 2)}
        )
    return {
        "sizes": sizes,
        "tasks": tasks,
        "fill_seconds": fill_seconds,
        "queries": rows,
        "worst_ratio_without_search": round(worst, 2),
        "target_ratio": 3.0,
    }


# ----- report ----------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--only", choices=["throughput", "logs", "history"], action="append")
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--log-bytes", type=int, default=1024**3)
    parser.add_argument("--history-sizes", default="10000,1000000")
    parser.add_argument("--history-tasks", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS / "engine.json")
    args = parser.parse_args()
    parts = args.only or ["throughput", "logs", "history"]
    report: dict[str, Any] = {"machine": machine()}
    steps: dict[str, Callable[[], dict[str, Any]]] = {
        "throughput": lambda: bench_throughput(args.runs, args.concurrency, args.rounds),
        "logs": lambda: bench_log_capture(args.log_bytes),
        "history": lambda: bench_history(
            [int(size) for size in args.history_sizes.split(",")], args.history_tasks, args.repeat
        ),
    }
    for part in parts:
        print(f"== {part} ...", flush=True)
        report[part] = steps[part]()
        print(json.dumps(report[part], indent=2), flush=True)
    print_table(merge_report(args.out, report))
    print(f"\nwritten to {args.out}")


def print_table(report: dict[str, Any]) -> None:
    print("\n| measurement | baseline | runyard | ratio | target |")
    print("|---|---|---|---|---|")
    if "throughput" in report:
        t = report["throughput"]
        print(
            f"| {t['runs']} runs of /bin/true, concurrency {t['concurrency']} | "
            f"{t['baseline_runs_per_s']} runs/s | {t['runyard_runs_per_s']} runs/s | "
            f"{t['ratio']} | >= {t['target_ratio']} |"
        )
    if "logs" in report:
        lg = report["logs"]
        print(
            f"| log capture, {lg['bytes'] // 1024**2} MiB of 100-byte lines | "
            f"{lg['baseline_s']} s | {lg['runyard_run_s']} s | {lg['ratio']} | "
            f"<= {lg['target_ratio']} |"
        )
        print(
            f"| /health during that run (max of {lg['health_checks']}) | | "
            f"{lg['health_max_ms']} ms | | <= {lg['health_target_max_ms']} ms |"
        )
    if "history" in report:
        h = report["history"]
        small, large = h["sizes"][0], h["sizes"][-1]
        for row in h["queries"]:
            print(
                f"| list runs: {row['query']} | {row[f'ms_{small}']} ms @ {small:,} | "
                f"{row[f'ms_{large}']} ms @ {large:,} | {row['ratio']} | "
                f"{'reported' if row['query'].startswith('search') else '<= 3'} |"
            )


if __name__ == "__main__":
    shutil.which("yes") or sys.exit("bench needs coreutils `yes`")
    main()
