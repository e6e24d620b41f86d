"""A year of run history for the dashboard benchmark: a data dir with a million runs.

The database is created by runyard's own migrations, so it has the store's
schema, indexes and counting triggers exactly. Seeding a million rows through
those seventeen indexes and a per-row trigger would take minutes, so the
seeder reads the DDL of the indexes and triggers from `sqlite_master`, drops
them, inserts the rows in bulk (one INSERT over the schema's columns,
executed many times by the driver), fills `run_counts` with one GROUP BY, and runs the same DDL
again: the file ends up as the migrations would have left it after a year of
use. No ANALYZE: the daemon never runs one, so the query planner sees what it
sees in the field.

The mix (all deterministic, from one seeded random generator):
- 50 tasks with skewed volume (the busiest fire every few minutes, the
  quietest a few times a month), some with replicas, some with params;
- end reasons in field-like shares (mostly success, some failed, a few of
  every other reason), exit codes and durations to match, no start or end
  for runs that never ran (skipped, queue_full, missed);
- triggers: cron for scheduled tasks, api (REST/CLI, some with params),
  cloud (the v3 API, with an account and input data), and retries of
  failed runs (retry_attempt 1, linked to the failed run);
- a log file for a sample of the runs (a few hundred lines each), and one
  run with a 100,000-line log.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from runyard.store import database
from runyard.store._logformat import header
from runyard.store.files import LOGS_DIR, SQLITE_DATABASE
from runyard.store.schema import runs

# Bump when the mix or the layout changes: the cache is keyed by it.
SEED_VERSION = 2
TASK_COUNT = 50
ACCOUNTS = ("acme", "globex")
LOGGED_SAMPLE = 2_000  # runs with a log file of a few hundred lines
BIG_LOG_LINES = 100_000
_SPAN = timedelta(days=365)
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

# Shares of end reasons among ended runs, and the exit code each records.
_END_REASONS: tuple[tuple[str, float], ...] = (
    ("success", 0.86),
    ("failed", 0.07),
    ("stopped", 0.012),
    ("timeout", 0.01),
    ("crashed", 0.003),
    ("skipped", 0.02),
    ("log_overflow", 0.001),
    ("queue_full", 0.005),
    ("missed", 0.012),
    ("daemon_stopped", 0.004),
    ("start_failed", 0.003),
)
_NEVER_RAN = frozenset({"skipped", "queue_full", "missed"})
_EXIT_CODES = {
    "success": 0,
    "stopped": 143,
    "timeout": 143,
    "crashed": -2,
    "skipped": -1,
    "queue_full": -1,
    "missed": -1,
    "daemon_stopped": 143,
    "start_failed": 127,
    "log_overflow": 137,
}
# The store's columns in the schema's order, values already as SQLite stores
# them (timestamps as integer microseconds): the driver's executemany, without
# a conversion per value.
_INSERT = (
    f"INSERT INTO runs ({', '.join(column.name for column in runs.c)})"
    f" VALUES ({', '.join('?' * len(runs.c))})"
)
_VERBS = (
    "backup",
    "sync",
    "report",
    "clean",
    "import",
    "export",
    "check",
    "build",
    "send",
    "index",
)
_NOUNS = ("db", "crm", "invoices", "logs", "users", "orders", "cache", "search", "mail", "metrics")


@dataclass(frozen=True)
class SeedTask:
    """A task of the seeded history, as the daemon's config declares it."""

    name: str
    weight: float  # share of all runs
    cron: str | None
    replicas: int
    has_params: bool
    median_ms: int


@dataclass(frozen=True)
class Seeded:
    """What the benchmark needs to know about a seeded data dir."""

    data_dir: Path
    tasks: list[SeedTask]
    runs: int
    seconds: float  # time the seeding took (0 when it came from the cache)
    newest_run_id: str  # the newest run of the busiest task
    data_run_id: str  # a v3 run with params, input and output data
    big_log_run_id: str  # a run with BIG_LOG_LINES lines of log
    cached: bool


def seed_tasks() -> list[SeedTask]:
    """Return the 50 tasks: names, volume (Zipf-like), schedule and shape."""
    rng = random.Random(11)
    tasks = []
    for index in range(TASK_COUNT):
        name = f"{_VERBS[index % 10]}-{_NOUNS[(index * 3 + index // 10) % 10]}-{index:02d}"
        scheduled = index % 5 != 4  # four in five tasks have a schedule
        # Daily or weekly schedules: nothing fires while the benchmark runs.
        cron = f"{index % 60} {index % 24} * * *" if scheduled and index % 3 else None
        if scheduled and cron is None:
            cron = f"{index % 60} 4 * * {index % 7}"
        tasks.append(
            SeedTask(
                name=name,
                weight=1 / (index + 1) ** 0.9,
                cron=cron,
                replicas=3 if index % 17 == 5 else 1,
                has_params=index % 4 == 1,
                median_ms=int(rng.lognormvariate(8.5, 1.5)),
            )
        )
    total = sum(task.weight for task in tasks)
    return [
        SeedTask(t.name, t.weight / total, t.cron, t.replicas, t.has_params, t.median_ms)
        for t in tasks
    ]


def ulid(ms: int, rng: random.Random) -> str:
    """Return a ULID string for the millisecond `ms` (its time part sorts as ids do)."""
    value = (ms << 80) | rng.getrandbits(80)
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def _us(at: datetime) -> int:
    return (at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def _rows(
    count: int, tasks: list[SeedTask], end: datetime
) -> tuple[list[tuple[Any, ...]], dict[str, str]]:
    """Return `count` run rows (in the `runs` column order) and the notable run ids."""
    rng = random.Random(SEED_VERSION)
    columns = [column.name for column in runs.c]
    reasons = [reason for reason, _ in _END_REASONS]
    reason_weights = [share for _, share in _END_REASONS]
    start_us = _us(end - _SPAN)
    span_us = _us(end) - start_us
    # Creation times spread evenly over the year, in order: ids sort with them.
    times = sorted(start_us + rng.randrange(span_us) for _ in range(count))
    picked_tasks = rng.choices(tasks, weights=[task.weight for task in tasks], k=count)
    picked_reasons = rng.choices(reasons, weights=reason_weights, k=count)
    triggers = rng.choices(("cron", "api", "cloud"), weights=(0.7, 0.2, 0.1), k=count)
    rows: list[tuple[Any, ...]] = []
    last_failed: dict[str, str] = {}
    notable: dict[str, str] = {}
    for created_us, task, reason, trigger in zip(
        times, picked_tasks, picked_reasons, triggers, strict=True
    ):
        run_id = ulid(created_us // 1000, rng)
        if task.cron is None and trigger == "cron":
            trigger = "api"
        retry_of = None
        retry_attempt = 0
        if trigger != "cloud" and task.name in last_failed and rng.random() < 0.5:
            retry_of = last_failed.pop(task.name)
            retry_attempt = 1
        if reason in _NEVER_RAN:
            start_at = end_at = duration = None
        else:
            start_at = created_us + rng.randrange(1, 2_000_000)
            duration = int(task.median_ms * rng.lognormvariate(0, 0.6))
            end_at = start_at + duration * 1000
        exit_code = _EXIT_CODES.get(reason, 0) if reason != "failed" else rng.choice((1, 2, 3))
        params = "{}"
        input_data = output_data = account = external_id = None
        if task.has_params and trigger == "api" and rng.random() < 0.6:
            params = json.dumps({"who": f"user-{rng.randrange(1000)}", "region": "eu"})
        if trigger == "cloud":
            account = ACCOUNTS[rng.randrange(len(ACCOUNTS))]
            external_id = f"exec-{rng.getrandbits(48):012x}"
            input_data = json.dumps(
                [
                    [
                        ["id", "email"],
                        *([str(i), f"u{i}@example.com"] for i in range(rng.randrange(1, 6))),
                    ]
                ]
            )
            if reason == "success":
                output_data = json.dumps({"result": [["id", "ok"], ["1", "yes"]]})
        if reason in ("failed", "timeout", "crashed") and trigger != "cloud":
            last_failed[task.name] = run_id
        replica = rng.randrange(task.replicas) if task.replicas > 1 else 0
        row = {
            "id": run_id,
            "task_name": task.name,
            "status": "ended",
            "end_reason": reason,
            "exit_code": exit_code,
            "created_at": created_us,
            "start_at": start_at,
            "end_at": end_at,
            "duration_ms": duration,
            "replica_index": replica,
            "retry_attempt": retry_attempt,
            "retry_of_run_id": retry_of,
            "triggered_by": trigger,
            "external_execution_id": external_id,
            "params": params,
            "description": "",
            "not_before": None,
            "input_data": input_data,
            # As the store writes it: the input's JSON size (kept inline at this size).
            "input_size": len(input_data.encode("utf-8")) if input_data else None,
            "output_data": output_data,
            "account": account,
            "secret_hash": None,
            "node": None,  # one daemon on SQLite: no node
        }
        rows.append(tuple(row[column] for column in columns))
        if task is tasks[0]:
            notable["newest"] = run_id
        if trigger == "cloud" and output_data is not None:
            notable["data"] = run_id
    return rows, notable


def _write_log(path: Path, lines: int, created_us: int, rng: random.Random) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path, "wb") as handle:
        first = 0
        while first < lines:
            count = min(1000, lines - first)
            body = b"".join(
                f"{first + i:06d} \x1b[32mINFO\x1b[0m step {rng.randrange(100)}"
                f" done in {rng.randrange(999)} ms\n".encode()
                for i in range(count)
            )
            handle.write(header(created_us + first, "out", first, count, len(body)) + body)
            first += count


def seed(data_dir: Path, count: int, tasks: list[SeedTask], end: datetime) -> dict[str, str]:
    """Create `data_dir` with `count` runs of `tasks` ending at `end`; return the notable ids."""
    data_dir.mkdir(parents=True, mode=0o700)
    url = f"sqlite:///{data_dir / SQLITE_DATABASE}"
    engine = database.create_engine(url)
    database.migrate(engine)
    rows, notable = _rows(count, tasks, end)
    with engine.connect() as connection:
        raw = connection.connection.driver_connection
        assert isinstance(raw, sqlite3.Connection)
        ddl = [
            sql
            for (sql,) in raw.execute(
                "SELECT sql FROM sqlite_master WHERE tbl_name = 'runs'"
                " AND type IN ('index', 'trigger') AND sql IS NOT NULL"
            )
        ]
        for kind, name in raw.execute(
            "SELECT type, name FROM sqlite_master WHERE tbl_name = 'runs'"
            " AND type IN ('index', 'trigger') AND sql IS NOT NULL"
        ).fetchall():
            raw.execute(f"DROP {kind.upper()} {name}")
        raw.execute("PRAGMA journal_mode=OFF")
        raw.execute("PRAGMA synchronous=OFF")
        raw.execute("PRAGMA cache_size=-262144")
        raw.execute("BEGIN")
        raw.executemany(_INSERT, rows)
        raw.execute(
            "INSERT INTO run_counts (task_name, status, end_reason, count)"
            " SELECT task_name, status, coalesce(end_reason, ''), count(*)"
            " FROM runs GROUP BY 1, 2, 3"
        )
        for sql in ddl:
            raw.execute(sql)
        # The search index (migration 0009) is kept by triggers that were
        # dropped above: index the rows as the migration's backfill does.
        if raw.execute("SELECT 1 FROM sqlite_master WHERE name = 'runs_search'").fetchone():
            raw.execute(
                "INSERT INTO runs_search (rowid, id, external_execution_id)"
                " SELECT rowid, lower(id), lower(external_execution_id) FROM runs"
            )
        raw.execute("COMMIT")
        raw.execute("PRAGMA journal_mode=WAL")
    engine.dispose()
    rng = random.Random(SEED_VERSION + 1)
    logs = data_dir / LOGS_DIR
    step = max(1, len(rows) // LOGGED_SAMPLE)
    id_index = [column.name for column in runs.c].index("id")
    created_index = [column.name for column in runs.c].index("created_at")
    for row in rows[::step]:
        run_id = row[id_index]
        _write_log(
            logs / run_id[:6] / f"{run_id}.log", rng.randrange(50, 500), row[created_index], rng
        )
    # A recent run that is not the newest run's page: its log is the long one.
    big = next(row for row in reversed(rows[:-1]) if row[id_index] != notable["newest"])
    notable["big_log"] = big[id_index]
    _write_log(
        logs / big[id_index][:6] / f"{big[id_index]}.log", BIG_LOG_LINES, big[created_index], rng
    )
    return notable


def seeded(cache: Path, count: int) -> Seeded:
    """Return a data dir with `count` runs, from the cache when one of this version is there.

    The history ends at the start of the current UTC day, so "the last 24
    hours" and "the last 7 days" hold runs; the cache key has the day in it,
    and the migrations (a new one changes the schema).
    """
    tasks = seed_tasks()
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    # A new migration changes the schema the file must have: it is part of the key.
    migrations = hashlib.sha256()
    for script in sorted((database.MIGRATIONS_DIR / "versions").glob("*.py")):
        migrations.update(script.name.encode() + script.read_bytes())
    key = f"dashboard-v{SEED_VERSION}-{count}-{end:%Y%m%d}-{migrations.hexdigest()[:8]}"
    data_dir = cache / key
    meta = cache / f"{key}.json"
    if meta.exists() and (data_dir / SQLITE_DATABASE).exists():
        notable = json.loads(meta.read_text())
        return Seeded(
            data_dir,
            tasks,
            count,
            0.0,
            notable["newest"],
            notable["data"],
            notable["big_log"],
            True,
        )
    for stale in cache.glob("dashboard-*"):
        if stale.is_dir():
            shutil.rmtree(stale)
        else:
            stale.unlink()
    started = time.perf_counter()
    notable = seed(data_dir, count, tasks, end)
    seconds = time.perf_counter() - started
    meta.write_text(json.dumps(notable))
    os.sync()
    return Seeded(
        data_dir,
        tasks,
        count,
        seconds,
        notable["newest"],
        notable["data"],
        notable["big_log"],
        False,
    )
