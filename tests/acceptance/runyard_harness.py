"""Helpers for the acceptance tests: start a real daemon, run the real CLI."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

TEST_TOKEN = "acceptance-test-token-0123456789"
STARTUP_DEADLINE = 20.0
STOP_DEADLINE = 15.0
CLI_TIMEOUT = 60.0

CONFIG = """\
[daemon]
host = "127.0.0.1"
port = {port}
data_dir = "{data_dir}"

[tasks.hello]
description = "Greet someone."
run = 'echo "hello $WHO"'

[[tasks.hello.params]]
name = "who"
env = "WHO"
default = "world"

[tasks.fail]
run = 'echo oops >&2; exit 3'

[tasks.sleepy]
run = 'echo start; sleep 30'

[tasks.counter]
run = 'for i in 1 2 3; do echo line $i; sleep 0.2; done'
"""


def until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll `check` every 50 ms until it is true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def free_port() -> int:
    """Return a port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cli_env(**overrides: str) -> dict[str, str]:
    """Return the environment for runyard subprocesses: no stray runyard settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("COLUMNS", None)
    env.update(overrides)
    return env


@dataclass
class Daemon:
    url: str
    token: str
    config: Path
    data_dir: Path
    env: dict[str, str]

    def cli(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `python -m runyard --config <cfg> *args` and return what it did."""
        return run_cli("--config", str(self.config), *args, env=env or self.env)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "runyard", "--config", str(self.config), *args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runyard", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )


def wait_for_health(url: str, process: subprocess.Popen[bytes]) -> str | None:
    """Return None once /health answers, else why it never did."""
    deadline = time.monotonic() + STARTUP_DEADLINE
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return f"the daemon exited with {process.returncode}"
        try:
            if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                return None
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return f"/health did not answer within {STARTUP_DEADLINE:g}s"


def stop_process(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=STOP_DEADLINE)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return -9


def start_daemon(
    config: Path,
    env: dict[str, str],
    output: Path,
    port: int,
    command: list[str] | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start `runyard serve` with `config` (listening on `port`), its output in `output`.

    `command` is how to call runyard (default: this interpreter's `-m runyard`).
    Return the process and its URL once /health answers; a daemon that never
    does is stopped and the test fails with what it printed.
    """
    with output.open("wb") as log:
        process = subprocess.Popen(
            [*(command or [sys.executable, "-m", "runyard"]), "--config", str(config), "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    problem = wait_for_health(url, process)
    if problem is not None:
        stop_process(process)
        raise AssertionError(f"{problem}; its output:\n{output.read_text(errors='replace')}")
    return process, url


def stop_daemon(process: subprocess.Popen[bytes], output: Path) -> None:
    """Stop the daemon with SIGTERM; fail the test unless it exits 0."""
    code = stop_process(process)
    assert code == 0, f"daemon exited {code}; its output:\n{output.read_text(errors='replace')}"


CliRunner = Callable[..., subprocess.CompletedProcess[str]]


@dataclass
class OfflineConfig:
    """A valid config whose daemon is not running."""

    path: Path
    url: str
