"""HTTP benchmark: accepted v3 triggers per second against GET /health, on one daemon.

One daemon runs a task `hold` (`sleep 3600`) for an account `bench` allowed one
run at a time. The first trigger starts a run that keeps the account's only
slot, so every later `POST /api/v3/trigger` is queued: checked, recorded in
the database and answered "queued". The baseline is `GET /health` on the same
daemon, measured in the same run by the same load generator (wrk, 2 threads,
32 connections, the same Lua script), in alternating rounds so drift of a
shared machine hits both sides alike. Target: the median of the per-round
ratios trigger/health is at least 0.5.

After the load the daemon gets SIGTERM, and its SQLite database is read
directly: every trigger answered 2xx must be there as a run of `hold`. wrk
abandons the requests still in flight when a round's time is up (at most one
per connection); the daemon may still record those, so the runs recorded lie
between the triggers accepted and the triggers sent, which the Lua script
counts. Not a test: it prints a table and writes bench/results/http.json.

Second measurement, "HTTP trigger to ended run": a keep-alive client (8
connections, plain asyncio streams) sends 1,000 `POST /api/tasks/t/run`,
then waits until every run has ended, against a daemon whose task `t` runs
`/bin/true` and against the bare HTTP spawner (bench/_bare_spawner.py: an
asyncio server with no framework that answers 201 once `sh -e -c /bin/true`
is spawned with its output on pipes). Both are driven by the same client
with the same requests, in alternating rounds; the rate is requests per
second from the first request to the last run's end. Target: the median of
the per-round ratios runyard/bare is at least 0.7.

Needs `wrk` on PATH for the first (Debian: `apt-get install wrk`).

    .venv/bin/python bench/http.py                         # 3 rounds of 10 s each (~1.5 min)
    .venv/bin/python bench/http.py --rounds 1 --seconds 3  # smoke run
    .venv/bin/python bench/http.py --only spawn            # trigger to ended run alone
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
# Run as a script, this file's folder comes first on sys.path, where this
# module would shadow the standard library's `http` package (httpx imports
# `http.cookiejar`). Keep the folder, but after the standard library.
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != BENCH]
sys.path.append(str(BENCH))

import httpx  # noqa: E402
from _common import Daemon, free_port, machine, merge_report  # noqa: E402

RESULTS = ROOT / "bench" / "results"
TOKEN = "bench-token"
ACCOUNT = "bench"
TASK = "hold"
AUTOMATION = "Hold"
TRIGGER_PATH = "/api/v3/trigger"
LINK_KEY = "OPEN LINK IN BROWSER"  # the answer's only key when the run started
TARGET_RATIO = 0.5
SHUTDOWN_TIMEOUT_S = 5  # the daemon's own grace for the held run at SIGTERM
STOP_DEADLINE_S = 120
MARKER = "BENCH-JSON "
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# The same script drives both endpoints: only the method, path and body differ.
# `request` counts what was sent (wrk's own count is of answers only),
# `response` sorts every answer by status and body, and `done` sums the
# threads' counters and prints them with wrk's own figures as one JSON line.
WRK_SCRIPT = """\
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  sent, started, queued, ok, other_2xx, non_2xx = 0, 0, 0, 0, 0, 0
  prepared = wrk.format()
end

function request()
  sent = sent + 1
  return prepared
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    if body:find('"queued"', 1, true) then
      queued = queued + 1
    elseif body:find("OPEN LINK IN BROWSER", 1, true) then
      started = started + 1
    elseif body:find('"ok"', 1, true) then
      ok = ok + 1
    else
      other_2xx = other_2xx + 1
    end
  else
    non_2xx = non_2xx + 1
  end
end

function done(summary, latency, requests)
  local total = {sent = 0, started = 0, queued = 0, ok = 0, other_2xx = 0, non_2xx = 0}
  for _, thread in ipairs(threads) do
    for name, _ in pairs(total) do
      total[name] = total[name] + thread:get(name)
    end
  end
  local e = summary.errors
  io.write(string.format(
    '%s{"duration_us": %d, "requests": %d, "sent": %d, "started": %d, "queued": %d, "ok": %d, '
      .. '"other_2xx": %d, "non_2xx": %d, "status_errors": %d, "connect_errors": %d, '
      .. '"read_errors": %d, "write_errors": %d, "timeouts": %d, '
      .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\\n',
    "MARKER", summary.duration, summary.requests, total.sent, total.started, total.queued,
    total.ok, total.other_2xx, total.non_2xx, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean))
end
""".replace('"MARKER"', json.dumps(MARKER))


class Unavailable(RuntimeError):
    """Something the trigger side needs (a key, the v3 route) is not there."""


# ----- the daemon ------------------------------------------------------------


def write_config(work: Path, port: int) -> Path:
    config = work / "runyard.toml"
    config.write_text(
        "\n".join(
            [
                "[daemon]",
                f"port = {port}",
                f'data_dir = "{work / "data"}"',
                f'shutdown_timeout = "{SHUTDOWN_TIMEOUT_S}s"',
                "",
                f"[accounts.{ACCOUNT}]",
                "max_concurrent_runs = 1",
                "rate_limit_per_minute = 1000000",
                "",
                f"[tasks.{TASK}]",
                f'automation = "{AUTOMATION}"',
                'run = "sleep 3600"',
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
    """Return a new API key of the bench account (`runyard keys create`)."""
    done = subprocess.run(
        [sys.executable, "-m", "runyard", "--config", str(config), "keys", "create"]
        + ["--account", ACCOUNT],
        env=_environ(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or len(lines) != 1:
        raise Unavailable(
            f"`runyard keys create --account {ACCOUNT}` exited {done.returncode} and printed "
            f"{len(lines)} line(s) instead of one key:\n{(done.stderr or done.stdout).strip()}"
        )
    return lines[0].strip()


# ----- the load ----------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    """What wrk runs against one endpoint."""

    name: str
    method: str
    path: str
    body: str | None = None


def cpu_seconds(pid: int) -> float:
    """Return the CPU time (user + system) the process `pid` has used so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        stat = handle.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wrk_round(
    wrk: str,
    script_dir: Path,
    daemon: Daemon,
    load: Load,
    seconds: float,
    threads: int,
    connections: int,
) -> dict[str, Any]:
    """Run wrk against `load` for `seconds`; return its counts, rate and latency in ms.

    Also the CPU both sides used per wall second: a load generator near its
    thread count, or a daemon near 1.0 (one event loop), is the limit.
    """
    request = [f'wrk.method = "{load.method}"']
    if load.body is not None:
        request += [
            f"wrk.body = {_lua_string(load.body)}",
            'wrk.headers["Content-Type"] = "application/json"',
        ]
    script = script_dir / f"{load.name}.lua"
    script.write_text("\n".join(request) + "\n" + WRK_SCRIPT, encoding="utf-8")
    argv = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency"]
    argv += ["--timeout", "10s", "-s", str(script), daemon.url + load.path]
    wrk_cpu, daemon_cpu = _children_cpu_seconds(), cpu_seconds(daemon.process.pid)
    wall = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    wall = time.perf_counter() - wall
    wrk_cpu = _children_cpu_seconds() - wrk_cpu
    daemon_cpu = cpu_seconds(daemon.process.pid) - daemon_cpu
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARKER)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    raw = json.loads(lines[-1][len(MARKER) :])
    duration = raw["duration_us"] / 1e6
    answered_2xx = raw["started"] + raw["queued"] + raw["ok"] + raw["other_2xx"]
    return {
        "endpoint": load.name,
        "seconds": round(duration, 2),
        "sent": raw["sent"],
        "requests": raw["requests"],
        "answered_2xx": answered_2xx,
        "started": raw["started"],
        "queued": raw["queued"],
        "other_2xx": raw["other_2xx"],
        "non_2xx": raw["non_2xx"],
        "socket_errors": raw["connect_errors"]
        + raw["read_errors"]
        + raw["write_errors"]
        + raw["timeouts"],
        "rate_2xx_per_s": round(answered_2xx / duration, 1),
        "daemon_cpu_per_wall_s": round(daemon_cpu / wall, 2),
        "wrk_cpu_per_wall_s": round(wrk_cpu / wall, 2),
        "latency_ms": {
            key: round(raw[f"{key}_us"] / 1000, 2) for key in ("p50", "p90", "p99", "max", "mean")
        },
    }


def _lua_string(text: str) -> str:
    # A JSON string literal is a valid Lua string literal for ASCII text.
    return json.dumps(text, ensure_ascii=True)


def probe_trigger(url: str, key: str | None) -> tuple[int, str]:
    """POST one trigger; return its status and body (a 404 means the route is missing)."""
    body = {"key": key or "no-key", "name": AUTOMATION}
    answer = httpx.post(url + TRIGGER_PATH, json=body, timeout=10)
    return answer.status_code, answer.text


def live_total(url: str) -> int | None:
    """Return the daemon's own count of runs of the task, or None if it won't say."""
    try:
        answer = httpx.get(
            url + "/api/runs",
            params={"limit": 1, "task_name": TASK},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        )
        answer.raise_for_status()
        return int(answer.json()["total"])
    except (httpx.HTTPError, KeyError, ValueError):
        return None


# ----- the run ----------------------------------------------------------------


def recorded_runs(data_dir: Path) -> dict[str, Any]:
    """Read the stopped daemon's SQLite file: runs of the task, by status and end reason."""
    db = data_dir / "runyard.db"
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = connection.execute(
            "SELECT status, coalesce(end_reason, ''), count(*) FROM runs"
            " WHERE task_name = ? GROUP BY 1, 2",
            (TASK,),
        ).fetchall()
    finally:
        connection.close()
    outcomes = {f"{status}/{reason}" if reason else status: count for status, reason, count in rows}
    return {"total": sum(outcomes.values()), "by_outcome": outcomes}


@dataclass
class Probe:
    """Two triggers sent by hand before the load, to check the contract."""

    problem: str | None = None  # why the trigger side cannot be measured
    answers: list[str] = field(default_factory=list)
    accepted: int = 0
    started: int = 0


def probe_contract(url: str, key: str) -> Probe:
    """Trigger twice: the first must take the account's slot, the second must queue."""
    probe = Probe()
    for expected in (LINK_KEY, '"queued"'):
        status, text = probe_trigger(url, key)
        probe.answers.append(f"{status} {_without_link(text)[:200]}")
        if status == 404 and '"status"' not in text:
            # FastAPI's own 404 ({"detail": ...}): no such route yet.
            probe.problem = f"POST {TRIGGER_PATH} answered 404: the v3 API is not there"
            return probe
        if not 200 <= status < 300:
            probe.problem = f"POST {TRIGGER_PATH} answered {status}: {text[:300]}"
            return probe
        probe.accepted += 1
        probe.started += LINK_KEY in text
        if expected not in text:
            print(f"warning: expected an answer with {expected}, got: {text[:200]}")
    return probe


def _without_link(text: str) -> str:
    # The viewer link carries the run's password: keep it out of the report.
    try:
        answer = json.loads(text)
    except ValueError:
        return text
    if isinstance(answer, dict) and LINK_KEY in answer:
        return json.dumps({**answer, LINK_KEY: "<viewer link>"})
    return text


def run_rounds(
    wrk: str, work: Path, daemon: Daemon, loads: list[Load], args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Warm each load up for 2 s, then run them in turn `args.rounds` times."""
    per_round: list[dict[str, Any]] = []
    for load in loads:
        result = wrk_round(wrk, work, daemon, load, 2, args.threads, args.connections)
        per_round.append({"warmup": True, **result})
    for index in range(args.rounds):
        for load in loads:
            result = wrk_round(
                wrk, work, daemon, load, args.seconds, args.threads, args.connections
            )
            per_round.append({"round": index + 1, **result})
            print(
                f"  round {index + 1} {load.name:7}: {result['rate_2xx_per_s']:8.1f} 2xx/s"
                f"  p50 {result['latency_ms']['p50']} ms  p99 {result['latency_ms']['p99']} ms"
                f"  non-2xx {result['non_2xx']}  socket errors {result['socket_errors']}"
                f"  CPU/s daemon {result['daemon_cpu_per_wall_s']}"
                f" wrk {result['wrk_cpu_per_wall_s']}",
                flush=True,
            )
    return per_round


def bench_http(args: argparse.Namespace) -> dict[str, Any]:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("bench/http.py needs wrk on PATH (Debian: apt-get install wrk)")
    loads = [Load("health", "GET", "/health")]
    with tempfile.TemporaryDirectory(prefix="runyard-bench-") as tmp:
        work = Path(tmp)
        port = free_port()
        config = write_config(work, port)
        probe = Probe()
        key: str | None = None
        daemon = Daemon.start(work, config, port, _environ())
        total_before_stop: int | None = None
        try:
            try:
                # Through the daemon: `keys create` asks it when it runs.
                key = create_key(config)
            except Unavailable as error:
                probe.problem = str(error)
            if key is not None:
                probe = probe_contract(daemon.url, key)
            if probe.problem is None:
                body = json.dumps({"key": key, "name": AUTOMATION})
                loads.append(Load("trigger", "POST", TRIGGER_PATH, body))
            per_round = run_rounds(wrk, work, daemon, loads, args)
            if probe.problem is None:
                total_before_stop = live_total(daemon.url)
        finally:
            code, stop_s = daemon.stop(STOP_DEADLINE_S)
        if code != 0:
            print(f"daemon exit code {code}:\n{daemon.tail()}", file=sys.stderr)
        recorded = recorded_runs(work / "data") if probe.problem is None else None
    return summarise(
        per_round,
        args,
        probe,
        recorded=recorded,
        total_before_stop=total_before_stop,
        exit_code=code,
        stop_s=stop_s,
    )


def summarise(
    per_round: list[dict[str, Any]],
    args: argparse.Namespace,
    probe: Probe,
    *,
    recorded: dict[str, Any] | None,
    total_before_stop: int | None,
    exit_code: int,
    stop_s: float,
) -> dict[str, Any]:
    measured = [r for r in per_round if not r.get("warmup")]
    health = [r for r in measured if r["endpoint"] == "health"]
    trigger = [r for r in measured if r["endpoint"] == "trigger"]
    report: dict[str, Any] = {
        "load_generator": (
            f"wrk -t{args.threads} -c{args.connections} -d{args.seconds:g}s --latency"
        ),
        "rounds": args.rounds,
        "seconds_per_round": args.seconds,
        "threads": args.threads,
        "connections": args.connections,
        "health": _side(health),
        "trigger": _side(trigger) if trigger else None,
        "target_ratio": TARGET_RATIO,
        "target": f"trigger 2xx/s >= {TARGET_RATIO} x /health 2xx/s; no accepted trigger lost",
        "per_round": per_round,
        "daemon_exit_code": exit_code,
        "daemon_stop_s": round(stop_s, 1),
    }
    if probe.problem is not None or not trigger or recorded is None:
        report.update(
            {
                "trigger_unavailable": probe.problem,
                "probes": probe.answers,
                "passed": False,
                "ratio": None,
            }
        )
        return report
    ratios = [
        t["rate_2xx_per_s"] / h["rate_2xx_per_s"] for h, t in zip(health, trigger, strict=True)
    ]
    # Every trigger the client sent and every 2xx it saw, warm-up and probes included.
    trigger_rounds = [r for r in per_round if r["endpoint"] == "trigger"]
    accepted = probe.accepted + sum(r["answered_2xx"] for r in trigger_rounds)
    sent = len(probe.answers) + sum(r["sent"] for r in trigger_rounds)
    lost = max(accepted - recorded["total"], 0)
    ratio = statistics.median(ratios)
    report.update(
        {
            "ratio": round(ratio, 3),
            "ratios": [round(r, 3) for r in ratios],
            "accepted": accepted,
            "started_answers": sum(r["started"] for r in trigger_rounds) + probe.started,
            "recorded": recorded["total"],
            "recorded_by_outcome": recorded["by_outcome"],
            "recorded_live_before_stop": total_before_stop,
            "lost": lost,
            "sent": sent,
            # Requests wrk abandoned when a round ended: the daemon may have
            # recorded them, but no answer was counted.
            "abandoned_in_flight": sent
            - probe.accepted
            - sum(r["requests"] for r in trigger_rounds),
            "recorded_unanswered": recorded["total"] - accepted,
            "probes": probe.answers,
        }
    )
    report["passed"] = (
        ratio >= TARGET_RATIO
        and lost == 0
        and recorded["total"] <= sent
        and all(r["non_2xx"] == 0 and r["socket_errors"] == 0 for r in trigger_rounds)
    )
    return report


def _side(results: list[dict[str, Any]]) -> dict[str, Any]:
    if not results:
        return {}
    return {
        "rate_2xx_per_s": round(statistics.median(r["rate_2xx_per_s"] for r in results), 1),
        "rates": [r["rate_2xx_per_s"] for r in results],
        "p50_ms": round(statistics.median(r["latency_ms"]["p50"] for r in results), 2),
        "p99_ms": round(statistics.median(r["latency_ms"]["p99"] for r in results), 2),
        "max_ms": max(r["latency_ms"]["max"] for r in results),
        "non_2xx": sum(r["non_2xx"] for r in results),
        "socket_errors": sum(r["socket_errors"] for r in results),
        "daemon_cpu_per_wall_s": round(
            statistics.median(r["daemon_cpu_per_wall_s"] for r in results), 2
        ),
        "wrk_cpu_per_wall_s": round(statistics.median(r["wrk_cpu_per_wall_s"] for r in results), 2),
    }


# ----- trigger to ended run, against the bare HTTP spawner ------------------------

SPAWN_TASK = "t"
SPAWN_PATH = f"/api/tasks/{SPAWN_TASK}/run"
SPAWN_TARGET_RATIO = 0.7


def write_spawn_config(work: Path, port: int) -> Path:
    config = work / "spawn.toml"
    config.write_text(
        "\n".join(
            [
                "[daemon]",
                f"port = {port}",
                f'data_dir = "{work / "spawn-data"}"',
                "",
                f"[tasks.{SPAWN_TASK}]",
                'run = "/bin/true"',
                "max_concurrent = 64",
                "max_queued = 1000000",
                "",
            ]
        ),
        encoding="utf-8",
    )
    return config


async def _burst(port: int, headers: str, requests: int, connections: int) -> list[int]:
    """POST SPAWN_PATH `requests` times over `connections` keep-alive connections: statuses."""
    request = (
        f"POST {SPAWN_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}"
        "Content-Length: 0\r\n\r\n"
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


class SpawnSide:
    """One side of the comparison: where to send the triggers, how to count ended runs."""

    def __init__(self, name: str, port: int, headers: dict[str, str], ended_path: str) -> None:
        self.name, self.port, self.headers, self.ended_path = name, port, headers, ended_path
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers)

    def ended(self) -> int:
        answer = self.client.get(self.ended_path, timeout=30)
        answer.raise_for_status()
        body = answer.json()
        return int(body["ended"] if "ended" in body else body["total"])

    def round(self, requests: int, connections: int) -> dict[str, Any]:
        before = self.ended()
        lines = "".join(f"{key}: {value}\r\n" for key, value in self.headers.items())
        started = time.perf_counter()
        statuses = asyncio.run(_burst(self.port, lines, requests, connections))
        answered = time.perf_counter() - started
        accepted = sum(status == 201 for status in statuses)
        deadline = time.monotonic() + 300
        while (ended := self.ended() - before) < accepted:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: {ended} of {accepted} runs ended in 300 s")
            time.sleep(0.01)
        seconds = time.perf_counter() - started
        return {
            "side": self.name,
            "requests": requests,
            "accepted_201": accepted,
            "other_statuses": sorted({status for status in statuses if status != 201}),
            "answered_s": round(answered, 3),
            "ended_s": round(seconds, 3),
            "runs_per_s": round(requests / seconds, 1),
        }


def bench_spawn(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="runyard-bench-") as tmp:
        work = Path(tmp)
        port = free_port()
        daemon = Daemon.start(work, write_spawn_config(work, port), port, _environ())
        bare_port = free_port()
        bare = subprocess.Popen(
            [sys.executable, str(BENCH / "_bare_spawner.py"), str(bare_port)], cwd=work
        )
        per_round: list[dict[str, Any]] = []
        try:
            _wait_for(f"http://127.0.0.1:{bare_port}/ended")
            sides = [
                SpawnSide(
                    "runyard",
                    port,
                    {"Authorization": f"Bearer {TOKEN}"},
                    f"/api/runs?task_name={SPAWN_TASK}&status=ended&limit=1",
                ),
                SpawnSide("bare", bare_port, {}, "/ended"),
            ]
            for side in sides:  # warm-up: imports, pools, first files
                per_round.append({"warmup": True, **side.round(100, args.spawn_connections)})
            for index in range(args.rounds):
                # Alternate which side goes first, so drift hits both alike.
                for side in sides if index % 2 == 0 else sides[::-1]:
                    result = side.round(args.spawn_requests, args.spawn_connections)
                    per_round.append({"round": index + 1, **result})
                    print(
                        f"  round {index + 1} {side.name:7}: {result['runs_per_s']:8.1f} runs/s"
                        f"  (answered in {result['answered_s']} s, ended in {result['ended_s']} s)",
                        flush=True,
                    )
        finally:
            bare.terminate()
            bare.wait()
            code, _ = daemon.stop(STOP_DEADLINE_S)
    measured = [r for r in per_round if not r.get("warmup")]
    rates = {
        name: [r["runs_per_s"] for r in measured if r["side"] == name]
        for name in ("runyard", "bare")
    }
    ratios = [a / b for a, b in zip(rates["runyard"], rates["bare"], strict=True)]
    ratio = statistics.median(ratios)
    return {
        "client": (
            f"asyncio streams, {args.spawn_connections} keep-alive connections,"
            f" {args.spawn_requests} POST {SPAWN_PATH}, then until every run ended"
        ),
        "rounds": args.rounds,
        "runyard_runs_per_s": round(statistics.median(rates["runyard"]), 1),
        "bare_runs_per_s": round(statistics.median(rates["bare"]), 1),
        "ratio": round(ratio, 3),
        "ratios": [round(r, 3) for r in ratios],
        "target_ratio": SPAWN_TARGET_RATIO,
        "target": f"runyard runs/s >= {SPAWN_TARGET_RATIO} x the bare HTTP spawner's",
        "passed": ratio >= SPAWN_TARGET_RATIO
        and all(r["accepted_201"] == r["requests"] for r in measured),
        "per_round": per_round,
        "daemon_exit_code": code,
    }


def _wait_for(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within 30 s")


# ----- report ----------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--spawn-requests", type=int, default=1000)
    parser.add_argument("--spawn-connections", type=int, default=8)
    parser.add_argument("--only", choices=["trigger", "spawn"])
    parser.add_argument("--out", type=Path, default=RESULTS / "http.json")
    args = parser.parse_args()
    result: dict[str, Any] = {}
    if args.only != "spawn":
        print("== trigger vs health ...", flush=True)
        result = bench_http(args)
        report = merge_report(args.out, {"machine": machine(), "trigger_vs_health": result})
        print_table(report)
    if args.only != "trigger":
        print("== trigger to ended run, runyard vs the bare HTTP spawner ...", flush=True)
        spawn = bench_spawn(args)
        merge_report(args.out, {"machine": machine(), "trigger_to_ended": spawn})
        print(
            f"\n| HTTP trigger to ended run ({spawn['client']}) | bare spawner"
            f" {spawn['bare_runs_per_s']} runs/s | runyard {spawn['runyard_runs_per_s']} runs/s"
            f" | ratio {spawn['ratio']} | >= {SPAWN_TARGET_RATIO} |"
        )
        print(f"\n{'PASS' if spawn['passed'] else 'FAIL'}")
    print(f"\nwritten to {args.out}")
    if result.get("trigger_unavailable"):
        print(f"\ntrigger side not measured: {result['trigger_unavailable']}", file=sys.stderr)
        sys.exit(1)


def print_table(report: dict[str, Any]) -> None:
    r = report["trigger_vs_health"]
    h, t = r["health"], r["trigger"]
    conc = f"{r['connections']} connections, median of {r['rounds']} x {r['seconds_per_round']} s"
    print("\n| measurement | GET /health (baseline) | POST /api/v3/trigger | ratio | target |")
    print("|---|---|---|---|---|")
    trigger_rate = f"{t['rate_2xx_per_s']} accepted/s" if t else "not measured"
    print(
        f"| 2xx answers per s ({conc}) | {h['rate_2xx_per_s']} /s | {trigger_rate} | "
        f"{r['ratio'] if r['ratio'] is not None else 'n/a'} | >= {r['target_ratio']} |"
    )
    for key in ("p50_ms", "p99_ms"):
        trigger_latency = f"{t[key]} ms" if t else ""
        print(f"| latency {key[:3]} | {h[key]} ms | {trigger_latency} | | reported |")
    trigger_cpu = (
        f"{t['daemon_cpu_per_wall_s']} / {t['wrk_cpu_per_wall_s']}" if t else "not measured"
    )
    print(
        f"| CPU s per wall s, daemon / wrk | "
        f"{h['daemon_cpu_per_wall_s']} / {h['wrk_cpu_per_wall_s']} | {trigger_cpu} | | reported |"
    )
    if t:
        print(
            f"| accepted triggers (2xx) / recorded as runs / lost | | "
            f"{r['accepted']} / {r['recorded']} / {r['lost']} | | 0 lost |"
        )
        print(
            f"| recorded without a counted answer / abandoned in flight at wrk's cut-off | | "
            f"{r['recorded_unanswered']} / {r['abandoned_in_flight']} | | reported |"
        )
    print(f"\n{'PASS' if r['passed'] else 'FAIL'}")


if __name__ == "__main__":
    main()
