"""A full disk does not kill supervision: a real daemon whose data dir is a 20 MB tmpfs.

A task prints 25 MB: its output fills the disk. The run must still end with
its reason, its log file must be closed and its slot freed; while the disk is
full, triggers are refused with 507 and /health answers 503 "disk full"; once
space is freed the daemon takes triggers again by itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from notification_receivers import HttpReceiver  # noqa: E402
from runyard_harness import (
    TEST_TOKEN,
    cli_env,
    free_port,
    run_cli,
    start_daemon,
    stop_daemon,
    until,
)

TMPFS_SIZE = "20m"
FLOOD_BYTES = 25 * 1024 * 1024
FILLER_BYTES = 3 * 1024 * 1024  # freed to end the shortage; more than runyard's 1 MB floor

# Prints $SIZE bytes of 100-byte lines, then exits 0.
FLOOD = """\
import os, sys
chunk = (b"x" * 99 + b"\\n") * 1000
for _ in range(max(1, int(os.environ["SIZE"]) // len(chunk))):
    sys.stdout.buffer.write(chunk)
"""

CONFIG = """\
[daemon]
host = "127.0.0.1"
port = {port}
data_dir = "{data_dir}"

[tasks.flood]
run = '{python} {flood}'
max_concurrent = 1

[[tasks.flood.params]]
name = "size"
env = "SIZE"
default = "{flood_bytes}"

[tasks.small]
run = 'echo ok'

[accounts.acme]
tasks = ["flood", "small"]

[notifiers.ops]
urls = ["json://127.0.0.1:{hook_port}/disk"]

[[routes]]
kinds = ["disk_full"]
notifiers = ["ops"]
"""


@dataclass
class FullDiskDaemon:
    url: str
    pid: int
    disk: Path
    data_dir: Path
    key: str
    http: httpx.Client
    hook: HttpReceiver  # receives the disk_full notification

    def rest_trigger(self, **params: str) -> httpx.Response:
        return self.http.post(
            f"{self.url}/api/tasks/flood/run",
            json={"params": params},
            headers={"Authorization": f"Bearer {TEST_TOKEN}"},
        )

    def v3_trigger(self, name: str = "flood") -> httpx.Response:
        return self.http.post(f"{self.url}/api/v3/trigger", json={"key": self.key, "name": name})

    def run(self, run_id: str) -> dict[str, Any]:
        response = self.http.get(
            f"{self.url}/api/runs/{run_id}", headers={"Authorization": f"Bearer {TEST_TOKEN}"}
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def open_files(self) -> list[str]:
        fds = Path(f"/proc/{self.pid}/fd")
        found = []
        for fd in fds.iterdir():
            try:
                found.append(os.readlink(fd))
            except FileNotFoundError:
                continue
        return found


def _mount_tmpfs(where: Path) -> None:
    where.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.fail(
            "this test needs a real small tmpfs and could not mount one "
            f"(mount needs root): {result.stderr.strip()}"
        )


@pytest.fixture
def full_disk_daemon(tmp_path: Path) -> Iterator[FullDiskDaemon]:
    disk = tmp_path / "disk"
    _mount_tmpfs(disk)
    hook = HttpReceiver()
    try:
        port = free_port()
        data_dir = disk / "data"
        config = tmp_path / "runyard.toml"
        flood = tmp_path / "flood.py"
        flood.write_text(FLOOD, encoding="utf-8")
        config.write_text(
            CONFIG.format(
                port=port,
                data_dir=data_dir,
                python=sys.executable,
                flood=flood,
                flood_bytes=FLOOD_BYTES,
                hook_port=hook.port,
            ),
            encoding="utf-8",
        )
        env = cli_env(RUNYARD_TOKEN=TEST_TOKEN)
        output = tmp_path / "daemon.log"
        process, url = start_daemon(config, env, output, port)
        try:
            # Keys are made through the daemon: before it runs there is no database.
            created = run_cli(
                "--config", str(config), "keys", "create", "--account", "acme", "--label", "t",
                env=env,
            )  # fmt: skip
            assert created.returncode == 0, created.stderr
            with httpx.Client(timeout=60) as http:
                yield FullDiskDaemon(
                    url=url,
                    pid=process.pid,
                    disk=disk,
                    data_dir=data_dir,
                    key=created.stdout.strip(),
                    http=http,
                    hook=hook,
                )
        finally:
            stop_daemon(process, output)
    finally:
        hook.close()
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_disk_does_not_kill_supervision(full_disk_daemon: FullDiskDaemon) -> None:
    daemon = full_disk_daemon
    filler = daemon.disk / "filler"
    filler.write_bytes(b"\0" * FILLER_BYTES)

    answer = daemon.rest_trigger()
    assert answer.status_code == 201, answer.text
    run_id = answer.json()["id"]
    until(lambda: next((daemon.data_dir / "logs").glob(f"*/{run_id}.log"), None) is not None)
    log_file = next((daemon.data_dir / "logs").glob(f"*/{run_id}.log"))

    # The task filled the disk; its process ends, and runyard closes the log.
    until(lambda: os.statvfs(daemon.disk).f_bfree * os.statvfs(daemon.disk).f_frsize < 1 << 20)
    until(lambda: str(log_file) not in daemon.open_files(), timeout=60)

    health = daemon.http.get(f"{daemon.url}/health")
    assert health.status_code == 503, health.text
    assert health.headers["Retry-After"].isdigit()
    body = health.json()
    assert body["status"] == "unavailable"
    assert body["reason"].startswith("disk full"), body
    assert any(check.startswith("disk full") for check in body["checks"].values()), body

    refused = daemon.rest_trigger(size="10")
    assert refused.status_code == 507, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert "disk" in refused.json()["detail"] and "full" in refused.json()["detail"]
    v3 = daemon.v3_trigger()
    assert v3.status_code == 507, v3.text
    assert v3.json()["status"] == "error" and "disk" in v3.json()["message"], v3.json()
    # The refusals are one disk_full notification (the second is folded into it),
    # delivered although the database on that disk cannot keep it in-app.
    (post,) = daemon.hook.wait_for(1)
    assert post.json()["title"] == "runyard: flood disk_full"
    assert "free on the disk of" in post.json()["message"]

    # Space comes back: the daemon recovers by itself.
    filler.unlink()
    until(lambda: daemon.http.get(f"{daemon.url}/health").status_code == 200, timeout=30)
    until(lambda: daemon.run(run_id)["status"] == "ended", timeout=60)
    ended = daemon.run(run_id)
    assert (ended["end_reason"], ended["exit_code"]) == ("success", 0), ended
    log_text = log_file.read_bytes()
    assert "of output were lost: the log could not be written (No space left on device)" in (
        ended["description"] + log_text.decode(errors="replace")
    ), ended["description"]

    # Its slot was freed: the next run of the task (max_concurrent = 1) runs.
    again = daemon.rest_trigger(size="100000")
    assert again.status_code == 201, again.text
    until(lambda: daemon.run(again.json()["id"])["status"] == "ended", timeout=30)
    assert daemon.run(again.json()["id"])["end_reason"] == "success"
    # The v3 API takes triggers again (a small task: another flood would fill
    # the disk anew while the daemon stops, and its end wait for space).
    v3 = daemon.v3_trigger("small")
    assert v3.status_code == 200, v3.text
