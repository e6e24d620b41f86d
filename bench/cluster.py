"""Nodes on one PostgreSQL: what the node machinery costs one node, and how capacity adds up.

`cost`: one daemon on PostgreSQL, triggers of a `true` task over HTTP (8
clients), runs/s from the first trigger until every run ended; the same with
the code before clustering (`--baseline-path`, a checkout of it) on a database
of its own, in the same session, alternating rounds. `scale`: a `sleep 0.5`
task with ample `max_concurrent`, each node `max_concurrent_runs = 8`,
triggers spread round-robin over 1, 2, 3, 4 nodes (processes on this machine);
runs/s until all ended, and its ratio against 1 node in the same round (issue
16: >= 3.2x at 4 nodes). The ceiling is 16 runs/s per node (8 slots, 0.5 s
each). Each measurement also records where the machine's CPU went from the
first trigger to the last end, read from /proc: the whole machine's busy
share, the node daemons themselves, the runs they reaped (their children),
the PostgreSQL server processes (all its databases), this script (the HTTP
clients), and the rest ("other": whatever else shares the machine).

    python bench/cluster.py [--only cost|scale] [--rounds 2] [--nodes 1,2,3,4]
        [--runs-per-node 48] [--baseline-path ../main]
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/http.py would stand in for the standard library's `http` package.
BENCH = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != BENCH]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from typing import Any  # noqa: E402

import httpx  # noqa: E402
import sqlalchemy as sa  # noqa: E402

sys.path.append(str(BENCH))

from _common import free_port, machine, merge_report  # noqa: E402

ROOT = BENCH.parent
RESULTS = ROOT / "bench" / "results"
POSTGRES_URL = os.environ.get("RUNYARD_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
TOKEN = "bench-cluster-token-0123456789abcdef"

CONFIG = """\
[daemon]
host = "127.0.0.1"
port = {port}
data_dir = "{data_dir}"
max_concurrent_runs = {slots}
{node}

[tasks.work]
run = '{script}'
max_concurrent = 1000
max_queued = 100000
"""


class Database:
    """A PostgreSQL database made for one measurement, dropped afterwards."""

    def __init__(self) -> None:
        self.name = f"runyard_bench_{uuid.uuid4().hex[:10]}"
        self._admin = sa.create_engine(
            sa.make_url(f"{POSTGRES_URL}/postgres").set(drivername="postgresql+psycopg"),
            isolation_level="AUTOCOMMIT",
        )
        with self._admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{self.name}"')
        self.url = f"{POSTGRES_URL}/{self.name}"

    def ended(self) -> int:
        engine = sa.create_engine(sa.make_url(self.url).set(drivername="postgresql+psycopg"))
        try:
            with engine.connect() as connection:
                return int(
                    connection.exec_driver_sql(
                        "SELECT count(*) FROM runs WHERE status = 'ended'"
                    ).scalar_one()
                )
        finally:
            engine.dispose()

    def drop(self) -> None:
        with self._admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self._admin.dispose()


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _process_cpu(pid: int) -> tuple[float, float]:
    """Return (its own CPU s, CPU s of the children it reaped) of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime, stime, cutime, cstime are fields 14-17.
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
    return (utime + stime) / CLOCK_TICKS, (cutime + cstime) / CLOCK_TICKS


def _postgres_cpu() -> dict[int, float]:
    """Return pid -> own CPU s of every PostgreSQL server process on this machine."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
            found[int(entry.name)] = _process_cpu(int(entry.name))[0]
        except (OSError, IndexError, ValueError):
            continue
    return found


def _machine_cpu() -> tuple[float, float]:
    """Return (busy, total) CPU s of the whole machine since boot (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # user..steal; guest time is inside user already
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


class CpuWatch:
    """CPU used between start() and stop(): the machine, the nodes, their runs, PostgreSQL, us."""

    def __init__(self, nodes: list[subprocess.Popen[bytes]]) -> None:
        self._pids = [process.pid for process in nodes]

    def _sample(self) -> dict[str, Any]:
        own = [_process_cpu(pid) for pid in self._pids]
        return {
            "wall": time.perf_counter(),
            "machine": _machine_cpu(),
            "nodes": sum(cpu for cpu, _ in own),
            "runs": sum(children for _, children in own),
            "postgres": _postgres_cpu(),
            "client": time.process_time(),
        }

    def start(self) -> None:
        self._first = self._sample()

    def stop(self) -> dict[str, float]:
        """Return each part's CPU as a share of the whole machine's capacity (cores x wall)."""
        last, first = self._sample(), self._first
        wall = last["wall"] - first["wall"]
        capacity = wall * (os.cpu_count() or 1)
        busy = last["machine"][0] - first["machine"][0]
        total = last["machine"][1] - first["machine"][1]
        postgres = sum(
            cpu - first["postgres"].get(pid, 0.0) for pid, cpu in last["postgres"].items()
        )
        used = {
            "machine_busy": busy / total if total else 0.0,
            "nodes": (last["nodes"] - first["nodes"]) / capacity,
            "runs": (last["runs"] - first["runs"]) / capacity,
            "postgres": postgres / capacity,
            "client": (last["client"] - first["client"]) / capacity,
        }
        # Whatever else ran on the machine meanwhile (other work sharing it).
        used["other"] = max(
            used["machine_busy"]
            - sum(used[part] for part in ("nodes", "runs", "postgres", "client")),
            0.0,
        )
        used["load_average_1m"] = os.getloadavg()[0]
        return used


def start_node(
    work: Path, name: str, database: str, script: str, slots: int, code: Path, named: bool
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    directory = work / name
    directory.mkdir()
    config = directory / "runyard.toml"
    node = f'node_name = "{name}"' if named else ""
    config.write_text(
        CONFIG.format(port=port, data_dir=directory / "data", slots=slots, node=node, script=script)
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    env.update(RUNYARD_TOKEN=TOKEN, RUNYARD_DATABASE_URL=database, PYTHONPATH=str(code))
    with (directory / "daemon.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "runyard", "--config", str(config), "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=directory,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"node {name} did not start: {(directory / 'daemon.log').read_text()}")


async def trigger_all(urls: list[str], count: int, clients: int) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    queue: asyncio.Queue[str] = asyncio.Queue()
    for index in range(count):
        queue.put_nowait(urls[index % len(urls)])

    async def client() -> None:
        async with httpx.AsyncClient(headers=headers, timeout=30) as http:
            while not queue.empty():
                url = queue.get_nowait()
                response = await http.post(f"{url}/api/tasks/work/run")
                assert response.status_code == 201, response.text

    await asyncio.gather(*(client() for _ in range(clients)))


def measure(
    nodes: int, count: int, script: str, slots: int, code: Path, named: bool
) -> tuple[float, dict[str, float]]:
    """Return runs/s with `nodes` nodes on a fresh database, and where the CPU went meanwhile."""
    database = Database()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="runyard-bench-cluster-") as tmp:
            urls = []
            for index in range(nodes):
                process, url = start_node(
                    Path(tmp), f"node{index}", database.url, script, slots, code, named
                )
                processes.append(process)
                urls.append(url)
            cpu = CpuWatch(processes)
            cpu.start()
            started = time.perf_counter()
            asyncio.run(trigger_all(urls, count, 8))
            while database.ended() < count:
                time.sleep(0.05)
            elapsed = time.perf_counter() - started
            used = cpu.stop()
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                process.wait(timeout=60)
            return count / elapsed, used
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
        database.drop()


def bench_cost(args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    for round_number in range(args.rounds):
        before, _ = measure(1, args.runs, "true", 8, args.baseline_path, named=False)
        now, _ = measure(1, args.runs, "true", 8, ROOT, named=True)
        rows.append({"round": round_number + 1, "before": before, "node": now})
        print(
            f"cost round {round_number + 1}: before clustering {before:.1f} runs/s, "
            f"as a node {now:.1f} runs/s, ratio {now / before:.3f}"
        )
    return {"cost": {"runs": args.runs, "rounds": rows}}


SLOTS = 8
SLEEP = 0.5
TARGET_AT_4 = 3.2  # issue 16: runs/s at 4 nodes against 1


def bench_scale(args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    for round_number in range(args.rounds):
        rates: dict[int, float] = {}
        cpu: dict[int, dict[str, float]] = {}
        for nodes in args.nodes:
            runs = args.runs_per_node * nodes
            rates[nodes], cpu[nodes] = measure(
                nodes, runs, f"sleep {SLEEP}", SLOTS, ROOT, named=True
            )
        one = rates[args.nodes[0]]
        rows.append(
            {
                "round": round_number + 1,
                "runs_per_second": rates,
                "ratio_to_first": {nodes: rate / one for nodes, rate in rates.items()},
                "share_of_ceiling": {
                    nodes: rate / (nodes * SLOTS / SLEEP) for nodes, rate in rates.items()
                },
                "cpu": cpu,
            }
        )
        print_scale_table(round_number + 1, args.nodes, rates, cpu, args.runs_per_node)
    return {
        "scale": {
            "rounds": rows,
            "nodes": args.nodes,
            "slots_per_node": SLOTS,
            "runs_per_node": args.runs_per_node,
            "task": f"sleep {SLEEP}",
            "ceiling_per_node": SLOTS / SLEEP,
            "target_ratio_at_4": TARGET_AT_4,
        }
    }


def print_scale_table(
    round_number: int,
    counts: list[int],
    rates: dict[int, float],
    cpu: dict[int, dict[str, float]],
    per_node: int,
) -> None:
    """Print one round: runs/s, its ratio to 1 node and share of the ceiling, CPU shares.

    CPU columns are shares of the machine's capacity (all cores) from the first
    trigger to the last end: busy (whole machine), the node daemons, their runs,
    PostgreSQL, this script, and other work.
    """
    print(f"scale round {round_number} ({per_node} runs per node, ceiling {SLOTS / SLEEP:g}/node)")
    header = (
        f"{'nodes':>5} {'runs/s':>7} {'vs 1':>6} {'of ceil':>7} {'busy':>6} "
        f"{'nodes':>6} {'runs':>6} {'pg':>6} {'client':>6} {'other':>6} {'load':>5}"
    )
    print(header)
    one = rates[counts[0]]
    for nodes in counts:
        used = cpu[nodes]
        print(
            f"{nodes:>5} {rates[nodes]:>7.1f} {rates[nodes] / one:>5.2f}x "
            f"{rates[nodes] / (nodes * SLOTS / SLEEP):>6.0%} "
            f"{used['machine_busy']:>6.0%} {used['nodes']:>6.0%} {used['runs']:>6.0%} "
            f"{used['postgres']:>6.0%} {used['client']:>6.0%} {used['other']:>6.0%} "
            f"{used['load_average_1m']:>5.1f}"
        )
    last = counts[-1]
    if last == 4 and counts[0] == 1:
        ratio = rates[4] / one
        verdict = "met" if ratio >= TARGET_AT_4 else "not met"
        print(f"4 nodes against 1: {ratio:.2f}x (target >= {TARGET_AT_4}x: {verdict})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--only", choices=["cost", "scale"], action="append")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument(
        "--nodes", type=lambda text: [int(n) for n in text.split(",")], default=[1, 2, 3, 4]
    )
    parser.add_argument("--runs-per-node", type=int, default=48)
    parser.add_argument("--baseline-path", type=Path, default=ROOT.parent.parent / "main")
    parser.add_argument("--out", type=Path, default=RESULTS / "cluster.json")
    args = parser.parse_args()
    only = args.only or ["cost", "scale"]
    report: dict[str, Any] = {"machine": machine()}
    if "cost" in only:
        report.update(bench_cost(args))
    if "scale" in only:
        report.update(bench_scale(args))
    print(json.dumps(merge_report(args.out, report), indent=2))


if __name__ == "__main__":
    main()
