"""The seeded history in PostgreSQL: the run-list queries' plans and times there.

The rows come from the seeded SQLite file (the same million runs). The
database is migrated by runyard, then, as on SQLite, the indexes are dropped,
the rows copied in (COPY), and the indexes made again from their own DDL; the
statement-level counting trigger fills run_counts during the copy. VACUUM
ANALYZE runs afterwards, as autovacuum would after so large a change (the
visibility map lets index-only scans skip the table). A marker table
holds the seed's key, so a database already seeded with it is reused.
"""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from runyard.domain.queries import RunQuery
from runyard.store import database
from runyard.store.run_list import list_statements
from runyard.store.schema import UtcDateTime, runs

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _to_datetime(value: int | None) -> datetime | None:
    return None if value is None else _EPOCH + timedelta(microseconds=value)


def _create_database(url: str) -> None:
    """Create the benchmark's own database at `url` when it does not exist yet."""
    target = sa.make_url(database.database_url(Path("."), {"RUNYARD_DATABASE_URL": url}))
    admin = sa.create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            exists = connection.execute(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :name"),
                {"name": target.database},
            ).first()
            if exists is None:
                connection.exec_driver_sql(f'CREATE DATABASE "{target.database}"')
    finally:
        admin.dispose()


def seed_postgres(url: str, sqlite_db: Path, key: str) -> float:
    """Fill the PostgreSQL database at `url` with the runs of `sqlite_db`; return seconds taken.

    The database must be one made for the benchmark: its public schema is replaced.
    """
    _create_database(url)
    engine = database.create_engine(database.database_url(Path("."), {"RUNYARD_DATABASE_URL": url}))
    try:
        with engine.connect() as connection:
            seeded = connection.exec_driver_sql(
                "SELECT to_regclass('public.bench_seed') IS NOT NULL"
            ).scalar_one()
            if seeded:
                stored = connection.exec_driver_sql("SELECT key FROM bench_seed").scalar_one()
                if stored == key:
                    return 0.0
        started = time.perf_counter()
        with engine.begin() as connection:
            connection.exec_driver_sql("DROP SCHEMA public CASCADE")
            connection.exec_driver_sql("CREATE SCHEMA public")
        database.migrate(engine)
        columns = [column.name for column in runs.c]
        timestamps = {i for i, c in enumerate(runs.c) if isinstance(c.type, UtcDateTime)}
        with engine.begin() as connection:
            indexes = connection.exec_driver_sql(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'runs'"
                " AND indexname <> 'runs_pkey'"
            ).all()
            for name, _ in indexes:
                connection.exec_driver_sql(f'DROP INDEX "{name}"')
            raw = connection.connection.driver_connection
            source = sqlite3.connect(f"file:{sqlite_db}?mode=ro", uri=True)
            try:
                copy_sql = f"COPY runs ({', '.join(columns)}) FROM STDIN"
                with raw.cursor() as cursor, cursor.copy(copy_sql) as copy:  # type: ignore[union-attr]
                    for row in source.execute(f"SELECT {', '.join(columns)} FROM runs"):
                        copy.write_row(
                            [_to_datetime(v) if i in timestamps else v for i, v in enumerate(row)]
                        )
            finally:
                source.close()
            for _, definition in indexes:
                connection.exec_driver_sql(definition)
            connection.exec_driver_sql("CREATE TABLE bench_seed (key text NOT NULL)")
            connection.execute(sa.text("INSERT INTO bench_seed VALUES (:key)"), {"key": key})
        with engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT")
            connection.exec_driver_sql("VACUUM ANALYZE")
        return time.perf_counter() - started
    finally:
        engine.dispose()


def explain_analyze(url: str, queries: dict[str, RunQuery]) -> dict[str, dict[str, Any]]:
    """Return, per query, PostgreSQL's executed plan summary and time of its page and total."""
    engine = sa.create_engine(database.database_url(Path("."), {"RUNYARD_DATABASE_URL": url}))
    results: dict[str, dict[str, Any]] = {}
    try:
        with engine.connect() as connection:
            for name, query in queries.items():
                result: dict[str, Any] = {}
                for label, statement in zip(
                    ("page", "total"), list_statements(query, "postgresql"), strict=True
                ):
                    compiled = statement.compile(
                        dialect=engine.dialect, compile_kwargs={"render_postcompile": True}
                    )
                    timings = []
                    plan: list[str] = []
                    for _ in range(3):
                        rows = connection.exec_driver_sql(
                            "EXPLAIN (ANALYZE, FORMAT TEXT) " + compiled.string, compiled.params
                        ).all()
                        plan = [row[0] for row in rows]
                        timings.append(
                            next(
                                float(line.split(":")[1].split()[0])
                                for line in plan
                                if line.startswith("Execution Time")
                            )
                        )
                    result[f"{label}_ms"] = round(min(timings), 2)
                    result[f"{label}_plan"] = [
                        line.strip().split("  (")[0]
                        for line in plan
                        if "->" in line or not line.startswith(" ")
                    ][:4]
                results[name] = result
    finally:
        engine.dispose()
    return results
