"""Every config problem is reported as `<key path>: <problem>`, all at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from runyard.config import parse_config_text
from runyard.exceptions import ConfigError

CONFIG = Path("/srv/runyard/runyard.toml")


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config_text(text, CONFIG, environ={})
    assert caught.value.path == str(CONFIG)
    return caught.value.problems


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            '[daemon]\nport = "abc"', 'daemon.port: expected an integer, got string "abc"'
        ),
        pytest.param("[daemon]\nport = true", "daemon.port: expected an integer, got boolean true"),
        pytest.param("[daemon]\nport = 0", "daemon.port: must be between 1 and 65535, got 0"),
        pytest.param("[daemon]\nport = 80.0", "daemon.port: expected an integer, got float 80.0"),
        pytest.param(
            "[daemon]\nmax_concurrent_runs = 0",
            "daemon.max_concurrent_runs: must be at least 1, got 0",
        ),
        pytest.param(
            '[daemon]\nshutdown_timeout = "soon"', "daemon.shutdown_timeout: invalid duration"
        ),
        pytest.param("[daemon]\nexternal_url = 1", "daemon.external_url: expected a string"),
        pytest.param(
            '[daemon]\nnode_name = "a b"',
            "daemon.node_name: must be 1 to 100 letters, digits or . _ : - characters, got 'a b'",
        ),
        pytest.param('[daemon]\nnode_name = ""', "daemon.node_name: must not be empty"),
        pytest.param("[daemon]\nnode_name = 7", "daemon.node_name: expected a string"),
        pytest.param(
            '[daemon]\nnode_lease = "500ms"',
            "daemon.node_lease: must be between 1s and 1h, got 0.5s",
        ),
        pytest.param(
            '[daemon]\nnode_lease = "2h"', "daemon.node_lease: must be between 1s and 1h, got 7200s"
        ),
        pytest.param('[daemon]\nnode_lease = "soon"', "daemon.node_lease: invalid duration"),
        pytest.param("[daemon]\nhots = 'x'", "daemon.hots: unknown key; did you mean 'host'?"),
        pytest.param("daemon = 3", "daemon: expected a table, got integer 3"),
        pytest.param("[task.a]\nrun = 'x'", "task: unknown table; did you mean [tasks]?"),
        pytest.param("[deamon]\nport = 1", "deamon: unknown table; did you mean [daemon]?"),
        pytest.param(
            "zzz = 1",
            "zzz: unknown key; the tables are [daemon], [scheduler], [defaults], "
            "[tasks.<name>], [services.<name>], [accounts.<id>], [metrics], [notifications], "
            "[notifiers.<name>], [[routes]]",
        ),
        pytest.param("[storage]\nx = 1", "storage: unknown table; the tables are [daemon]"),
        pytest.param("[sevices]", "sevices: unknown table; did you mean [services]?"),
        pytest.param(
            '[tasks.backup]\nrun = "x"\ntimout = "5m"',
            "tasks.backup.timout: unknown key; did you mean 'timeout'?",
        ),
        pytest.param('[tasks.x]\nrun = "x"\nqqqq = 1', "tasks.x.qqqq: unknown key"),
        pytest.param("[tasks.x]\nshell = 'sh'", "tasks.x.run: required key is missing"),
        pytest.param("[tasks.x]\nrun = ''", "tasks.x.run: must not be empty"),
        pytest.param("[tasks]\nx = 'echo'", 'tasks.x: expected a table, got string "echo"'),
        pytest.param(
            '[tasks."bad name!"]\nrun = "x"',
            'tasks."bad name!": task name must match ^[a-zA-Z0-9._-]{1,100}$',
        ),
        pytest.param(
            '[tasks.x]\nrun = "x"\non_overlap = "wait"',
            'tasks.x.on_overlap: must be one of queue, skip, kill, got "wait"',
        ),
        pytest.param(
            '[tasks.x]\nrun = "x"\nretry_backoff = 2',
            "tasks.x.retry_backoff: must be one of constant, linear, exponential, got 2",
        ),
        pytest.param(
            '[tasks.x]\nrun = "x"\nreplicas = 100',
            "tasks.x.replicas: must be between 1 and 64, got 100",
        ),
        pytest.param(
            '[tasks.x]\nrun = "x"\ntimeout = "5 minutes"',
            "tasks.x.timeout: invalid duration '5 minutes'",
        ),
        pytest.param(
            '[tasks.x]\nrun = "x"\ntimeout = "0s"',
            'tasks.x.timeout: must be greater than 0, got "0s"',
        ),
        pytest.param(
            '[tasks.x]\nrun = "x"\nretry_delay = -1',
            "tasks.x.retry_delay: must be a positive number of seconds, got -1",
        ),
        pytest.param(
            '[tasks.x]\nrun = "x"\ngraceful_stop = true',
            "tasks.x.graceful_stop: expected a duration",
        ),
        pytest.param(
            '[tasks.x]\nrun = "x"\nlog_max_size = "10b"',
            'tasks.x.log_max_size: must be at least 1kb, got "10b"',
        ),
        pytest.param(
            '[tasks.x]\nrun = "x"\nlog_max_size = "lots"',
            "tasks.x.log_max_size: invalid size 'lots'",
        ),
        pytest.param(
            '[tasks.x]\nrun = "x"\nstop_signal = "SIGFOO"',
            "tasks.x.stop_signal: must be a signal name such as SIGTERM",
        ),
        pytest.param(
            '[tasks.x]\nrun = "x"\nsuccess_exit_codes = []',
            "tasks.x.success_exit_codes: must list at least one exit code",
        ),
        pytest.param(
            '[tasks.x]\nrun = "x"\nsuccess_exit_codes = [0, 256]',
            "tasks.x.success_exit_codes[1]: must be between 0 and 255, got 256",
        ),
        pytest.param(
            '[tasks.x]\nrun = "x"\nenv = { PORT = 8080 }',
            "tasks.x.env.PORT: expected a string, got integer 8080",
        ),
        pytest.param(
            '[tasks.x]\nrun = "x"\nenv = { DEBUG = true }',
            "tasks.x.env.DEBUG: expected a string, got boolean true",
        ),
        pytest.param(
            '[tasks.x]\nrun = "x"\nenv = { "1A" = "x" }',
            "tasks.x.env.1A: variable name must match",
        ),
        pytest.param(
            '[tasks.x]\nrun = "x"\nautomation = ""', "tasks.x.automation: must not be empty"
        ),
        pytest.param(
            f'[tasks.x]\nrun = "x"\nautomation = "{"a" * 201}"',
            "tasks.x.automation: must be at most 200 characters, got 201",
        ),
        pytest.param(
            '[tasks.x]\nrun = "x"\nmax_queued = 1000001',
            "tasks.x.max_queued: must be between 0 and 1000000, got 1000001",
        ),
        pytest.param(
            '[tasks.x]\nrun = "x"\nkeep_runs = 0', "tasks.x.keep_runs: must be at least 1, got 0"
        ),
        pytest.param(
            '[tasks.x]\nrun = "x"\ncatch_up = "some"',
            'tasks.x.catch_up: must be one of latest, all, skip, got "some"',
        ),
        pytest.param(
            '[tasks.x]\nrun = "x"\nrun_on_start = "yes"',
            'tasks.x.run_on_start: expected true or false, got string "yes"',
        ),
        pytest.param('[defaults]\nrun = "x"', "defaults.run: not allowed in [defaults]"),
        pytest.param("[defaults]\nparams = []", "defaults.params: not allowed in [defaults]"),
        pytest.param(
            "[defaults]\nretry_atempts = 1",
            "defaults.retry_atempts: unknown key; did you mean 'retry_attempts'?",
        ),
        pytest.param(
            "[defaults]\nreplicas = 0", "defaults.replicas: must be between 1 and 64, got 0"
        ),
    ],
)
def test_problem_messages(text: str, expected: str) -> None:
    problems = problems_of(text)
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected), problems


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ('name = "9lives"', "tasks.x.params[0].name: parameter name must match"),
        ('default = "x"', "tasks.x.params[0].name: required key is missing"),
        ('name = "a"\nenv = "A-B"', "tasks.x.params[0].env: variable name must match"),
        ('name = "a"\nenv = "A"\narg = true', "tasks.x.params[0].env: cannot be set with arg"),
        ('name = "a"\narg = "yes"', "tasks.x.params[0].arg: expected true or false"),
        ('name = "a"\nrequired = 1', "tasks.x.params[0].required: expected true or false"),
        ('name = "a"\ndefault = false', "tasks.x.params[0].default: expected a string"),
        ('name = "a"\nchoices = "a"', "tasks.x.params[0].choices: expected an array"),
        ('name = "a"\nchoices = []', "tasks.x.params[0].choices: must list at least one"),
        (
            'name = "a"\nchoices = ["b", "c"]\ndefault = "d"',
            'tasks.x.params[0].default: must be one of b, c, got "d"',
        ),
        ('name = "a"\nnmae = "b"', "tasks.x.params[0].nmae: unknown key; did you mean 'name'?"),
    ],
)
def test_param_problems(params: str, expected: str) -> None:
    problems = problems_of(f'[tasks.x]\nrun = "x"\n[[tasks.x.params]]\n{params}\n')
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected), problems


def test_duplicate_params() -> None:
    problems = problems_of(
        """
        [tasks.x]
        run = "x"
        params = [{ name = "a" }, { name = "a" }, { name = "b.c" }, { name = "b_c" }]
        """
    )
    assert problems == [
        'tasks.x.params[1].name: duplicate parameter "a" (also tasks.x.params[0])',
        "tasks.x.params[3]: sets environment variable B_C, like tasks.x.params[2]",
    ]


def test_params_must_be_array_of_tables() -> None:
    problems = problems_of('[tasks.x]\nrun = "x"\nparams = ["a"]\n')
    assert problems == ['tasks.x.params[0]: expected a table, got string "a"']


def test_every_problem_reported_together() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config_text(
            """
            [daemon]
            port = "abc"

            [tasks.a]
            timout = "5m"

            [tasks.b]
            run = "b"
            replicas = 100
            """,
            CONFIG,
            environ={},
        )
    assert caught.value.problems == [
        'daemon.port: expected an integer, got string "abc"',
        "tasks.a.timout: unknown key; did you mean 'timeout'?",
        "tasks.a.run: required key is missing",
        "tasks.b.replicas: must be between 1 and 64, got 100",
    ]
    message = str(caught.value)
    assert message.startswith(f"{CONFIG}: invalid config:")
    assert "  tasks.a.run: required key is missing" in message


def test_a_schedule_is_checked_beside_other_problems_of_its_task() -> None:
    # The cron error used to appear only once the unknown key was fixed.
    assert problems_of('[tasks.a]\nrun = "x"\ncron = "61 * * * *"\ntimout = "5m"\n') == [
        "tasks.a.timout: unknown key; did you mean 'timeout'?",
        "tasks.a.cron: minute field: 61 is out of range 0-59 in '61 * * * *'",
    ]
    assert problems_of('[tasks.a]\ncron = "@every 0s"\n') == [
        "tasks.a.run: required key is missing",
        "tasks.a.cron: @every needs a positive duration, got '0s'",
    ]


def test_an_unknown_table_beside_valid_tasks_is_an_error() -> None:
    # It validated as `OK` before: a config whose every task sits in an unknown
    # table would run nothing without a word.
    problems = problems_of('[servces.web]\nrun = "serve"\n[tasks.a]\nrun = "x"\n')
    assert problems == ["servces: unknown table; did you mean [services]?"]


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("[tasks.a]\nrun = \n", "at line 2, column 7"),
        ('[tasks.a]\nrun = "x"\nrun = "y"\n', "at line 3"),
        ("[tasks.a\n", "at line 1, column 9"),
    ],
)
def test_syntax_error(text: str, position: str) -> None:
    problems = problems_of(text)
    assert len(problems) == 1
    assert problems[0].startswith("TOML syntax error")
    assert position in problems[0]
