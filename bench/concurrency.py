"""Concurrency benchmark: REST and v3 triggers from 50 concurrent keep-alive clients.

One daemon runs two tasks of `/bin/true`: `rest`, triggered by
`POST /api/tasks/rest/run`, and `v3` (automation "V3" of an account `bench`),
triggered by `POST /api/v3/trigger` with the account's key. 50 clients
(asyncio streams in one process, one keep-alive connection each, half of them
REST, half v3) each send their next trigger as soon as the last one was
answered, until 5,000 triggers of each kind are sent; the round ends when
every run has ended. Measured per round:

- the drain rate: runs ended per second, from the first request to the
  moment the daemon counts the last run ended (polled every 0.2 s);
- each trigger's answer latency, from writing the request to reading the
  whole answer: p50, p99 and max, per kind.

Baseline, in the same run, in alternating rounds: the engine's own rate,
measured as bench/engine.py measures it (the same number of runs of the same
command triggered in-process straight into an Engine, at the same
concurrency, with the daemon's logging). Targets: drain rate at least 0.8 x
the engine's (median of the per-round ratios), trigger answers p99 < 50 ms,
and every accepted trigger recorded as a run (the SQLite file is read after
SIGTERM). Not a test: it prints a table and writes bench/results/concurrency.json.

    .venv/bin/python bench/concurrency.py                           # 3 rounds (~5 min)
    .venv/bin/python bench/concurrency.py --triggers 500 --rounds 1  # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
# A script's folder comes first on sys.path, and bench/http.py would shadow the
# standard library's `http` package that httpx imports: keep it, but last.
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != BENCH]
sys.path.append(str(BENCH))

import httpx  # noqa: E402

ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from _common import Daemon, free_port, machine, merge_report  # noqa: E402
from engine import _runyard_runs  # noqa: E402

from runyard.daemon_log import LogFormat, LogLevel, configure_logging  # noqa: E402
from runyard.engine.process import use_pidfd_child_watcher  # noqa: E402

RESULTS = ROOT / "bench" / "results"
TOKEN = "bench-token"
ACCOUNT = "bench"
REST_TASK = "rest"
V3_TASK = "v3"
AUTOMATION = "V3"
LINK_KEY = "OPEN LINK IN BROWSER"  # a v3 answer's only key when the run started
DRAIN_TARGET = 0.8
P99_TARGET_MS = 50.0
POLL_S = 0.2
STOP_DEADLINE_S = 120


def write_config(work: Path, port: int, concurrency: int) -> Path:
    config = work / "runyard.toml"
    config.write_text(
        "\n".join(
            [
                "[daemon]",
                f"port = {port}",
                f'data_dir = "{work / "data"}"',
                f"max_concurrent_runs = {concurrency}",
                "max_connections = 1000",
                "",
                f"[accounts.{ACCOUNT}]",
                "rate_limit_per_minute = 1000000",
                "",
                f"[tasks.{REST_TASK}]",
                'run = "/bin/true"',
                f"max_concurrent = {concurrency}",
                "max_queued = 1000000",
                "",
                f"[tasks.{V3_TASK}]",
                f'automation = "{AUTOMATION}"',
                'run = "/bin/true"',
                f"max_concurrent = {concurrency}",
                "max_queued = 1000000",
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
    """Return a new API key of the bench account (`runyard keys create`, through the daemon)."""
    done = subprocess.run(
        [sys.executable, "-m", "runyard", "--config", str(config), "keys", "create"]
        + ["--account", ACCOUNT],
        env=_environ(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or len(lines) != 1:
        raise SystemExit(f"`runyard keys create` failed ({done.returncode}):\n{done.stderr}")
    return lines[0].strip()


# ----- the clients ---------------------------------------------------------------


@dataclass
class Kind:
    """One kind of trigger: its request bytes, how many are left, what came back."""

    name: str
    request: bytes
    accepted_status: int
    left: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    queued: int = 0  # v3 answers "queued" (the run waits for a slot)

    @property
    def accepted(self) -> int:
        return self.statuses[self.accepted_status]


def rest_request(port: int) -> bytes:
    return (
        f"POST /api/tasks/{REST_TASK}/run HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def v3_request(port: int, key: str) -> bytes:
    body = json.dumps({"key": key, "name": AUTOMATION}).encode()
    return (
        f"POST /api/v3/trigger HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _client(port: int, kind: Kind) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while kind.left > 0:
            kind.left -= 1
            sent = time.perf_counter()
            writer.write(kind.request)
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            length = next(
                int(line.split(":", 1)[1])
                for line in lines[1:]
                if line.lower().startswith("content-length:")
            )
            body = await reader.readexactly(length)
            kind.latencies_ms.append((time.perf_counter() - sent) * 1000)
            kind.statuses[int(lines[0].split(" ", 2)[1])] += 1
            kind.queued += b'"queued"' in body
    finally:
        writer.close()


async def _all_clients(port: int, kinds: list[Kind], clients: int) -> None:
    per_kind = max(clients // len(kinds), 1)
    await asyncio.gather(*(_client(port, kind) for kind in kinds for _ in range(per_kind)))


def ended_runs(client: httpx.Client) -> int:
    answer = client.get("/api/runs", params={"status": "ended", "limit": 1}, timeout=30)
    answer.raise_for_status()
    return int(answer.json()["total"])


def daemon_round(
    port: int, key: str, triggers: int, clients: int, poll: httpx.Client, pid: int
) -> dict[str, Any]:
    """Send `triggers` of each kind from `clients` connections; wait until every run ended."""
    kinds = [
        Kind("rest", rest_request(port), 201, left=triggers),
        Kind("v3", v3_request(port, key), 200, left=triggers),
    ]
    before = ended_runs(poll)
    cpu = _cpu_seconds(pid)
    started = time.perf_counter()
    asyncio.run(_all_clients(port, kinds, clients))
    answered = time.perf_counter() - started
    accepted = sum(kind.accepted for kind in kinds)
    deadline = time.monotonic() + 600
    while (ended := ended_runs(poll) - before) < accepted:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{ended} of {accepted} runs ended in 600 s")
        time.sleep(POLL_S)
    drained = time.perf_counter() - started
    cpu = _cpu_seconds(pid) - cpu
    everything = [ms for kind in kinds for ms in kind.latencies_ms]
    return {
        "side": "daemon",
        "triggers": {kind.name: triggers for kind in kinds},
        "accepted": {kind.name: kind.accepted for kind in kinds},
        "other_statuses": {
            kind.name: {str(s): n for s, n in kind.statuses.items() if s != kind.accepted_status}
            for kind in kinds
        },
        "v3_queued_answers": kinds[1].queued,
        "answered_s": round(answered, 3),
        "answers_per_s": round(len(everything) / answered, 1),
        "drained_s": round(drained, 3),
        "runs_per_s": round(accepted / drained, 1),
        "daemon_cpu_per_wall_s": round(cpu / drained, 2),
        "latency_ms": {
            "all": percentiles(everything),
            **{kind.name: percentiles(kind.latencies_ms) for kind in kinds},
        },
    }


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return round(ordered[max(math.ceil(p * len(ordered)) - 1, 0)], 2)

    return {"p50": rank(0.5), "p99": rank(0.99), "max": round(ordered[-1], 2)}


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        stat = handle.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ----- the engine's own rate -------------------------------------------------------


def engine_round(runs: int, concurrency: int) -> dict[str, Any]:
    """bench/engine.py's throughput measurement: `runs` triggers straight into an Engine."""

    async def measure() -> float:
        use_pidfd_child_watcher()  # the child watcher the daemon uses
        with tempfile.TemporaryDirectory(prefix="runyard-bench-") as tmp:
            rate, _reasons = await _runyard_runs(runs, concurrency, Path(tmp))
        return rate

    return {"side": "engine", "runs": runs, "runs_per_s": round(asyncio.run(measure()), 1)}


# ----- the run ----------------------------------------------------------------------


def recorded_runs(db: Path) -> dict[str, int]:
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = connection.execute("SELECT task_name, count(*) FROM runs GROUP BY 1").fetchall()
    finally:
        connection.close()
    return {name: count for name, count in rows}


def bench(args: argparse.Namespace) -> dict[str, Any]:
    # The engine rounds log as the daemon does (INFO, each run's start and end).
    log_file = tempfile.NamedTemporaryFile("w+", prefix="runyard-bench-log-")  # noqa: SIM115
    configure_logging(LogLevel.INFO, LogFormat.TEXT, log_file)
    per_round: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="runyard-bench-") as tmp:
        work = Path(tmp)
        port = free_port()
        config = write_config(work, port, args.concurrency)
        daemon = Daemon.start(work, config, port, _environ())
        sent: Counter[str] = Counter()
        accepted: Counter[str] = Counter()
        try:
            key = create_key(config)
            poll = httpx.Client(base_url=daemon.url, headers={"Authorization": f"Bearer {TOKEN}"})
            pid = daemon.process.pid
            warm = daemon_round(port, key, 100, args.clients, poll, pid)
            per_round.append({"warmup": True, **warm})
            per_round.append({"warmup": True, **engine_round(200, args.concurrency)})
            for index in range(args.rounds):
                sides = ["engine", "daemon"] if index % 2 == 0 else ["daemon", "engine"]
                for side in sides:
                    if side == "engine":
                        result = engine_round(2 * args.triggers, args.concurrency)
                    else:
                        result = daemon_round(port, key, args.triggers, args.clients, poll, pid)
                    per_round.append({"round": index + 1, **result})
                    _print_round(index + 1, result)
            for result in per_round:
                if result["side"] == "daemon":
                    sent.update(result["triggers"])
                    accepted.update(result["accepted"])
            poll.close()
        finally:
            code, _ = daemon.stop(STOP_DEADLINE_S)
        if code != 0:
            print(f"daemon exit code {code}:\n{daemon.tail()}", file=sys.stderr)
        recorded = recorded_runs(work / "data" / "runyard.db")
    log_file.close()
    return summarise(args, per_round, sent, accepted, recorded, code)


def _print_round(index: int, result: dict[str, Any]) -> None:
    if result["side"] == "engine":
        print(f"  round {index} engine: {result['runs_per_s']:8.1f} runs/s", flush=True)
        return
    latency = result["latency_ms"]["all"]
    print(
        f"  round {index} daemon: {result['runs_per_s']:8.1f} runs/s drained"
        f"  ({result['answers_per_s']} answers/s; latency p50 {latency['p50']} ms,"
        f" p99 {latency['p99']} ms, max {latency['max']} ms;"
        f" daemon CPU/s {result['daemon_cpu_per_wall_s']})",
        flush=True,
    )


def summarise(
    args: argparse.Namespace,
    per_round: list[dict[str, Any]],
    sent: Counter[str],
    accepted: Counter[str],
    recorded: dict[str, int],
    exit_code: int,
) -> dict[str, Any]:
    measured = [r for r in per_round if not r.get("warmup")]
    engine = [r["runs_per_s"] for r in measured if r["side"] == "engine"]
    daemon = [r for r in measured if r["side"] == "daemon"]
    ratios = [d["runs_per_s"] / e for d, e in zip(daemon, engine, strict=True)]
    ratio = statistics.median(ratios)
    p99 = statistics.median(r["latency_ms"]["all"]["p99"] for r in daemon)
    lost = {
        kind: accepted[kind] - recorded.get(task, 0)
        for kind, task in (("rest", REST_TASK), ("v3", V3_TASK))
    }
    refused = sum(sum(counts.values()) for r in daemon for counts in r["other_statuses"].values())
    return {
        "clients": (
            f"{args.clients} keep-alive connections (asyncio streams, half REST, half v3),"
            f" {args.triggers} POST /api/tasks/{REST_TASK}/run + {args.triggers}"
            " POST /api/v3/trigger per round"
        ),
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "engine_runs_per_s": round(statistics.median(engine), 1),
        "daemon_runs_per_s": round(statistics.median(r["runs_per_s"] for r in daemon), 1),
        "ratio": round(ratio, 3),
        "ratios": [round(r, 3) for r in ratios],
        "answers_per_s": round(statistics.median(r["answers_per_s"] for r in daemon), 1),
        "latency_p50_ms": round(
            statistics.median(r["latency_ms"]["all"]["p50"] for r in daemon), 2
        ),
        "latency_p99_ms": round(p99, 2),
        "latency_p99_ms_rounds": [r["latency_ms"]["all"]["p99"] for r in daemon],
        "target": (
            f"runs drain >= {DRAIN_TARGET} x the engine's own rate; trigger answers p99 < "
            f"{P99_TARGET_MS:g} ms; no accepted trigger lost"
        ),
        "sent": dict(sent),
        "accepted": dict(accepted),
        "recorded": recorded,
        "lost": lost,
        "refused": refused,
        "passed": ratio >= DRAIN_TARGET
        and p99 < P99_TARGET_MS
        and all(n == 0 for n in lost.values())
        and refused == 0,
        "per_round": per_round,
        "daemon_exit_code": exit_code,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--triggers", type=int, default=5000, help="of each kind, per round")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=8, help="runs at once (both sides)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "concurrency.json")
    args = parser.parse_args()
    result = bench(args)
    report = merge_report(args.out, {"machine": machine(), "fifty_clients": result})
    r = report["fifty_clients"]
    print("\n| measurement | engine alone (baseline) | through HTTP | ratio | target |")
    print("|---|---|---|---|---|")
    print(
        f"| runs drained per s ({r['clients']}, median of {r['rounds']}) | "
        f"{r['engine_runs_per_s']} runs/s | {r['daemon_runs_per_s']} runs/s | {r['ratio']} | "
        f">= {DRAIN_TARGET} |"
    )
    print(
        f"| trigger answer latency p50 / p99 | | {r['latency_p50_ms']} / "
        f"{r['latency_p99_ms']} ms | | p99 < {P99_TARGET_MS:g} ms |"
    )
    print(
        f"| accepted / recorded / lost | | {r['accepted']} / {r['recorded']} / {r['lost']} |"
        " | 0 lost |"
    )
    print(f"\n{'PASS' if r['passed'] else 'FAIL'}\n\nwritten to {args.out}")


if __name__ == "__main__":
    main()
