"""Fixtures: a real runyard daemon as a subprocess, and the real CLI run against it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from runyard_harness import (
    CONFIG,
    TEST_TOKEN,
    CliRunner,
    Daemon,
    OfflineConfig,
    cli_env,
    free_port,
    run_cli,
    start_daemon,
    stop_daemon,
)


@pytest.fixture
def offline_config(tmp_path: Path) -> OfflineConfig:
    port = free_port()
    path = tmp_path / "runyard.toml"
    path.write_text(CONFIG.format(port=port, data_dir=tmp_path / "data"), encoding="utf-8")
    return OfflineConfig(path=path, url=f"http://127.0.0.1:{port}")


@pytest.fixture
def runyard_cli() -> CliRunner:
    """Return a runner of `python -m runyard *args` (env: no RUNYARD_* unless given)."""

    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, env=cli_env(**env))

    return run


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    """Start `runyard serve` on a free port; stop it with SIGTERM and expect exit 0."""
    port = free_port()
    data_dir = tmp_path / "data"
    config = tmp_path / "runyard.toml"
    config.write_text(CONFIG.format(port=port, data_dir=data_dir), encoding="utf-8")
    env = cli_env(RUNYARD_TOKEN=TEST_TOKEN)
    output = tmp_path / "daemon.log"
    process, url = start_daemon(config, env, output, port)
    yield Daemon(url=url, token=TEST_TOKEN, config=config, data_dir=data_dir, env=env)
    stop_daemon(process, output)
