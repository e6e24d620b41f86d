"""Shared fixtures: a RunStore on SQLite and on PostgreSQL, a Run factory, and a Runyard
service with its HTTP app (`runyard`, `client`, `key`), built from the test module's `CONFIG`.

A module using `runyard` defines `CONFIG` (the config file's text); it may override
`runyard_environ` (e.g. to point the service at `store_url`) or `client`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from ulid import ULID

from runyard.api.app import create_app
from runyard.app import Runyard
from runyard.config.loader import load_config
from runyard.domain.models import Run, RunStatus, TriggeredBy
from runyard.store import RunStore, database_url
from runyard.store.keys import KeyStore

# The PostgreSQL tests fail (never skip) when this server does not answer.
POSTGRES_URL = os.environ.get(
    "RUNYARD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def new_run(
    task_name: str = "backup",
    status: RunStatus = RunStatus.PENDING,
    created_at: datetime = T0,
    triggered_by: TriggeredBy = TriggeredBy.API,
    **fields: Any,
) -> Run:
    """Return a run with a fresh ULID and the given fields."""
    return Run(
        id=str(ULID()),
        task_name=task_name,
        status=status,
        created_at=created_at,
        triggered_by=triggered_by,
        **fields,
    )


@pytest.fixture
def make_run() -> Callable[..., Run]:
    """Return the Run factory (test modules cannot import conftest reliably)."""
    return new_run


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """Create a database private to this test session; drop it afterwards."""
    server = sa.make_url(database_url(Path("."), {"RUNYARD_DATABASE_URL": POSTGRES_URL}))
    admin = sa.create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    name = f"runyard_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield server.set(database=name).render_as_string(hide_password=False)
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


def _reset_postgres(url: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("DROP SCHEMA public CASCADE")
            connection.exec_driver_sql("CREATE SCHEMA public")
    finally:
        engine.dispose()


@pytest.fixture
def fresh_postgres(postgres_database: str) -> str:
    """Return the URL of the session's PostgreSQL database, emptied (nothing migrated yet)."""
    _reset_postgres(postgres_database)
    return postgres_database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Return the URL of an empty database (SQLite file or fresh PostgreSQL schema)."""
    if request.param == "sqlite":
        # A missing parent directory: the store creates it.
        return f"sqlite:///{tmp_path / 'data' / 'runyard.db'}"
    url: str = request.getfixturevalue("postgres_database")
    _reset_postgres(url)
    return url


@pytest.fixture
def store(store_url: str) -> Iterator[RunStore]:
    """Return a RunStore on an empty, migrated database."""
    opened = RunStore.open(store_url)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def config_path(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """Write the test module's `CONFIG` to `<tmp_path>/runyard.toml`."""
    text: str = request.module.CONFIG
    path = tmp_path / "runyard.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def runyard_environ() -> dict[str, str]:
    """The environment the service reads (and its tasks get): only PATH."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


@pytest.fixture
def runyard(config_path: Path, runyard_environ: dict[str, str]) -> Runyard:
    """A Runyard service on the module's config; `client` starts and stops it."""
    return Runyard(load_config(config_path, environ=runyard_environ), environ=runyard_environ)


@pytest.fixture
def client(runyard: Runyard) -> Iterator[TestClient]:
    """A client of the service's HTTP app (lifespan run), sending the daemon's token."""
    with TestClient(
        create_app(runyard), headers={"Authorization": f"Bearer {runyard.token}"}
    ) as client:
        yield client


@pytest.fixture
def key(request: pytest.FixtureRequest, runyard: Runyard, client: TestClient) -> str:
    """A v3 API key of the default account, named after the test module."""
    _key, plaintext = KeyStore(runyard.store.transaction).create(
        "default", request.module.__name__.rpartition(".")[2], datetime.now(UTC)
    )
    return plaintext
