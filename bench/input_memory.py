"""Input memory benchmark: 100 queued v3 triggers of 10 MB each, on one daemon.

One daemon (SQLite) runs a task `ingest` (`sleep 3600`, max_concurrent 1): the
first trigger starts the run that holds the slot, so the 100 triggers that
follow, each with 10 MB of `data` (a table of short cells, the key first as
client libraries send it), are queued. Four clients send them side by side
while a prober, in a process of its own, opens a fresh connection to
`GET /health` every 20 ms. Measured, each against a baseline taken in the same
run on the same daemon before the burst:

- the daemon's RSS (its main process; the body-parsing workers are reported
  apart) at its peak during the burst and after it, minus its idle RSS.
  Target: growth < 150 MB.
- `/health` p99 during the burst, against `/health` p99 on the idle daemon,
  and against a control: the idle daemon while the same parsing work (the
  worker function on the same body, in two processes at the same niceness)
  runs outside it, which is what the CPU contention alone costs on this
  machine. Target: < 50 ms.
- a restart with the 100 runs pending: SIGTERM, a new daemon, seconds until
  `/health` answers 200, against the same restart of the idle daemon.
  Target: < 2 s.
- `/api/v3/run-reports` with count 10 (median and p99 of 50 calls), against
  the same call on the idle daemon. Target: < 20 ms.

Not a test: it prints a table and writes bench/results/input_memory.json.

    .venv/bin/python bench/input_memory.py                   # 100 triggers of 10 MB (~2 min)
    .venv/bin/python bench/input_memory.py --triggers 10     # smoke run
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != BENCH]
sys.path.append(str(BENCH))

import httpx  # noqa: E402
from _common import free_port, machine, merge_report  # noqa: E402

RESULTS = ROOT / "bench" / "results"
TOKEN = "bench-token"
ACCOUNT = "bench"
TASK = "ingest"
TARGETS = {"rss_growth_mb": 150.0, "health_p99_ms": 50.0, "restart_s": 2.0, "reports_ms": 20.0}
PROBE_INTERVAL_S = 0.02
CLIENTS = 4
REPORT_CALLS = 50


def write_config(work: Path, port: int) -> Path:
    config = work / "runyard.toml"
    config.write_text(
        "\n".join(
            [
                "[daemon]",
                f"port = {port}",
                f'data_dir = "{work / "data"}"',
                'shutdown_timeout = "5s"',
                'max_request_size = "64mb"',
                "",
                f"[accounts.{ACCOUNT}]",
                "rate_limit_per_minute = 1000000",
                'max_queued_input = "4gb"',
                "",
                f"[tasks.{TASK}]",
                'run = "sleep 3600"',
                "max_concurrent = 1",
                "max_queued = 1000",
                'max_queued_input = "4gb"',
                "",
            ]
        ),
        encoding="utf-8",
    )
    return config


def _environ() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    env["RUNYARD_TOKEN"] = TOKEN
    return env


def create_key(config: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "runyard", "--config", str(config), "keys", "create"]
        + ["--account", ACCOUNT],
        env=_environ(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1].strip()


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    port: int
    ready_s: float

    @classmethod
    def start(cls, work: Path, config: Path, port: int) -> Daemon:
        started = time.perf_counter()
        with open(work / "daemon.err", "ab") as err:
            process = subprocess.Popen(
                [sys.executable, "-m", "runyard", "--config", str(config), "serve"],
                env=_environ(),
                stdout=subprocess.DEVNULL,
                stderr=err,
                cwd=work,
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the daemon exited early; see {work / 'daemon.err'}")
            if probe_once(port) is not None:
                return cls(process, port, time.perf_counter() - started)
            time.sleep(0.01)
        process.kill()
        raise RuntimeError("the daemon did not answer /health within 120 s")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_mb(self) -> float:
        return _rss_mb(self.process.pid)

    def children_rss_mb(self) -> float:
        return sum(_rss_mb(pid) for pid in _children(self.process.pid) if _is_python(pid))

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as handle:
            return [int(child) for child in handle.read().split()]
    except OSError:
        return []


def _is_python(pid: int) -> bool:
    try:
        return "python" in os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return False


def probe_once(port: int) -> float | None:
    """Return the ms one fresh-connection GET /health took, None if it failed."""
    import socket

    started = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
    except OSError:
        return None
    if not answer.startswith(b"HTTP/1.1 200"):
        return None
    return (time.perf_counter() - started) * 1000


def prober(port: int, stop: Any, out: Any) -> None:
    """Probe /health every PROBE_INTERVAL_S until `stop` is set; put the latencies in `out`."""
    latencies: list[float] = []
    failed = 0
    while not stop.is_set():
        took = probe_once(port)
        if took is None:
            failed += 1
        else:
            latencies.append(took)
        time.sleep(PROBE_INTERVAL_S)
    out.put((latencies, failed))


def percentiles(latencies: list[float], failed: int = 0) -> dict[str, Any]:
    ordered = sorted(latencies)
    if not ordered:
        return {"probes": failed, "failed": failed, "p50_ms": None, "p99_ms": None}
    return {
        "probes": len(ordered) + failed,
        "failed": failed,
        "p50_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2),
        "max_ms": round(ordered[-1], 2),
    }


def probe_health(port: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        took = probe_once(port)
        if took is not None:
            latencies.append(took)
        time.sleep(PROBE_INTERVAL_S)
    return percentiles(latencies)


def trigger_body(key: str, size: int) -> bytes:
    """Return a v3 trigger body whose `data` is about `size` bytes of short cells."""
    row = json.dumps([f"cell{index:04d}" for index in range(10)])
    rows = ",".join([row] * max(1, size // (len(row) + 1)))
    return (
        '{"key": ' + json.dumps(key) + ', "name": "' + TASK + '", "data": [' + rows + "]}"
    ).encode()


def _parse_forever(body: bytes, inputs: str, number: int, stop: Any) -> None:
    from runyard.body_parser import WORKER_NICENESS, parse_body

    os.nice(WORKER_NICENESS)
    while not stop.is_set():
        parse_body(body, inputs, f"01CONTROL{number:017d}")


def control(daemon: Daemon, body: bytes, work: Path, seconds: float) -> dict[str, Any]:
    """Probe /health on the idle daemon while the parsing work runs in processes of its own."""
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    inputs = work / "control-inputs"
    inputs.mkdir()
    parsers = [
        context.Process(target=_parse_forever, args=(body, str(inputs), number, stop))
        for number in range(2)
    ]
    for parser in parsers:
        parser.start()
    time.sleep(1.0)
    try:
        return probe_health(daemon.port, seconds)
    finally:
        stop.set()
        for parser in parsers:
            parser.join()


def time_reports(daemon: Daemon, key: str) -> dict[str, Any]:
    latencies: list[float] = []
    with httpx.Client(base_url=daemon.url, timeout=30) as client:
        for _ in range(REPORT_CALLS):
            started = time.perf_counter()
            answer = client.post("/api/v3/run-reports", json={"key": key, "count": 10})
            latencies.append((time.perf_counter() - started) * 1000)
            answer.raise_for_status()
            reports = answer.json()["data"]["reports"]
    return {**percentiles(latencies), "reports": len(reports)}


def pending_runs(daemon: Daemon) -> int:
    with httpx.Client(base_url=daemon.url, timeout=30) as client:
        answer = client.get(
            "/api/runs",
            params={"status": "pending", "limit": 1},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        answer.raise_for_status()
        return int(answer.json()["total"])


def burst(daemon: Daemon, body: bytes, triggers: int) -> dict[str, Any]:
    """Send the triggers, CLIENTS at a time, while /health is probed and RSS sampled."""
    context = multiprocessing.get_context("spawn")
    stop, out = context.Event(), context.Queue()
    probe = context.Process(target=prober, args=(daemon.port, stop, out))
    probe.start()
    peak = {"rss": daemon.rss_mb(), "workers": 0.0}
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            peak["rss"] = max(peak["rss"], daemon.rss_mb())
            peak["workers"] = max(peak["workers"], daemon.children_rss_mb())
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    statuses: list[int] = []

    def send(_: int) -> None:
        with httpx.Client(base_url=daemon.url, timeout=120) as client:
            answer = client.post(
                "/api/v3/trigger", content=body, headers={"Content-Type": "application/json"}
            )
            statuses.append(answer.status_code)
            if answer.status_code != 200 or answer.json().get("status") != "queued":
                raise RuntimeError(f"trigger answered {answer.status_code}: {answer.text[:300]}")

    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(send, range(triggers)))
    took = time.perf_counter() - started
    time.sleep(1.0)  # what the daemon frees once the last answer is out
    stop.set()
    latencies, failed = out.get(timeout=60)
    probe.join()
    sampling.set()
    sampler.join()
    return {
        "triggers": triggers,
        "seconds": round(took, 2),
        "accepted": sum(1 for status in statuses if status == 200),
        "health": percentiles(latencies, failed),
        "peak_rss_mb": round(peak["rss"], 1),
        "after_rss_mb": round(daemon.rss_mb(), 1),
        "peak_workers_rss_mb": round(peak["workers"], 1),
    }


def bench(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="runyard-input-bench-") as tmp:
        work = Path(tmp)
        port = free_port()
        config = write_config(work, port)
        daemon = Daemon.start(work, config, port)
        try:
            key = create_key(config)
            body = trigger_body(key, args.size_mb * 1024 * 1024)
            # The run that holds the task's only slot: every later trigger queues.
            httpx.post(f"{daemon.url}/api/v3/trigger", json={"key": key, "name": TASK}, timeout=30)
            time.sleep(1.0)
            idle = {
                "rss_mb": round(daemon.rss_mb(), 1),
                "health": probe_health(port, args.idle_seconds),
                "reports": time_reports(daemon, key),
            }
            daemon.stop()
            daemon = Daemon.start(work, config, port)
            idle["restart_s"] = round(daemon.ready_s, 3)
            # A stopped daemon ended its run: a new one holds the slot again.
            httpx.post(f"{daemon.url}/api/v3/trigger", json={"key": key, "name": TASK}, timeout=30)
            time.sleep(1.0)
            idle["rss_mb"] = round(daemon.rss_mb(), 1)  # the idle RSS the burst is held to
            idle["health_control"] = control(daemon, body, work, args.idle_seconds * 2)
            loaded = burst(daemon, body, args.triggers)
            loaded["reports"] = time_reports(daemon, key)
            loaded["pending"] = pending_runs(daemon)
            daemon.stop()
            daemon = Daemon.start(work, config, port)
            loaded["restart_s"] = round(daemon.ready_s, 3)
            loaded["pending_after_restart"] = pending_runs(daemon)
            time.sleep(1.0)
            daemon.stop()
            # The same restart once more: the first one comes right after the
            # burst, while the kernel is still writing out its input files.
            daemon = Daemon.start(work, config, port)
            loaded["restart_again_s"] = round(daemon.ready_s, 3)
            time.sleep(1.0)
            loaded["rss_after_restart_mb"] = round(daemon.rss_mb(), 1)
            loaded["reports_after_restart"] = time_reports(daemon, key)
        finally:
            daemon.stop()
    return {"body_mb": round(len(body) / 1024 / 1024, 2), "idle": idle, "loaded": loaded}


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    idle, loaded = result["idle"], result["loaded"]
    growth = loaded["peak_rss_mb"] - idle["rss_mb"]
    figures = {
        "rss_growth_mb": round(growth, 1),
        "rss_growth_after_mb": round(loaded["after_rss_mb"] - idle["rss_mb"], 1),
        "health_p99_ms": loaded["health"]["p99_ms"],
        "health_p99_idle_ms": idle["health"]["p99_ms"],
        "health_p99_ratio": _ratio(loaded["health"]["p99_ms"], idle["health"]["p99_ms"]),
        "health_p99_control_ms": idle["health_control"]["p99_ms"],
        "restart_s": loaded["restart_s"],
        "restart_idle_s": idle["restart_s"],
        "restart_ratio": _ratio(loaded["restart_s"], idle["restart_s"]),
        "restart_again_s": loaded["restart_again_s"],
        "reports_ms": loaded["reports"]["p50_ms"],
        "reports_p99_ms": loaded["reports"]["p99_ms"],
        "reports_idle_ms": idle["reports"]["p50_ms"],
        "reports_ratio": _ratio(loaded["reports"]["p50_ms"], idle["reports"]["p50_ms"]),
    }
    figures["met"] = {
        "rss_growth_mb": growth < TARGETS["rss_growth_mb"],
        "health_p99_ms": (loaded["health"]["p99_ms"] or 1e9) < TARGETS["health_p99_ms"],
        "restart_s": loaded["restart_s"] < TARGETS["restart_s"],
        "reports_ms": (loaded["reports"]["p50_ms"] or 1e9) < TARGETS["reports_ms"],
    }
    return figures


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or not base:
        return None
    return round(value / base, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--triggers", type=int, default=100)
    parser.add_argument("--size-mb", type=int, default=10)
    parser.add_argument("--idle-seconds", type=float, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS / "input_memory.json")
    args = parser.parse_args()
    result = bench(args)
    figures = summarise(result)
    rounds: list[dict[str, Any]] = []
    if args.out.exists():
        rounds = json.loads(args.out.read_text()).get("rounds", [])
    rounds.append({**result, "figures": figures, "date": time.strftime("%Y-%m-%d %H:%M:%S")})
    merge_report(
        args.out,
        {"machine": machine(), "targets": TARGETS, "rounds": rounds[-5:], "figures": figures},
    )
    print_table(result, figures)


def print_table(result: dict[str, Any], figures: dict[str, Any]) -> None:
    idle, loaded = result["idle"], result["loaded"]
    print(
        f"{loaded['triggers']} triggers of {result['body_mb']} MB "
        f"({loaded['accepted']} queued in {loaded['seconds']} s)"
    )
    rows = [
        (
            "daemon RSS, MB",
            idle["rss_mb"],
            loaded["peak_rss_mb"],
            f"peak; growth {figures['rss_growth_mb']} MB (target < {TARGETS['rss_growth_mb']:g})",
        ),
        ("workers RSS peak, MB", "", loaded["peak_workers_rss_mb"], "body parsers, apart"),
        (
            "/health p99, ms",
            idle["health"]["p99_ms"],
            loaded["health"]["p99_ms"],
            f"ratio {figures['health_p99_ratio']} (target < {TARGETS['health_p99_ms']:g})",
        ),
        (
            "/health p99 control, ms",
            "",
            idle["health_control"]["p99_ms"],
            "idle daemon while the same parsing runs outside it",
        ),
        (
            "restart ready, s",
            idle["restart_s"],
            loaded["restart_s"],
            f"ratio {figures['restart_ratio']} (target < {TARGETS['restart_s']:g}); "
            f"{loaded['pending_after_restart']} pending after; again {loaded['restart_again_s']} s",
        ),
        (
            "/run-reports 10, ms",
            idle["reports"]["p50_ms"],
            loaded["reports"]["p50_ms"],
            f"p99 {loaded['reports']['p99_ms']}; ratio {figures['reports_ratio']} "
            f"(target < {TARGETS['reports_ms']:g})",
        ),
    ]
    print(f"{'':24} {'idle':>10} {'loaded':>10}  notes")
    for name, before, after, note in rows:
        print(f"{name:24} {before!s:>10} {after!s:>10}  {note}")
    print("targets met:", figures["met"])


if __name__ == "__main__":
    main()
