"""`runyard service install|uninstall|status`: the unit it writes passes systemd's own check.

`systemd-analyze verify` (Debian's systemd package; `make test` installs it)
reads each unit as systemd would. The test fails, never skips, without it.
On a machine where systemd is not PID 1 (a container, CI) install writes the
unit and says how to start it; the systemctl half is not exercised there.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from runyard_harness import CONFIG, cli_env, free_port, run_cli

from runyard.systemd_unit import UnitSpec, render_unit

SYSTEMD_ANALYZE = "systemd-analyze"
SYSTEMD_RUNNING = Path("/run/systemd/system").is_dir()


def verify(unit: Path) -> subprocess.CompletedProcess[str]:
    assert shutil.which(SYSTEMD_ANALYZE), "systemd-analyze is missing: apt-get install systemd"
    return subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "site" / "runyard.toml"
    path.parent.mkdir()
    path.write_text(CONFIG.format(port=free_port(), data_dir=tmp_path / "data"), encoding="utf-8")
    return path


def test_the_dry_run_unit_passes_systemd_analyze_verify(tmp_path: Path, config: Path) -> None:
    shown = run_cli("--config", str(config), "service", "install", "--dry-run", env=cli_env())
    assert shown.returncode == 0, shown.stderr
    unit = tmp_path / "runyard.service"
    unit.write_text(shown.stdout, encoding="utf-8")
    checked = verify(unit)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    lines = shown.stdout.splitlines()
    [exec_start] = [line for line in lines if line.startswith("ExecStart=")]
    command = exec_start.removeprefix("ExecStart=").split()
    assert Path(command[0]).is_file() and os.access(command[0], os.X_OK)
    assert command[1:] == ["--config", str(config), "serve"]
    assert f"WorkingDirectory={config.parent}" in lines
    assert "Restart=on-failure" in lines
    assert "KillMode=mixed" in lines
    assert "TimeoutStopSec=45s" in lines  # shutdown_timeout 30s + 15s to record the ends
    assert "WantedBy=multi-user.target" in lines
    # Nothing was written anywhere.
    assert not (tmp_path / "data").exists()


def test_a_broken_unit_is_what_verify_refuses(tmp_path: Path) -> None:
    # The check above can fail: the same unit with a relative command is refused.
    unit = tmp_path / "runyard.service"
    spec = UnitSpec(
        command=Path("runyard"),
        config=Path("/srv/runyard.toml"),
        data_dir=None,
        working_dir=Path("/srv"),
        shutdown_timeout=timedelta(seconds=30),
        path="/usr/bin:/bin",
        user=None,
        user_unit=False,
    )
    unit.write_text(render_unit(spec), encoding="utf-8")
    assert verify(unit).returncode != 0


def test_paths_with_spaces_percent_and_dollar_survive(tmp_path: Path) -> None:
    odd = tmp_path / "my site 100% $HOME"
    odd.mkdir()
    config = odd / "runyard.toml"
    config.write_text(CONFIG.format(port=free_port(), data_dir=odd / "data"), encoding="utf-8")
    shown = run_cli("--config", str(config), "service", "install", "--dry-run", env=cli_env())
    assert shown.returncode == 0, shown.stderr
    unit = tmp_path / "runyard.service"
    unit.write_text(shown.stdout, encoding="utf-8")
    checked = verify(unit)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # % is a specifier and $ a variable to systemd: both are doubled; the
    # argument is one word (quoted), spaces and all.
    [exec_start] = [line for line in shown.stdout.splitlines() if line.startswith("ExecStart=")]
    assert f"--config '{str(config).replace('%', '%%').replace('$', '$$')}' serve" in exec_start


def test_user_install_status_uninstall(tmp_path: Path, config: Path) -> None:
    env = cli_env(XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    unit = tmp_path / "xdg" / "systemd" / "user" / "runyard.service"
    before = run_cli("--config", str(config), "service", "status", "--user", env=env)
    assert before.returncode == 3
    assert f"not installed ({unit} does not exist)" in before.stdout
    installed = run_cli("--config", str(config), "service", "install", "--user", env=env)
    assert installed.returncode == 0, installed.stderr
    assert f"wrote {unit}" in installed.stdout
    text = unit.read_text(encoding="utf-8")
    assert "WantedBy=default.target" in text
    assert "User=" not in text  # the user manager runs it as that user
    checked = verify(unit)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    if not SYSTEMD_RUNNING:
        assert "systemctl --user daemon-reload && systemctl --user enable --now runyard" in (
            installed.stdout
        )
        status = run_cli("--config", str(config), "service", "status", "--user", env=env)
        assert status.returncode == 3
        assert f"installed: {unit}" in status.stdout
    removed = run_cli("--config", str(config), "service", "uninstall", "--user", env=env)
    assert removed.returncode == 0, removed.stderr
    assert not unit.exists()
    again = run_cli("--config", str(config), "service", "uninstall", "--user", env=env)
    assert again.returncode == 1
    assert "nothing to uninstall" in again.stderr


def test_the_database_url_goes_to_a_private_file_not_the_unit(tmp_path: Path, config: Path) -> None:
    url = "postgresql+psycopg://runyard:s3cret@db.example/runyard"
    env = cli_env(XDG_CONFIG_HOME=str(tmp_path / "xdg"), RUNYARD_DATABASE_URL=url)
    installed = run_cli("--config", str(config), "service", "install", "--user", env=env)
    assert installed.returncode == 0, installed.stderr
    unit = tmp_path / "xdg" / "systemd" / "user" / "runyard.service"
    text = unit.read_text(encoding="utf-8")
    assert "s3cret" not in text
    env_file = tmp_path / "data" / "service.env"
    assert f"EnvironmentFile={env_file}" in text.splitlines()
    assert env_file.read_text(encoding="utf-8") == f"RUNYARD_DATABASE_URL={url}\n"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert verify(unit).returncode == 0


def test_an_invalid_config_installs_nothing(tmp_path: Path) -> None:
    config = tmp_path / "runyard.toml"
    config.write_text('[tasks.a]\nrun = "x"\ncron = "61 * * * *"\n', encoding="utf-8")
    env = cli_env(XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    refused = run_cli("--config", str(config), "service", "install", "--user", env=env)
    assert refused.returncode == 1
    assert "the config must be valid first" in refused.stderr
    assert "tasks.a.cron" in refused.stderr
    assert not (tmp_path / "xdg").exists()
