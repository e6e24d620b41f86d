"""Abuse benchmark: /health latency while clients without credentials misbehave.

One daemon (SQLite, default settings). A prober opens a fresh connection to
`GET /health` every 20 ms and times the answer, first with nothing else going
on (the baseline, same run), then during each attack, each in its own
process so the attackers do not share the prober's interpreter:

- slowloris: 900 connections (within the default max_connections of 1024),
  then 2,000 (over it), sending their headers a byte at a time and opening a
  new connection whenever the daemon closes one;
- unfinished bodies: 900 connections announcing a 100 KB body, sending 1 KB,
  then nothing;
- bogus-key flood: 4 clients posting 10 MB `/api/v3/trigger` bodies with a
  key that does not exist, back to back, with `"key"` first (as client
  libraries send it), then with `"key"` after the data;
- departures: 4 clients starting 1 MB uploads and closing them half way,
  counting what the daemon's log grew by.

Target: /health p99 under 50 ms in every attack. Not a test: it prints a
table and writes bench/results/abuse.json.

    .venv/bin/python bench/abuse.py                  # 20 s per phase (~3 min)
    .venv/bin/python bench/abuse.py --seconds 5      # smoke run
    .venv/bin/python bench/abuse.py --only baseline --only departures
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
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
TARGET_P99_MS = 50.0
PROBE_INTERVAL_S = 0.02
PROBE_TIMEOUT_S = 10.0
# Within the default max_connections (1024), then twice over it.
SLOW_WITHIN_CAP = 900
SLOW_OVER_CAP = 2000
FLOOD_CLIENTS = 4
# Just under the default max_request_size (10 MiB): larger would be refused for its size.
FLOOD_BYTES = 9 * 1024 * 1024


# ----- the daemon ------------------------------------------------------------


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @classmethod
    def start(cls, work: Path) -> Daemon:
        work.mkdir(parents=True)
        port = free_port()
        config = work / "runyard.toml"
        config.write_text(
            f'[daemon]\nport = {port}\ndata_dir = "{work / "data"}"\n\n'
            '[tasks.hello]\nrun = "true"\n',
            encoding="utf-8",
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
        env["RUNYARD_TOKEN"] = TOKEN
        log_path = work / "daemon.log"
        with log_path.open("wb") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "runyard", "--config", str(config), "serve"],
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        daemon = cls(process, port, log_path)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    return daemon
            except httpx.TransportError:
                time.sleep(0.1)
        process.kill()
        raise RuntimeError(f"the daemon never answered:\n{log_path.read_text()[-2000:]}")

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.process.pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


# ----- the prober ----------------------------------------------------------------


def probe_once(port: int) -> float | None:
    """Return the ms one fresh-connection GET /health took, None if it failed."""
    started = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=PROBE_TIMEOUT_S) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
    except OSError:
        return None
    if not answer.startswith(b"HTTP/1.1 200"):
        return None
    return (time.perf_counter() - started) * 1000


def probe_for(port: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    failed = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        took = probe_once(port)
        if took is None:
            failed += 1
        else:
            latencies.append(took)
        time.sleep(PROBE_INTERVAL_S)
    latencies.sort()

    def percentile(share: float) -> float | None:
        if not latencies:
            return None
        return round(latencies[min(len(latencies) - 1, int(share * len(latencies)))], 2)

    return {
        "probes": len(latencies) + failed,
        "failed": failed,
        "p50_ms": round(statistics.median(latencies), 2) if latencies else None,
        "p99_ms": percentile(0.99),
        "max_ms": round(latencies[-1], 2) if latencies else None,
    }


# ----- the attackers (each runs in a process of its own) ---------------------------


def _raise_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def slow_connections(
    port: int, how_many: int, prefix: bytes, dribble: bytes | None, stop: Any, counts: Any
) -> None:
    """Hold `how_many` connections, dribbling a byte on each every 200 ms.

    A connection the daemon closes is opened again at once, as an attacker
    would. counts: [connections opened, closed by the daemon].
    """
    _raise_file_limit()
    selector = selectors.DefaultSelector()
    held: list[socket.socket] = []

    def connect() -> None:
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        selector.register(sock, selectors.EVENT_WRITE)
        counts[0] += 1

    for _ in range(how_many):
        connect()
    while not stop.is_set():
        for key, _events in selector.select(timeout=0):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            selector.unregister(sock)
            try:
                sock.send(prefix)
                held.append(sock)
            except OSError:
                sock.close()
                counts[1] += 1
                connect()
        for sock in list(held):
            try:
                if dribble is not None:
                    sock.send(dribble)
                # A connection the daemon closed reads as empty.
                elif sock.recv(1, socket.MSG_PEEK) == b"":
                    raise ConnectionResetError
            except BlockingIOError:
                continue
            except OSError:
                held.remove(sock)
                sock.close()
                counts[1] += 1
                connect()
        time.sleep(0.2)
    for sock in held:
        sock.close()


def bogus_key_body(key_first: bool) -> bytes:
    # Short cells: the slowest JSON to parse per byte.
    cells = json.dumps([["abc", "def"] for _ in range(FLOOD_BYTES // 18)])
    key = '"key": "ryk_bogus_bogus_bogus"'
    if key_first:
        return f'{{{key}, "name": "hello", "data": {cells}}}'.encode()
    return f'{{"name": "hello", "data": {cells}, {key}}}'.encode()


def flood(port: int, key_first: bool, stop: Any, counts: Any) -> None:
    body = bogus_key_body(key_first)

    def client() -> None:
        with httpx.Client(timeout=60) as http:
            while not stop.is_set():
                try:
                    status = http.post(
                        f"http://127.0.0.1:{port}/api/v3/trigger",
                        content=body,
                        headers={"Content-Type": "application/json"},
                    ).status_code
                except httpx.TransportError:
                    status = 0  # refused and closed before the upload ended
                with counts.get_lock():
                    counts[{401: 0, 429: 1}.get(status, 2)] += 1

    threads = [threading.Thread(target=client) for _ in range(FLOOD_CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def departures(port: int, stop: Any, counts: Any) -> None:
    head = (
        b"POST /api/v3/trigger HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1048576\r\n\r\n" + b'{"key": "ryk_x", "data": [' + b"[]," * 20000
    )

    def client() -> None:
        while not stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                    sock.sendall(head)
            except OSError:
                pass
            with counts.get_lock():
                counts[0] += 1

    threads = [threading.Thread(target=client) for _ in range(FLOOD_CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


# ----- phases ------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    name: str
    what: str
    attack: Callable[..., None] | None
    args: tuple[Any, ...] = ()
    counted: bool = False


def run_phase(daemon: Daemon, phase: Phase, seconds: float) -> dict[str, Any]:
    stop = multiprocessing.Event()
    counts = multiprocessing.Array("l", 3)
    attacker = None
    if phase.attack is not None:
        extra = (stop, counts) if phase.counted else (stop,)
        attacker = multiprocessing.Process(
            target=phase.attack, args=(daemon.port, *phase.args, *extra), daemon=True
        )
        attacker.start()
        time.sleep(2.0)  # the attack is under way before the probes start
    log_before, cpu_before, wall = daemon.log_size(), daemon.cpu_seconds(), time.perf_counter()
    result = probe_for(daemon.port, seconds)
    wall = time.perf_counter() - wall
    result["log_bytes"] = daemon.log_size() - log_before
    result["daemon_cpu_per_s"] = round((daemon.cpu_seconds() - cpu_before) / wall, 2)
    if attacker is not None:
        stop.set()
        attacker.join(timeout=60)
        if attacker.is_alive():
            attacker.kill()
    result["phase"] = phase.name
    result["what"] = phase.what
    if phase.counted:
        result["attack_counts"] = list(counts)
    return result


def phases() -> list[Phase]:
    slowloris = b"GET /health HTTP/1.1\r\nHost: bench\r\n"
    unfinished = (
        b"POST /api/tasks/hello/run HTTP/1.1\r\nHost: bench\r\n"
        b"Content-Length: 100000\r\n\r\n" + b"[" * 1000
    )
    return [
        Phase("baseline", "GET /health alone", None),
        Phase(
            "slowloris",
            f"{SLOW_WITHIN_CAP} connections, headers byte by byte",
            slow_connections,
            (SLOW_WITHIN_CAP, slowloris, b"X"),
            counted=True,
        ),
        Phase(
            "slowloris_over_cap",
            f"{SLOW_OVER_CAP} connections (over max_connections), headers byte by byte",
            slow_connections,
            (SLOW_OVER_CAP, slowloris, b"X"),
            counted=True,
        ),
        Phase(
            "unfinished_bodies",
            f"{SLOW_WITHIN_CAP} connections, a body begun and never finished",
            slow_connections,
            (SLOW_WITHIN_CAP, unfinished, None),
            counted=True,
        ),
        Phase(
            "bogus_key_first",
            f"{FLOOD_CLIENTS} clients, 10 MB bodies, bogus key first",
            flood,
            (True,),
            counted=True,
        ),
        Phase(
            "bogus_key_last",
            f"{FLOOD_CLIENTS} clients, 10 MB bodies, bogus key after the data",
            flood,
            (False,),
            counted=True,
        ),
        Phase(
            "departures",
            f"{FLOOD_CLIENTS} clients leaving 1 MB uploads half way",
            departures,
            (),
            counted=True,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "abuse.json")
    parser.add_argument("--only", action="append", help="a phase name (repeatable)")
    args = parser.parse_args()
    _raise_file_limit()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="runyard-abuse-") as scratch:
        for phase in [p for p in phases() if not args.only or p.name in args.only]:
            # A daemon per phase: an address cut off by one attack starts clean in the next.
            daemon = Daemon.start(Path(scratch) / phase.name)
            try:
                print(f"== {phase.name}: {phase.what} ...", flush=True)
                result = run_phase(daemon, phase, args.seconds)
            finally:
                code = daemon.stop()
            result["daemon_exit"] = code
            results.append(result)
            print(f"   {result}", flush=True)
    report = {
        "abuse": {
            "machine": machine(),
            "seconds_per_phase": args.seconds,
            "target_p99_ms": TARGET_P99_MS,
            "phases": results,
        }
    }
    merge_report(args.out, report)
    print_table(results)
    print(f"\nwritten to {args.out}")


def print_table(results: list[dict[str, Any]]) -> None:
    print("\n| attack | /health p50 | p99 | max | probes failed | daemon CPU | log grew | target |")
    print("|---|---|---|---|---|---|---|---|")
    for result in results:
        p99 = result["p99_ms"]
        met = (
            "baseline"
            if result["phase"] == "baseline"
            else (
                "met"
                if p99 is not None and p99 <= TARGET_P99_MS and not result["failed"]
                else "**not met**"
            )
        )
        print(
            f"| {result['what']} | {result['p50_ms']} ms | {p99} ms | {result['max_ms']} ms "
            f"| {result['failed']} of {result['probes']} | {result['daemon_cpu_per_s']} s/s "
            f"| {result['log_bytes']} bytes | {met} |"
        )


if __name__ == "__main__":
    main()
