"""Services benchmark: time from an instance's exit to its restart, with restart_delay = 0.

Each process appends its start time (`date +%s%N`) to a file and exits, so
the gap between two consecutive lines is exit -> reap -> restart -> exec,
measured by the processes themselves. The baseline, in the same run and
interleaved with it, is a bare loop that respawns the same script through the
same spawn helper (`engine.process.spawn`, pipes and log included) the
moment the previous one is reaped; the supervisor's cost is what it adds.

The daemon is not involved: bench/services_daemon.py measures a daemon
running 100 services (its CPU and memory).
Not a test: it prints a table and merges its results into
bench/results/services.json.

    .venv/bin/python bench/services.py                 # 2 rounds of 300 restarts
    .venv/bin/python bench/services.py --restarts 50 --rounds 1   # smoke run
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/http.py would stand in for the standard library's `http` package.
BENCH = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != BENCH]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from typing import Any  # noqa: E402

ROOT = BENCH.parent
sys.path[:0] = [str(ROOT)]
sys.path.append(str(BENCH))

from _common import machine, merge_report  # noqa: E402

from runyard.domain.models import LogOnFull  # noqa: E402
from runyard.domain.services import InstanceState, ServiceDefinition  # noqa: E402
from runyard.engine.log_follow import LogFollowers  # noqa: E402
from runyard.engine.process import spawn, use_pidfd_child_watcher  # noqa: E402
from runyard.services.supervisor import ServiceLifetime, ServiceSupervisor  # noqa: E402
from runyard.store.logs import LogWriter  # noqa: E402

TARGET_EXTRA_P99_MS = 50.0


def _clock() -> datetime:
    return datetime.now(UTC)


def _gaps_ms(stamps: Path) -> list[float]:
    times = [int(line) for line in stamps.read_text().split()]
    return [(after - before) / 1e6 for before, after in zip(times, times[1:], strict=False)]


async def bare(restarts: int, work: Path) -> list[float]:
    stamps = work / "bare.stamps"
    followers = LogFollowers()
    for index in range(restarts + 1):
        log = LogWriter(work / f"bare-{index}.log", 100 * 1024 * 1024, LogOnFull.DROP_OLD)
        child = await spawn(
            run_id=f"bare-{index}",
            argv=["/bin/sh", "-e", "-c", f"date +%s%N >> {stamps}", "bare"],
            env=os.environ,
            cwd=None,
            log=log,
            followers=followers,
            clock=_clock,
            on_log_full=lambda: None,
        )
        await child.wait()
        log.close()
    return _gaps_ms(stamps)


async def supervised(restarts: int, work: Path) -> list[float]:
    stamps = work / "service.stamps"
    ended: list[ServiceLifetime] = []
    service = ServiceDefinition(
        name="flap",
        run=f"date +%s%N >> {stamps}",
        restart_delay=timedelta(0),
        healthy_after=timedelta(0),  # every start is a good one: never fatal
    )
    supervisor = ServiceSupervisor({"flap": service}, logs_dir=work / "logs", on_ended=ended.append)
    supervisor.start_all()
    await supervisor.wait_until(lambda: len(ended) > restarts)
    await supervisor.stop_all()
    assert all(x.state_after is not InstanceState.FATAL for x in ended)
    return _gaps_ms(stamps)[:restarts]


def summary(gaps: list[float]) -> dict[str, float]:
    ordered = sorted(gaps)
    return {
        "count": len(ordered),
        "p50_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
        "max_ms": round(ordered[-1], 2),
    }


async def run(restarts: int, rounds: int) -> dict[str, Any]:
    use_pidfd_child_watcher()
    base: list[float] = []
    service: list[float] = []
    with tempfile.TemporaryDirectory(prefix="runyard-bench-services-") as tmp:
        for number in range(rounds):
            work = Path(tmp) / str(number)
            work.mkdir()
            base += await bare(restarts, work)
            service += await supervised(restarts, work)
    return against_bare(base, "supervisor", service)


def against_bare(base: list[float], label: str, gaps: list[float]) -> dict[str, Any]:
    """The gaps' summary beside the bare respawn's, and the p99 they add to it."""
    result: dict[str, Any] = {"bare_respawn": summary(base), label: summary(gaps)}
    result["extra_p99_ms"] = round(result[label]["p99_ms"] - result["bare_respawn"]["p99_ms"], 2)
    result["target_extra_p99_ms"] = TARGET_EXTRA_P99_MS
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--restarts", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "services.json")
    args = parser.parse_args()
    restart = asyncio.run(run(args.restarts, args.rounds))
    report = merge_report(args.out, {"machine": machine(), "restart": restart})
    bare_s, sup = report["restart"]["bare_respawn"], report["restart"]["supervisor"]
    print("\n| exit -> restart (restart_delay 0) | p50 | p99 | max |")
    print("|---|---|---|---|")
    for label, row in (("bare respawn (baseline)", bare_s), ("ServiceSupervisor", sup)):
        print(f"| {label} | {row['p50_ms']} ms | {row['p99_ms']} ms | {row['max_ms']} ms |")
    extra = report["restart"]["extra_p99_ms"]
    print(f"\np99 beyond the baseline: {extra} ms (target < {TARGET_EXTRA_P99_MS:g} ms)")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
