"""How the CLI finds the config, the data dir and the token: the rule, and its errors.

Every test runs the real `runyard` in a directory of its own, with no RUNYARD_*
variable unless it sets one, the way a user types the commands.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from runyard_harness import CLI_TIMEOUT, cli_env, free_port, start_daemon, stop_daemon

CONFIG = """\
[daemon]
port = {port}

[tasks.hello]
run = "echo hello"
"""


def runyard(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "runyard", *args],
        cwd=cwd,
        env=cli_env(**env),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )
    assert "Traceback" not in result.stdout + result.stderr
    return result


@dataclass
class Project:
    """A directory holding runyard.toml, served by a daemon started there."""

    root: Path
    url: str


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    root = tmp_path / "project"
    root.mkdir()
    port = free_port()
    (root / "runyard.toml").write_text(CONFIG.format(port=port), encoding="utf-8")
    output = tmp_path / "daemon.log"
    # No token in the environment: the daemon makes one in ./.runyard/token.
    process, url = start_daemon(root / "runyard.toml", cli_env(), output, port)
    try:
        yield Project(root, url)
    finally:
        stop_daemon(process, output)


def test_no_flags_from_the_configs_directory(project: Project) -> None:
    assert (project.root / ".runyard" / "token").is_file()
    result = runyard(project.root, "tasks")
    assert result.returncode == 0, result.stderr
    assert "hello" in result.stdout


def test_runyard_config_from_anywhere(project: Project, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    config = str(project.root / "runyard.toml")
    result = runyard(elsewhere, "tasks", RUNYARD_CONFIG=config)
    assert result.returncode == 0, result.stderr
    assert "hello" in result.stdout
    # A relative $RUNYARD_CONFIG is taken from the current directory.
    assert runyard(tmp_path, "tasks", RUNYARD_CONFIG="project/runyard.toml").returncode == 0


def test_a_missing_config_names_the_path_tried(tmp_path: Path) -> None:
    result = runyard(tmp_path, "tasks")
    assert result.returncode == 1
    assert result.stderr == (
        f"{tmp_path / 'runyard.toml'}: file not found (looked here as the default ./runyard.toml)\n"
    )
    result = runyard(tmp_path, "tasks", RUNYARD_CONFIG="conf/ry.toml")
    assert result.stderr == (
        f"{tmp_path / 'conf' / 'ry.toml'}: file not found (looked here as $RUNYARD_CONFIG)\n"
    )
    result = runyard(tmp_path, "--config", "x.toml", "tasks", RUNYARD_CONFIG="conf/ry.toml")
    assert result.stderr == f"{tmp_path / 'x.toml'}: file not found (looked here as --config)\n"


def test_a_missing_token_names_the_file_tried(project: Project, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong-data"
    result = runyard(project.root, "--data-dir", str(wrong), "tasks")
    assert result.returncode == 1
    assert result.stderr == (
        f"runyard: the daemon at {project.url} needs a token, but $RUNYARD_TOKEN is not set "
        f"and {wrong / 'token'} does not exist (data dir {wrong} (--data-dir))\n"
    )
    # Reading a token never creates the data dir.
    assert not wrong.exists()


def test_a_wrong_token_file_is_named(project: Project, tmp_path: Path) -> None:
    other = tmp_path / "other-data"
    other.mkdir()
    (other / "token").write_text("not-the-token\n", encoding="utf-8")
    result = runyard(project.root, "tasks", RUNYARD_DATA_DIR=str(other))
    assert result.returncode == 1
    assert result.stderr == (
        f"runyard: the daemon at {project.url} refused the token in {other / 'token'} "
        f"(data dir {other} ($RUNYARD_DATA_DIR))\n"
    )


def test_the_data_dir_from_the_config_is_relative_to_it(tmp_path: Path) -> None:
    root = tmp_path / "srv"
    root.mkdir()
    port = free_port()
    text = f'[daemon]\nport = {port}\ndata_dir = "state"\n\n[tasks.hello]\nrun = "echo hello"\n'
    (root / "runyard.toml").write_text(text, encoding="utf-8")
    output = tmp_path / "daemon.log"
    process, url = start_daemon(root / "runyard.toml", cli_env(), output, port)
    try:
        assert (root / "state" / "token").is_file()
        result = runyard(tmp_path, "--config", "srv/runyard.toml", "tasks")
        assert result.returncode == 0, result.stderr
        assert "hello" in result.stdout
    finally:
        stop_daemon(process, output)


def test_a_daemon_not_running_names_where_its_url_came_from(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "runyard.toml").write_text(CONFIG.format(port=port), encoding="utf-8")
    result = runyard(tmp_path, "tasks", RUNYARD_TOKEN="x")
    assert result.stderr == (
        f"runyard: cannot reach the daemon at http://127.0.0.1:{port} (from [daemon] host and "
        f"port in {tmp_path / 'runyard.toml'}): is `runyard serve` running?\n"
    )
    result = runyard(tmp_path, "tasks", RUNYARD_TOKEN="x", RUNYARD_URL=f"http://127.0.0.1:{port}")
    assert result.stderr == (
        f"runyard: cannot reach the daemon at http://127.0.0.1:{port} (from $RUNYARD_URL): "
        "is `runyard serve` running?\n"
    )
