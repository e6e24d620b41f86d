"""A task's `user`: with the daemon as root, the run's process drops to that user.

A real user made for the test (useradd), a real Runyard with a SQLite store,
real processes. The daemon must be root to switch users: CI runs as root, and
so does this suite's machine; elsewhere the test says why it cannot run.
"""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from runyard.api.app import create_app
from runyard.app import Runyard
from runyard.config.loader import load_config
from runyard.domain.services import InstanceState, RestartPolicy, ServiceDefinition
from runyard.engine.identity import CannotRunAs, resolve_user
from runyard.exceptions import ConfigError
from runyard.services.supervisor import ServiceLifetime, ServiceSupervisor
from runyard.store.logs import read_lines

if os.geteuid() != 0:
    if os.environ.get("CI"):
        pytest.fail("the task user tests need root (useradd, and a daemon that can switch users)")
    pytest.skip("needs root: useradd and switching users", allow_module_level=True)


@pytest.fixture(scope="module")
def user() -> Iterator[pwd.struct_passwd]:
    name = f"ry{uuid.uuid4().hex[:8]}"
    subprocess.run(
        ["useradd", "--create-home", "--shell", "/bin/sh", "--user-group", name], check=True
    )
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", "--remove", name], check=False, capture_output=True)


def serve(base: Path, config: str) -> Runyard:
    path = base / "runyard.toml"
    path.write_text(config, encoding="utf-8")
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/root"}
    return Runyard(load_config(path, environ=environ), environ=environ)


@pytest.fixture
def open_base() -> Iterator[Path]:
    """A directory every user may pass, as /var/lib is (pytest's tmp_path is root's alone)."""
    base = Path(tempfile.mkdtemp(prefix="runyard-user-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def run_task(runyard: Runyard, task: str) -> tuple[dict[str, Any], list[str]]:
    with TestClient(create_app(runyard)) as client:
        client.headers["Authorization"] = f"Bearer {runyard.token}"
        response = client.post(f"/api/tasks/{task}/run", params={"wait": "true"})
        assert response.status_code == 201, response.text
        run: dict[str, Any] = response.json()
        lines = client.get(f"/api/runs/{run['id']}/log").json()["lines"]
        run = client.get(f"/api/runs/{run['id']}").json()
        return run, [line["text"] for line in lines]


def test_the_run_drops_to_the_task_user(user: pwd.struct_passwd, open_base: Path) -> None:
    runyard = serve(
        open_base,
        f"""
[daemon]
data_dir = "data"

[tasks.whoami]
user = "{user.pw_name}"
run = '''
echo "uid=$(id -u) gid=$(id -g) groups=$(id -G)"
echo "home=$HOME user=$USER logname=$LOGNAME"
echo "pwd=$(pwd)"
printf 'a,b\\n1,2\\n' > "$RUNYARD_OUTPUT_DIR/result.csv"
stat -c 'owner=%u' "$RUNYARD_OUTPUT_DIR"
'''
working_dir = "/tmp"
""",
    )
    run, lines = run_task(runyard, "whoami")
    assert run["end_reason"] == "success", (run, lines)
    group = grp.getgrgid(user.pw_gid)
    assert lines == [
        f"uid={user.pw_uid} gid={user.pw_gid} groups={group.gr_gid}",
        f"home={user.pw_dir} user={user.pw_name} logname={user.pw_name}",
        "pwd=/tmp",
        f"owner={user.pw_uid}",
    ]
    # What the user's process wrote is the run's output data, read by the daemon.
    assert run["output_data"] == {"result": [["a", "b"], ["1", "2"]]}, run["output_data"]
    # The data dir lets the user pass, not list; the store's files stay the daemon's alone.
    data = open_base / "data"
    assert data.stat().st_mode & 0o777 == 0o711
    assert (data / "work").stat().st_mode & 0o777 == 0o711
    assert (data / "logs").stat().st_mode & 0o777 == 0o700
    assert (data / "runyard.db").stat().st_mode & 0o777 == 0o600


def test_a_data_dir_the_user_cannot_reach_fails_the_start_naming_the_directory(
    user: pwd.struct_passwd, tmp_path: Path
) -> None:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    runyard = serve(
        closed,
        f"""
[daemon]
data_dir = "data"

[tasks.whoami]
user = "{user.pw_name}"
run = "id -u"
""",
    )
    run, lines = run_task(runyard, "whoami")
    assert run["end_reason"] == "start_failed", run
    blocked = next(p for p in reversed(closed.parents) if not p.stat().st_mode & 0o001)
    assert (
        f"user '{user.pw_name}' cannot reach the run's directory: {blocked}" in run["description"]
    ), run["description"]


def test_an_unknown_user_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "runyard.toml"
    path.write_text('[tasks.t]\nrun = "true"\nuser = "no-such-user-xyz"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_config(path, environ={})
    assert raised.value.problems == ['tasks.t.user: no user "no-such-user-xyz" on this machine']


def test_a_daemon_that_is_not_root_cannot_switch(user: pwd.struct_passwd) -> None:
    with pytest.raises(CannotRunAs) as raised:
        resolve_user(user.pw_name, euid=1234)
    assert str(raised.value) == (
        f"the task runs as user '{user.pw_name}', which needs the daemon to run as root "
        "(it runs as uid 1234)"
    )
    # Its own user needs no switch.
    assert resolve_user(user.pw_name, euid=user.pw_uid) is None


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_a_service_runs_as_its_user(user: pwd.struct_passwd, tmp_path: Path) -> None:
    ended: list[ServiceLifetime] = []
    supervisor = ServiceSupervisor(
        {
            "whoami": ServiceDefinition(
                name="whoami",
                run='echo "uid=$(id -u) home=$HOME user=$USER"',
                user=user.pw_name,
                restart=RestartPolicy.NEVER,
            )
        },
        logs_dir=tmp_path / "logs",
        on_ended=ended.append,
    )
    supervisor.start_all()
    try:
        async with asyncio.timeout(20):
            await supervisor.wait_until(lambda: bool(ended))
    finally:
        await supervisor.stop_all()
    [lifetime] = ended
    lines = [line.text for line in read_lines(tmp_path / "logs" / f"{lifetime.run_id}.log")]
    assert f"uid={user.pw_uid} home={user.pw_dir} user={user.pw_name}" in lines, lines
    assert supervisor.instances("whoami")[0].state is InstanceState.STOPPED
