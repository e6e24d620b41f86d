from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from runyard.config import (
    EXAMPLE_CONFIG_PATH,
    Config,
    load_config,
    parse_config_text,
    resolve_config_path,
)
from runyard.domain.models import (
    EnvBase,
    LogOnFull,
    OverlapPolicy,
    ParamPassing,
    ParamSpec,
    RetryBackoff,
    TaskDefinition,
)
from runyard.exceptions import ConfigError

CONFIG = Path("/srv/runyard/runyard.toml")


def parse(text: str, environ: dict[str, str] | None = None) -> Config:
    return parse_config_text(text, CONFIG, environ={} if environ is None else environ)


def test_defaults_applied() -> None:
    config = parse('[tasks.a]\nrun = "true"\n')
    assert config.path == CONFIG
    assert config.daemon.host == "127.0.0.1"
    assert config.daemon.port == 9477
    assert config.daemon.max_concurrent_runs == 4
    assert config.daemon.shutdown_timeout == timedelta(seconds=30)
    assert config.daemon.external_url is None
    assert config.daemon.data_dir == Path("/srv/runyard/.runyard")
    assert config.tasks == {"a": TaskDefinition(name="a", run="true")}
    assert config.warnings == ()


def test_empty_config_is_valid() -> None:
    config = parse("")
    assert config.tasks == {}


def test_every_task_key() -> None:
    config = parse(
        """
        [daemon]
        host = "0.0.0.0"
        port = 8000
        max_concurrent_runs = 10
        shutdown_timeout = 90
        external_url = "https://runs.example.com"

        [tasks.full]
        run = "make"
        description = "Build"
        automation = "Nightly build"
        shell = "/bin/bash"
        working_dir = "src"
        env = { A = "1" }
        env_file = "../secrets.env"
        timeout = "1h30m"
        graceful_stop = 2.5
        stop_signal = "int"
        success_exit_codes = [0, 3, 3]
        max_concurrent = 2
        max_queued = 0
        on_overlap = "kill"
        retry_attempts = 3
        retry_delay = "1m"
        retry_backoff = "linear"
        replicas = 3
        log_max_size = "10mb"
        log_on_full = "drop_old"
        keep_runs = 50
        keep_for = "30d"
        """
    )
    assert config.daemon.host == "0.0.0.0"
    assert config.daemon.port == 8000
    assert config.daemon.max_concurrent_runs == 10
    assert config.daemon.shutdown_timeout == timedelta(seconds=90)
    assert config.daemon.external_url == "https://runs.example.com"
    assert config.tasks["full"] == TaskDefinition(
        name="full",
        run="make",
        description="Build",
        automation="Nightly build",
        shell="/bin/bash",
        working_dir="/srv/runyard/src",
        env=(("A", "1"),),
        env_file="/srv/secrets.env",
        timeout=timedelta(hours=1, minutes=30),
        graceful_stop=timedelta(seconds=2.5),
        stop_signal="SIGINT",
        success_exit_codes=(0, 3),
        max_concurrent=2,
        max_queued=0,
        on_overlap=OverlapPolicy.KILL,
        retry_attempts=3,
        retry_delay=timedelta(minutes=1),
        retry_backoff=RetryBackoff.LINEAR,
        replicas=3,
        log_max_size=10 * 1024 * 1024,
        log_on_full=LogOnFull.DROP_OLD,
        keep_runs=50,
        keep_for=timedelta(days=30),
    )


def test_defaults_inherited_and_overridden() -> None:
    config = parse(
        """
        [defaults]
        timeout = "10m"
        retry_attempts = 2
        env = { PATH = "/usr/bin", MODE = "prod" }

        [tasks.a]
        run = "a"

        [tasks.b]
        run = "b"
        retry_attempts = 0
        env = { MODE = "dev", EXTRA = "1" }
        """
    )
    a, b = config.tasks["a"], config.tasks["b"]
    assert a.timeout == b.timeout == timedelta(minutes=10)
    assert a.retry_attempts == 2
    assert b.retry_attempts == 0
    assert a.env == (("PATH", "/usr/bin"), ("MODE", "prod"))
    # Variables merge one by one, the task's own winning.
    assert b.env == (("PATH", "/usr/bin"), ("MODE", "dev"), ("EXTRA", "1"))


def test_tasks_sorted_by_name() -> None:
    config = parse('[tasks.b]\nrun = "b"\n[tasks.a]\nrun = "a"\n[tasks."c.d"]\nrun = "c"\n')
    assert list(config.tasks) == ["a", "b", "c.d"]


def test_params_mapping() -> None:
    config = parse(
        """
        [tasks.deploy]
        run = 'echo "$1" "$TARGET"'

        [[tasks.deploy.params]]
        name = "version"
        arg = true
        required = true

        [[tasks.deploy.params]]
        name = "target"
        default = "staging"
        choices = ["staging", "production"]

        [[tasks.deploy.params]]
        name = "retries"
        env = "DEPLOY_RETRIES"
        default = 3
        """
    )
    assert config.tasks["deploy"].params == (
        ParamSpec("version", passing=ParamPassing.ARG, required=True),
        ParamSpec("target", default="staging", choices=("staging", "production")),
        ParamSpec("retries", env="DEPLOY_RETRIES", default="3"),
    )


def test_unimplemented_keys_accepted_and_ignored() -> None:
    config = parse(
        """
        [tasks.a]
        run = "a"
        manual_trigger = false
        group = "ops"

        [accounts]
        """
    )
    assert config.tasks["a"] == TaskDefinition(name="a", run="a")
    assert config.warnings == (
        "tasks.a: manual_trigger, group: accepted but ignored, not supported yet",
    )


def test_env_base_is_inherit_or_clean() -> None:
    config = parse('[tasks.a]\nrun = "a"\nenv_base = "clean"\n[tasks.b]\nrun = "b"\n')
    assert config.tasks["a"].env_base is EnvBase.CLEAN
    assert config.tasks["b"].env_base is EnvBase.INHERIT
    with pytest.raises(ConfigError) as caught:
        parse('[tasks.a]\nrun = "a"\nenv_base = "empty"\n')
    assert "tasks.a.env_base" in str(caught.value)


def test_data_dir_precedence(tmp_path: Path) -> None:
    config_file = tmp_path / "conf" / "runyard.toml"
    with_key = '[daemon]\ndata_dir = "state"\n'
    cwd = Path.cwd()

    def data_dir(text: str, environ: dict[str, str], override: str | None = None) -> Path:
        return parse_config_text(text, config_file, environ, override).daemon.data_dir

    env = {"RUNYARD_DATA_DIR": str(tmp_path / "from-env")}
    assert data_dir(with_key, env, str(tmp_path / "flag")) == tmp_path / "flag"
    assert data_dir(with_key, env, "rel-flag") == cwd / "rel-flag"
    assert data_dir(with_key, env) == tmp_path / "from-env"
    assert data_dir(with_key, {"RUNYARD_DATA_DIR": "rel-env"}) == cwd / "rel-env"
    assert data_dir(with_key, {"RUNYARD_DATA_DIR": ""}) == tmp_path / "conf" / "state"
    assert data_dir(with_key, {}) == tmp_path / "conf" / "state"
    assert data_dir('[daemon]\ndata_dir = "/var/lib/ry"\n', {}) == Path("/var/lib/ry")
    assert data_dir("", {}) == tmp_path / "conf" / ".runyard"
    assert not (tmp_path / "conf").exists()


def test_invalid_data_dir_in_file_reported_even_with_override() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config_text("[daemon]\ndata_dir = 5\n", CONFIG, {}, "/tmp/x")
    assert caught.value.problems == ["daemon.data_dir: expected a string, got integer 5"]


def test_load_config_reads_file(tmp_path: Path) -> None:
    path = tmp_path / "runyard.toml"
    path.write_text('\ufeff[tasks.a]\nrun = "a"\nenv_file = "a.env"\n', encoding="utf-8")
    config = load_config(path, environ={})
    assert config.path == path
    assert config.tasks["a"].env_file == str(tmp_path / "a.env")
    assert config.daemon.data_dir == tmp_path / ".runyard"


def test_load_config_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.path == str(path)
    assert caught.value.problems == ["file not found"]


def test_load_config_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path, environ={})
    assert caught.value.problems == ["is a directory, not a file"]
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"a = '\xff'\n")
    with pytest.raises(ConfigError) as caught:
        load_config(bad, environ={})
    assert caught.value.problems[0].startswith("not UTF-8 text")


@pytest.mark.parametrize(
    ("cli_value", "environ", "expected"),
    [
        ("/etc/ry.toml", {"RUNYARD_CONFIG": "/env.toml"}, Path("/etc/ry.toml")),
        (None, {"RUNYARD_CONFIG": "/env.toml"}, Path("/env.toml")),
        (None, {"RUNYARD_CONFIG": "rel.toml"}, Path.cwd() / "rel.toml"),
        (None, {}, Path.cwd() / "runyard.toml"),
        ("", {"RUNYARD_CONFIG": ""}, Path.cwd() / "runyard.toml"),
    ],
)
def test_resolve_config_path(
    cli_value: str | None, environ: dict[str, str], expected: Path
) -> None:
    assert resolve_config_path(cli_value, environ) == expected


def test_example_config_loads() -> None:
    config = load_config(EXAMPLE_CONFIG_PATH, environ={})
    assert config.warnings == ()
    assert config.daemon.port == 9477
    # The tasks the README walks through (at least: more are welcome).
    assert set(config.tasks) >= {
        "hello",
        "disk-report",
        "slow-count",
        "flaky",
        "my-first-automation",
    }
    assert all(task.timeout == timedelta(minutes=10) for task in config.tasks.values())
    assert config.tasks["hello"].params == (ParamSpec("who", env="WHO", default="world"),)
    assert config.tasks["slow-count"].on_overlap is OverlapPolicy.SKIP
    flaky = config.tasks["flaky"]
    assert (flaky.retry_attempts, flaky.retry_backoff) == (2, RetryBackoff.EXPONENTIAL)
    assert flaky.retry_delay == timedelta(seconds=2)


def test_shared_display_name_warns() -> None:
    config = parse('[tasks.a]\nrun = "a"\n[tasks.b]\nrun = "b"\nautomation = "a"\n')
    assert config.warnings == ('tasks.b.automation: display name "a" is also used by task a',)
