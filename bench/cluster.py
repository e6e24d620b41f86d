"""Nodes on one PostgreSQL: what the node machinery costs one node, and how capacity adds up.

`cost`: one daemon on PostgreSQL, triggers of a `true` task over HTTP (8
clients), runs/s from the first trigger until every run ended; the same with
the code before clustering (`--baseline-path`, a checkout of it) on a database
of its own, in the same session, alternating rounds. `scale`: a `sleep 0.5`
task with ample `max_concurrent`, each node `max_concurrent_runs = 8`,
triggers spread round-robin over 1, 2, 3 nodes (processes on this machine);
runs/s until all ended, against 1 node in the same session. Every node runs
what it admitted (runs are not shared between nodes yet).

    python bench/cluster.py [--only cost|scale] [--rounds 2] [--baseline-path ../main]
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


def measure(nodes: int, count: int, script: str, slots: int, code: Path, named: bool) -> float:
    """Return runs/s with `nodes` nodes on a fresh database."""
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
            started = time.perf_counter()
            asyncio.run(trigger_all(urls, count, 8))
            while database.ended() < count:
                time.sleep(0.05)
            elapsed = time.perf_counter() - started
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                process.wait(timeout=60)
            return count / elapsed
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
        database.drop()


def bench_cost(args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    for round_number in range(args.rounds):
        before = measure(1, args.runs, "true", 8, args.baseline_path, named=False)
        now = measure(1, args.runs, "true", 8, ROOT, named=True)
        rows.append({"round": round_number + 1, "before": before, "node": now})
        print(
            f"cost round {round_number + 1}: before clustering {before:.1f} runs/s, "
            f"as a node {now:.1f} runs/s, ratio {now / before:.3f}"
        )
    return {"cost": {"runs": args.runs, "rounds": rows}}


def bench_scale(args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    for round_number in range(args.rounds):
        rates = {}
        for nodes in args.nodes:
            rates[nodes] = measure(nodes, 48 * nodes, "sleep 0.5", 8, ROOT, named=True)
        one = rates[args.nodes[0]]
        rows.append({"round": round_number + 1, "runs_per_second": rates})
        print(
            f"scale round {round_number + 1}: "
            + ", ".join(f"{n} node(s) {r:.1f} runs/s ({r / one:.2f}x)" for n, r in rates.items())
        )
    return {"scale": {"rounds": rows, "slots_per_node": 8, "task": "sleep 0.5"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--only", choices=["cost", "scale"], action="append")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument(
        "--nodes", type=lambda text: [int(n) for n in text.split(",")], default=[1, 2, 3]
    )
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
