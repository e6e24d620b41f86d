"""Notifications benchmark: what routing every run costs the engine's throughput.

The same burst of /bin/true runs goes through the engine without notifications
(the baseline, in the same process and run), with every run routed and
folded into one window (the usual case: repeats of one task within the
coalesce window), and with every run its own message kept in-app
(`coalesce_window = "0s"`: one stored notification per run). Rounds
alternate the three so a shared machine's drift hits each alike. Not a test:
it prints a table and writes bench/results/notifications.json.

    .venv/bin/python bench/notifications.py              # ~2 min on 2 cores
    .venv/bin/python bench/notifications.py --runs 2000 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != BENCH]
sys.path.append(str(BENCH))
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import machine, merge_report  # noqa: E402

from runyard.config.notifications import NotificationSettings, Notifier  # noqa: E402
from runyard.domain.models import TaskDefinition, TriggeredBy  # noqa: E402
from runyard.domain.notifications import Route  # noqa: E402
from runyard.engine.core import Engine  # noqa: E402
from runyard.engine.process import use_pidfd_child_watcher  # noqa: E402
from runyard.notifications.service import NotificationService  # noqa: E402
from runyard.store.runs import RunStore  # noqa: E402

RESULTS = ROOT / "bench" / "results"

# In-app only (no URLs): what is measured is runyard's own work, not a network.
INBOX = {"inbox": Notifier("inbox", ())}
SCENARIOS: dict[str, NotificationSettings | None] = {
    "none": None,
    "folded": NotificationSettings(
        notifiers=INBOX, routes=(Route(frozenset({"succeeded"}), ("inbox",)),)
    ),
    "every_run": NotificationSettings(
        coalesce_window=timedelta(0),
        max_pending=100_000,
        notifiers=INBOX,
        routes=(Route(frozenset({"succeeded"}), ("inbox",)),),
    ),
}


async def _runs_per_second(
    count: int, concurrency: int, work: Path, settings: NotificationSettings | None
) -> tuple[float, int]:
    """Push `count` runs of /bin/true through the engine; return runs/s and messages stored."""
    store = RunStore.open(f"sqlite:///{work / 'bench.db'}")
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
    service = None
    if settings is not None:
        service = NotificationService(settings, store, link_base=None, log_path=engine.log_path)
        engine.events.listen(service.on_event)
        await service.start(["true"])
    await engine.start()
    try:
        finished = 0
        done = asyncio.Event()

        def count_end(kind: str, data: dict[str, Any]) -> None:
            nonlocal finished
            if kind == "run.ended":
                finished += 1
                if finished == count:
                    done.set()

        engine.events.listen(count_end)
        started = time.perf_counter()
        await asyncio.gather(*(engine.trigger("true", {}, TriggeredBy.API) for _ in range(count)))
        await done.wait()
        elapsed = time.perf_counter() - started
    finally:
        await engine.shutdown(timeout=10)
        if service is not None:
            await service.stop(grace=60)
        stored = store.list_notifications(None, 1, 0)[1]
        store.close()
    return count / elapsed, stored


def bench(count: int, concurrency: int, rounds: int) -> dict[str, Any]:
    async def all_rounds() -> dict[str, Any]:
        use_pidfd_child_watcher()
        rates: dict[str, list[float]] = {name: [] for name in SCENARIOS}
        stored: dict[str, int] = {}
        for _ in range(rounds):
            for name, settings in SCENARIOS.items():
                with tempfile.TemporaryDirectory(prefix="runyard-bench-") as tmp:
                    rate, stored[name] = await _runs_per_second(
                        count, concurrency, Path(tmp), settings
                    )
                rates[name].append(rate)
        baseline = rates["none"]
        return {
            "runs": count,
            "concurrency": concurrency,
            "rounds": rounds,
            "runs_per_s": {name: round(statistics.median(r), 1) for name, r in rates.items()},
            "ratio_to_none": {
                name: round(statistics.median(a / b for a, b in zip(r, baseline, strict=True)), 3)
                for name, r in rates.items()
                if name != "none"
            },
            "ratios_per_round": {
                name: [round(a / b, 3) for a, b in zip(r, baseline, strict=True)]
                for name, r in rates.items()
                if name != "none"
            },
            "notifications_stored": stored,
        }

    return asyncio.run(all_rounds())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "notifications.json")
    args = parser.parse_args()
    result = bench(args.runs, args.concurrency, args.rounds)
    merge_report(args.out, {"machine": machine(), "throughput": result})
    print(f"{'scenario':<12} {'runs/s':>8} {'ratio to none':>14} {'stored':>7}")
    for name, rate in result["runs_per_s"].items():
        ratio = result["ratio_to_none"].get(name, 1.0)
        stored = result["notifications_stored"][name]
        rounds = result["ratios_per_round"].get(name, [])
        print(f"{name:<12} {rate:>8} {ratio:>14} {stored:>7}  {rounds}")


if __name__ == "__main__":
    main()
