"""A real daemon: one account's run cannot reach another's data; the data dir is private.

Everything is observed the way a user would: the v3 API with two accounts'
keys, /proc for processes left behind, and the modes of the files on disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from runyard_harness import cli_env, free_port, run_cli, start_daemon, stop_daemon, until
from v3_fixtures import create_key, v3_daemon

# The repro; the detached process's output goes elsewhere, or it would
# hold the run's pipes open and the run would wait for it (a grace period).
LEAKS = """
[tasks.a-leaves]
run = '''
setsid sh -c 'sleep 2; echo leaked > "$RUNYARD_OUTPUT_DIR/leak.csv"; \\
  cat "$RUNYARD_OUTPUT_DIR"/*.csv > {spy}' > /dev/null 2>&1 & sleep 0.3
'''

[tasks.b-works]
run = '''printf 'secret\\n' > "$RUNYARD_OUTPUT_DIR/b.csv"; sleep 3'''

[accounts.a]
tasks = ["a-*"]

[accounts.b]
tasks = ["b-*"]
"""


def alive_with(run_id: str) -> list[int]:
    """Return the pids of live (not zombie) processes whose environment names this run."""
    marker = f"RUNYARD_RUN_ID={run_id}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as file:
                environ = file.read().split(b"\0")
            with open(f"/proc/{entry.name}/stat", "rb") as file:
                state = file.read().rpartition(b")")[2].split()[0]
        except OSError:
            continue
        if marker in environ and state != b"Z":
            found.append(int(entry.name))
    return found


def test_a_runs_leftover_cannot_reach_another_accounts_run(tmp_path: Path) -> None:
    spy = tmp_path / "spy.txt"
    with v3_daemon(tmp_path, LEAKS.format(spy=spy), {"a": "a", "b": "b"}) as daemon:
        leaver_id = daemon.trigger(daemon.keys["a"], "a-leaves")
        leaver = daemon.wait_ended(leaver_id)
        worker_id = daemon.trigger(daemon.keys["b"], "b-works")
        daemon.wait_ended(worker_id)
        status, answer = daemon.call("run-data", {"key": daemon.keys["b"], "name": "b-works"})
        assert (status, answer) == (200, {"status": "Success", "data": {"b": [["secret"]]}})
        assert not spy.exists(), spy.read_text()
        assert alive_with(leaver_id) == []
        assert leaver["end_reason"] == "success", leaver
        assert "Processes it left running in another process group" in leaver["description"]


# ----- file modes ---------------------------------------------------------------------

MODES = """
[daemon]
host = "127.0.0.1"
port = {port}
data_dir = "{data_dir}"
shutdown_timeout = "5s"

[tasks.writes]
run = '''
printf 'a,b\\n' > "$RUNYARD_OUTPUT_DIR/sheet.csv"; echo own > {own}; echo out; echo err >&2
'''

[tasks.sleeps]
run = 'echo started; sleep 30'

[accounts.acme]
tasks = ["*"]
"""


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def entries_under(data_dir: Path) -> dict[str, tuple[bool, int]]:
    """Return (is a directory, permission bits) of the data dir and all in it, by relative path."""
    found = {".": (True, stat.S_IMODE(data_dir.stat().st_mode))}
    for parent, directories, files in os.walk(data_dir):
        for name in directories + files:
            path = Path(parent, name)
            status = path.lstat()
            found[str(path.relative_to(data_dir))] = (
                stat.S_ISDIR(status.st_mode),
                stat.S_IMODE(status.st_mode),
            )
    return found


def not_private(entries: dict[str, tuple[bool, int]]) -> dict[str, str]:
    """Return the entries whose mode is not 0700 (directories) or 0600 (files)."""
    return {
        name: oct(mode)
        for name, (is_directory, mode) in entries.items()
        if mode != (0o700 if is_directory else 0o600)
    }


class ModesDaemon:
    """A daemon whose data dir the test inspects, started as often as the test likes."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.data_dir = directory / "data"
        self.port = free_port()
        self.config = directory / "runyard.toml"
        self.own = directory / "own.txt"
        self.config.write_text(
            MODES.format(port=self.port, data_dir=self.data_dir, own=self.own), encoding="utf-8"
        )
        self.env = cli_env()  # no RUNYARD_TOKEN: the daemon makes its token file
        self.output = directory / "daemon.log"

    @contextlib.contextmanager
    def running(self) -> Iterator[httpx.Client]:
        process, url = start_daemon(self.config, self.env, self.output, self.port)
        try:
            token = (self.data_dir / "token").read_text(encoding="utf-8").strip()
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
                yield client
        finally:
            stop_daemon(process, self.output)

    def log(self) -> str:
        """Return what the last daemon started printed."""
        return self.output.read_text(encoding="utf-8", errors="replace")


def run_task(client: httpx.Client, name: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = client.post(f"/api/tasks/{name}/run?wait=true&wait_timeout=30", json=body or {})
    assert response.status_code == 201, response.text
    run: dict[str, Any] = response.json()
    assert run["end_reason"] == "success", run
    return run


@pytest.mark.parametrize("mask", [0o002, 0o000])
def test_every_file_the_daemon_makes_is_private_whatever_the_umask(
    tmp_path: Path, mask: int
) -> None:
    daemon = ModesDaemon(tmp_path)
    with umask(mask):
        with daemon.running() as client:
            # Through the daemon; after it stops, keys work on its database directly.
            create_key(daemon.config, "acme", "first", daemon.env)
            run_task(client, "writes", {"data": [["x", "y"]]})
            started = client.post("/api/tasks/sleeps/run")
            assert started.status_code == 201, started.text
            sleeping = started.json()["id"]
            until(lambda: client.get(f"/api/runs/{sleeping}").json()["status"] == "running")
            # While it runs: the database's -wal and -shm, a run's directory, started.log.
            during = entries_under(daemon.data_dir)
            client.post(f"/api/runs/{sleeping}/stop")
        listed = run_cli("--config", str(daemon.config), "keys", "list", "--json", env=daemon.env)
        [key_id] = [key["id"] for key in json.loads(listed.stdout)["keys"]]
        revoked = run_cli("--config", str(daemon.config), "keys", "revoke", key_id, env=daemon.env)
        assert revoked.returncode == 0, revoked.stderr
        after = entries_under(daemon.data_dir)
    names = set(during) | set(after)
    made = {"runyard.db", "runyard.db-wal", "runyard.db-shm", "token", "started.log", "logs"}
    assert made | {"work", "keys.revoked"} <= names, sorted(names)
    assert any(name.startswith("logs/") and name.endswith(".log") for name in names), names
    assert any(name.startswith("work/") for name in during), sorted(during)
    assert not_private(during) == {}
    assert not_private(after) == {}
    # A task's own files keep the user's umask: the daemon never changed it.
    assert stat.S_IMODE(daemon.own.stat().st_mode) == 0o666 & ~mask


def test_an_open_data_dir_is_tightened_at_start(tmp_path: Path) -> None:
    daemon = ModesDaemon(tmp_path)
    with umask(0o002), daemon.running() as client:
        run_task(client, "writes")
    # As an earlier version left it: everything readable by everyone.
    for name, (is_directory, _mode) in entries_under(daemon.data_dir).items():
        (daemon.data_dir / name).chmod(0o755 if is_directory else 0o644)
    assert len(not_private(entries_under(daemon.data_dir))) >= 6
    with umask(0o002), daemon.running():
        assert not_private(entries_under(daemon.data_dir)) == {}
    assert "tightened the permissions" in daemon.log()
    # Once tight, a start has nothing to say about it.
    with umask(0o002), daemon.running():
        pass
    assert "tightened the permissions" not in daemon.log()
