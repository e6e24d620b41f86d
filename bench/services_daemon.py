"""Services benchmark, the daemon's side: 100 healthy services, each probed over HTTP every 10 s.

Two real daemons, one after the other, on the same config but for the
services: the first has none, the second 100 (`exec sleep`, one instance
each, an HTTP health check every 10 s against a listener this script runs).
Once every instance is healthy, the daemon's own CPU time (user + system,
from /proc/<pid>/stat; the services' processes are not the daemon's) is read
over a window, and its resident memory (VmRSS) at the end. The figures are
the daemon with services against the daemon without: CPU in % of one core,
RSS in MB more. Targets: < 2 % and < +30 MB.

`--only restart` measures, through a real daemon, the time from a service
instance's exit to its restart (restart_delay 0): one service whose process
appends its start time (`date +%s%N`) to a file and exits, so consecutive
lines are exit -> reap -> record the lifetime -> restart -> exec, measured by
the processes themselves. The baseline, in the same run, is the bare respawn
loop of bench/services.py (the same spawn helper, no supervisor, no daemon).
Target: p99 < 50 ms beyond the baseline.

Not a test: it prints a table and merges its results into
bench/results/services.json (key `daemon`).

    .venv/bin/python bench/services_daemon.py                 # 100 services, 60 s window
    .venv/bin/python bench/services_daemon.py --services 10 --window 15   # smoke run
    .venv/bin/python bench/services_daemon.py --only restart --restarts 300
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/http.py would stand in for the standard library's `http` package.
BENCH = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != BENCH]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import http.server  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import httpx  # noqa: E402

ROOT = BENCH.parent
sys.path.append(str(BENCH))

from _common import Daemon, free_port, machine, merge_report  # noqa: E402
from services import TARGET_EXTRA_P99_MS, against_bare, bare  # noqa: E402

TOKEN = "bench-services-token"
TARGET_CPU_PERCENT = 2.0
TARGET_EXTRA_RSS_MB = 30.0
TICKS = os.sysconf("SC_CLK_TCK")


class _Quiet(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


def listener() -> str:
    """Start the health checks' target in a thread; return its URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/health"


def config_text(port: int, data_dir: Path, services: int, target: str) -> str:
    text = f'[daemon]\nhost = "127.0.0.1"\nport = {port}\ndata_dir = "{data_dir}"\n'
    text += '\n[tasks.hello]\nrun = "echo hi"\n'
    for index in range(services):
        text += (
            f'\n[services.s{index:03d}]\nrun = "exec sleep 86400"\n'
            f'health_check = {{ http = "{target}", interval = "10s" }}\n'
        )
    return text


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def measure(work: Path, services: int, target: str, window: float) -> dict[str, float]:
    port = free_port()
    data_dir = work / f"data-{services}"
    config = work / f"runyard-{services}.toml"
    config.write_text(config_text(port, data_dir, services, target), encoding="utf-8")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")},
        "RUNYARD_TOKEN": TOKEN,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "runyard", "--config", str(config), "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        deadline = time.monotonic() + 60 + services
        while True:
            assert process.poll() is None, "the daemon exited"
            assert time.monotonic() < deadline, "the services did not all get healthy"
            try:
                body = httpx.get(f"{url}/api/services", headers=headers, timeout=5).json()
                states = [i["state"] for s in body["services"] for i in s["instances"]]
                if states.count("healthy") == services:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        time.sleep(5)  # the start-up's garbage settles
        before = cpu_seconds(process.pid)
        time.sleep(window)
        used = cpu_seconds(process.pid) - before
        return {
            "cpu_percent": round(100 * used / window, 2),
            "rss_mb": round(rss_mb(process.pid), 1),
        }
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def restart_config(port: int, data_dir: Path, stamps: Path) -> str:
    return (
        f'[daemon]\nhost = "127.0.0.1"\nport = {port}\ndata_dir = "{data_dir}"\n'
        f'\n[services.flap]\nrun = "date +%s%N >> {stamps}"\n'
        'restart = "always"\nrestart_delay = "0s"\n'
        'healthy_after = "0s"\n'  # every start is a good one: never fatal
    )


def through_daemon(work: Path, restarts: int) -> list[float]:
    """Run one flapping service in a real daemon until it has restarted `restarts` times."""
    stamps = work / "daemon.stamps"
    port = free_port()
    config = work / "runyard-restart.toml"
    config.write_text(restart_config(port, work / "data-restart", stamps), encoding="utf-8")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")},
        "RUNYARD_TOKEN": TOKEN,
    }
    daemon = Daemon.start(work, config, port, env)
    try:
        deadline = time.monotonic() + 60 + restarts
        # One more start than asked: the first restart happens while the daemon
        # is still coming up (its HTTP server starts after the services), so
        # it is left out as a warm-up.
        while not stamps.exists() or len(stamps.read_text().split()) <= restarts + 1:
            assert daemon.process.poll() is None, f"the daemon exited:\n{daemon.tail()}"
            assert time.monotonic() < deadline, "the service did not restart often enough"
            time.sleep(0.1)
    finally:
        daemon.stop()
    times = [int(line) for line in stamps.read_text().split()][1 : restarts + 2]
    return [(after - before) / 1e6 for before, after in zip(times, times[1:], strict=False)]


async def bare_respawns(restarts: int, work: Path) -> list[float]:
    from runyard.engine.process import use_pidfd_child_watcher

    use_pidfd_child_watcher()  # as the daemon does
    return await bare(restarts, work)


def measure_restart(restarts: int, rounds: int) -> dict[str, Any]:
    base: list[float] = []
    daemon: list[float] = []
    with tempfile.TemporaryDirectory(prefix="runyard-bench-services-") as tmp:
        for number in range(rounds):
            work = Path(tmp) / str(number)
            work.mkdir()
            base += asyncio.run(bare_respawns(restarts, work))
            daemon += through_daemon(work, restarts)
    return against_bare(base, "daemon", daemon)


def cpu_and_memory(args: argparse.Namespace) -> None:
    target = listener()
    with tempfile.TemporaryDirectory(prefix="runyard-bench-services-") as tmp:
        work = Path(tmp)
        without = measure(work, 0, target, args.window)
        with_services = measure(work, args.services, target, args.window)
    result = {
        "services": args.services,
        "window_s": args.window,
        "without": without,
        "with": with_services,
        "cpu_percent": with_services["cpu_percent"],
        "extra_cpu_percent": round(with_services["cpu_percent"] - without["cpu_percent"], 2),
        "extra_rss_mb": round(with_services["rss_mb"] - without["rss_mb"], 1),
        "target_cpu_percent": TARGET_CPU_PERCENT,
        "target_extra_rss_mb": TARGET_EXTRA_RSS_MB,
    }
    merge_report(args.out, {"machine": machine(), "daemon": result})
    print(f"daemon, {args.services} healthy services (HTTP probe every 10 s), {args.window:g} s:")
    print(f"  {'':<16}{'CPU % of a core':>18}{'RSS MB':>10}")
    for label, figures in (("without services", without), ("with services", with_services)):
        print(f"  {label:<16}{figures['cpu_percent']:>18.2f}{figures['rss_mb']:>10.1f}")
    print(
        f"  with services: CPU {result['cpu_percent']:.2f} % (target < {TARGET_CPU_PERCENT:g} %),"
        f" RSS +{result['extra_rss_mb']:.1f} MB (target < +{TARGET_EXTRA_RSS_MB:g} MB)"
    )


def restart_timing(args: argparse.Namespace) -> None:
    result = measure_restart(args.restarts, args.rounds)
    merge_report(args.out, {"machine": machine(), "daemon_restart": result})
    print("\n| exit -> restart (restart_delay 0) | p50 | p99 | max |")
    print("|---|---|---|---|")
    for label, key in (("bare respawn (baseline)", "bare_respawn"), ("daemon", "daemon")):
        row = result[key]
        print(f"| {label} | {row['p50_ms']} ms | {row['p99_ms']} ms | {row['max_ms']} ms |")
    print(
        f"\np99 beyond the baseline: {result['extra_p99_ms']} ms"
        f" (target < {TARGET_EXTRA_P99_MS:g} ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["cpu", "restart"], help="one measurement (default both)")
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--window", type=float, default=60.0, help="seconds of measurement")
    parser.add_argument("--restarts", type=int, default=300, help="restarts per round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the restart timing")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "services.json")
    args = parser.parse_args()
    if args.only in (None, "cpu"):
        cpu_and_memory(args)
    if args.only in (None, "restart"):
        restart_timing(args)


if __name__ == "__main__":
    main()
