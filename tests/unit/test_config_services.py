"""`[services.<name>]` and its `health_check`: read into ServiceDefinitions, every problem named."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from runyard.config import parse_config_text
from runyard.config.schema import config_schema
from runyard.domain.models import LogOnFull, RetryBackoff
from runyard.domain.services import (
    HealthCheck,
    ProbeKind,
    RestartPolicy,
    ServiceDefinition,
    split_host_port,
)
from runyard.exceptions import ConfigError

CONFIG = Path("/srv/runyard/runyard.toml")

FULL = """
[services.web]
run = "python -m http.server 8000"
instances = 2
restart = "on_failure"
restart_delay = "2s"
restart_backoff = "linear"
restart_attempts = 5
healthy_after = "30s"
depends_on = ["db"]
priority = -3
autostart = false
graceful_stop = "10s"
stop_signal = "INT"
env = { PORT = "8000" }
env_file = "web.env"
working_dir = "www"
shell = "/bin/bash"
log_max_size = "1mb"
log_on_full = "kill"

[services.web.health_check]
http = "http://127.0.0.1:8000/health"
interval = "15s"
timeout = "2s"
failures = 4
start_period = "30s"

[services.db]
run = "postgres"

[services.db.health_check]
tcp = "127.0.0.1:5432"

[tasks.backup]
run = "pg_dump"
"""


def parse(text: str) -> dict[str, ServiceDefinition]:
    return parse_config_text(text, CONFIG, environ={}).services


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config_text(text, CONFIG, environ={})
    return caught.value.problems


def test_every_key_fills_its_field() -> None:
    services = parse(FULL)
    assert list(services) == ["db", "web"]
    assert services["web"] == ServiceDefinition(
        name="web",
        run="python -m http.server 8000",
        instances=2,
        restart=RestartPolicy.ON_FAILURE,
        restart_delay=timedelta(seconds=2),
        restart_backoff=RetryBackoff.LINEAR,
        restart_attempts=5,
        healthy_after=timedelta(seconds=30),
        depends_on=("db",),
        priority=-3,
        autostart=False,
        graceful_stop=timedelta(seconds=10),
        stop_signal="SIGINT",
        env=(("PORT", "8000"),),
        env_file="/srv/runyard/web.env",
        working_dir="/srv/runyard/www",
        shell="/bin/bash",
        log_max_size=1024 * 1024,
        log_on_full=LogOnFull.KILL,
        health_check=HealthCheck(
            kind=ProbeKind.HTTP,
            target="http://127.0.0.1:8000/health",
            interval=timedelta(seconds=15),
            timeout=timedelta(seconds=2),
            failures=4,
            start_period=timedelta(seconds=30),
        ),
    )
    assert services["db"].health_check == HealthCheck(kind=ProbeKind.TCP, target="127.0.0.1:5432")


def test_defaults() -> None:
    service = parse('[services.w]\nrun = "serve"\n')["w"]
    assert service == ServiceDefinition(name="w", run="serve")
    assert (service.instances, service.restart, service.restart_backoff) == (
        1,
        RestartPolicy.ALWAYS,
        RetryBackoff.EXPONENTIAL,
    )
    assert (service.restart_delay, service.restart_attempts, service.healthy_after) == (
        timedelta(seconds=1),
        3,
        timedelta(seconds=60),
    )
    assert service.autostart is True and service.health_check is None
    assert service.log_on_full is LogOnFull.DROP_OLD


def test_services_load_without_a_warning() -> None:
    config = parse_config_text('[services.w]\nrun = "serve"\n', CONFIG, environ={})
    assert config.warnings == ()
    assert list(config.services) == ["w"]
    assert parse_config_text('[tasks.a]\nrun = "x"\n', CONFIG, environ={}).warnings == ()


def test_a_command_probe_keeps_its_text() -> None:
    check = parse('[services.w]\nrun = "s"\nhealth_check = { run = "curl -fsS x " }\n')["w"]
    assert check.health_check == HealthCheck(kind=ProbeKind.RUN, target="curl -fsS x ")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("instances = 0", "services.web.instances: must be between 1 and 64, got 0"),
        ("instances = 65", "services.web.instances: must be between 1 and 64, got 65"),
        ('instances = "2"', 'services.web.instances: expected an integer, got string "2"'),
        (
            'restart = "sometimes"',
            'services.web.restart: must be one of always, on_failure, never, got "sometimes"',
        ),
        (
            'restart_backoff = "random"',
            "services.web.restart_backoff: must be one of constant, linear, exponential, "
            'got "random"',
        ),
        ("restart_attempts = 101", "services.web.restart_attempts: must be between 0 and 100"),
        ("restart_attempts = -1", "services.web.restart_attempts: must be between 0 and 100"),
        ('restart_delay = "soon"', "services.web.restart_delay: invalid duration 'soon'"),
        ('healthy_after = "-1s"', "services.web.healthy_after: duration '-1s' is negative"),
        ("autostart = 1", "services.web.autostart: expected true or false, got integer 1"),
        ('stop_signal = "SIGNOPE"', "services.web.stop_signal: must be a signal name"),
        ("env = { A = 1 }", "services.web.env.A: expected a string, got integer 1"),
        ('log_max_size = "1kb"', ""),  # the minimum itself is fine
        ('log_max_size = "10b"', "services.web.log_max_size: must be at least 1kb"),
        ('log_on_full = "rotate"', "services.web.log_on_full: must be one of drop_new"),
        ("priority = 1.5", "services.web.priority: expected an integer, got float 1.5"),
        ('depends_on = "db"', "services.web.depends_on: expected an array of service names"),
        ("depends_on = [1]", "services.web.depends_on[0]: expected a string, got integer 1"),
        ('depends_on = ["web"]', "services.web.depends_on: a service cannot depend on itself"),
        ('timeout = "5m"', "services.web.timeout: unknown key"),
        ('restrat = "always"', "services.web.restrat: unknown key; did you mean 'restart'?"),
        ('cron = "@daily"', "services.web.cron: unknown key"),
        ('user = "no-such-user-xyz"', 'services.web.user: no user "no-such-user-xyz" on this'),
    ],
)
def test_bad_values_name_the_key(text: str, expected: str) -> None:
    config = f'[services.web]\nrun = "serve"\n{text}\n'
    if not expected:
        assert parse(config)["web"].log_max_size == 1024
        return
    problems = problems_of(config)
    assert len(problems) == 1
    assert problems[0].startswith(expected), problems


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'interval = "10s"',
            "services.web.health_check: set exactly one of http, tcp or run; got none",
        ),
        (
            'http = "http://x/"\ntcp = "x:1"',
            "services.web.health_check: set exactly one of http, tcp or run; got http, tcp",
        ),
        (
            'http = "ftp://x/"',
            "services.web.health_check.http: expected an http:// or https:// URL with a host, "
            'got "ftp://x/"',
        ),
        ('http = "http://x:99999/"', "services.web.health_check.http: expected an http://"),
        ('http = "127.0.0.1:80"', "services.web.health_check.http: expected an http://"),
        (
            'tcp = "localhost"',
            'services.web.health_check.tcp: expected host:port like "127.0.0.1:5432" '
            '(port 1..65535), got "localhost"',
        ),
        ('tcp = "h:0"', "services.web.health_check.tcp: expected host:port"),
        ('run = "  "', "services.web.health_check.run: must not be empty"),
        ('run = "x"\ninterval = "0s"', "services.web.health_check.interval: must be greater"),
        ('run = "x"\ntimeout = 0', "services.web.health_check.timeout: must be greater than 0"),
        ('run = "x"\nfailures = 0', "services.web.health_check.failures: must be between 1"),
        ('run = "x"\nretries = 3', "services.web.health_check.retries: unknown key"),
    ],
)
def test_bad_health_checks_name_the_key(text: str, expected: str) -> None:
    problems = problems_of(f'[services.web]\nrun = "serve"\n[services.web.health_check]\n{text}\n')
    assert len(problems) == 1
    assert problems[0].startswith(expected), problems


def test_every_problem_of_a_service_at_once() -> None:
    assert problems_of('[services.web]\ninstances = 0\nrestart = "no"\n') == [
        "services.web.instances: must be between 1 and 64, got 0",
        'services.web.restart: must be one of always, on_failure, never, got "no"',
        "services.web.run: required key is missing",
    ]


def test_a_bad_name_and_a_name_shared_with_a_task() -> None:
    text = '[services."a b"]\nrun = "x"\n[tasks.c]\nrun = "x"\n[services.c]\nrun = "y"\n'
    assert problems_of(text) == [
        'services."a b": service name must match ^[a-zA-Z0-9._-]{1,100}$',
        'services.c: "c" is also a task; a service needs a name of its own',
    ]


def test_unknown_dependencies() -> None:
    text = '[tasks.job]\nrun = "x"\n[services.web]\nrun = "x"\ndepends_on = ["db", "job"]\n'
    assert problems_of(text) == [
        'services.web.depends_on[0]: "db": no service of that name',
        'services.web.depends_on[1]: "job": a task, not a service',
    ]


def test_a_dependency_on_a_service_with_errors_is_not_unknown() -> None:
    text = (
        '[services.db]\nrun = "x"\ninstances = 0\n[services.web]\nrun = "x"\ndepends_on = ["db"]\n'
    )
    assert problems_of(text) == ["services.db.instances: must be between 1 and 64, got 0"]


def test_dependency_cycles_are_named() -> None:
    text = (
        '[services.a]\nrun = "x"\ndepends_on = ["b"]\n'
        '[services.b]\nrun = "x"\ndepends_on = ["a"]\n'
        '[services.c]\nrun = "x"\ndepends_on = ["e"]\n'
        '[services.d]\nrun = "x"\ndepends_on = ["c"]\n'
        '[services.e]\nrun = "x"\ndepends_on = ["d", "a"]\n'
        '[services.f]\nrun = "x"\ndepends_on = ["a"]\n'
    )
    assert problems_of(text) == [
        "services.a.depends_on: dependency cycle a -> b -> a",
        "services.c.depends_on: dependency cycle c -> e -> d -> c",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:5432", ("127.0.0.1", 5432)),
        ("localhost:80", ("localhost", 80)),
        ("[::1]:8080", ("::1", 8080)),
        (" db.internal:1 ", ("db.internal", 1)),
        ("::1:8080", None),
        ("host", None),
        ("host:", None),
        ("host:65536", None),
        ("http://host:80", None),
    ],
)
def test_split_host_port(text: str, expected: tuple[str, int] | None) -> None:
    assert split_host_port(text) == expected


def test_the_schema_accepts_a_full_service_and_refuses_typos() -> None:
    import tomllib

    validator = Draft202012Validator(config_schema())
    assert list(validator.iter_errors(tomllib.loads(FULL))) == []
    for bad in (
        '[services.web]\nrun = "x"\nrestrat = "always"\n',
        '[services.web]\nrun = "x"\n[services.web.health_check]\ninterval = "1s"\n',
        '[services.web]\nrun = "x"\nhealth_check = { http = "http://x/", tcp = "x:1" }\n',
        "[services.web]\ninstances = 1\n",
    ):
        assert list(validator.iter_errors(tomllib.loads(bad))) != [], bad


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("services = 3", ["services: expected a table, got integer 3"]),
        ("[services]\nweb = 'serve'", ['services.web: expected a table, got string "serve"']),
        (
            '[services.web]\nrun = "x"\nhealth_check = "curl"',
            ['services.web.health_check: expected a table, got string "curl"'],
        ),
    ],
)
def test_tables_that_are_not_tables(text: str, expected: list[str]) -> None:
    assert problems_of(text) == expected


def test_an_empty_services_table_is_no_service_and_no_warning() -> None:
    config = parse_config_text("[services]\n", CONFIG, environ={})
    assert (config.services, config.warnings) == ({}, ())
