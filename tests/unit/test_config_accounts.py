"""The `[accounts.<id>]` tables, and the request and output size caps of `[daemon]`."""

from __future__ import annotations

from pathlib import Path

import pytest

from runyard.config import EXAMPLE_CONFIG_PATH, Config, load_config, parse_config_text
from runyard.config.accounts import parse_accounts
from runyard.config.checks import Problems
from runyard.config.loader import DaemonSettings
from runyard.domain.accounts import DEFAULT_ACCOUNT, DEFAULT_RATE_LIMIT, Account
from runyard.exceptions import ConfigError

CONFIG = Path("/srv/runyard/runyard.toml")
TASKS = (
    '[tasks.report-daily]\nrun = "x"\n[tasks.report-weekly]\nrun = "x"\n[tasks.backup]\nrun = "x"\n'
)
MIB = 1024 * 1024


def parse(text: str) -> Config:
    return parse_config_text(text, CONFIG, environ={})


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    return caught.value.problems


# ----- accounts -------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "[accounts]\n"], ids=["absent", "empty"])
def test_default_account_when_none_declared(text: str) -> None:
    config = parse(text)
    assert config.accounts == {DEFAULT_ACCOUNT: Account(DEFAULT_ACCOUNT)}
    account = config.accounts[DEFAULT_ACCOUNT]
    assert account.max_concurrent_runs is None
    assert account.runtime_allowance_minutes is None
    assert account.billing_anchor == 1
    assert account.tasks == ("*",)
    assert account.rate_limit_per_minute == DEFAULT_RATE_LIMIT == 100


def test_config_built_by_hand_has_the_default_account() -> None:
    config = Config(path=CONFIG, daemon=DaemonSettings(data_dir=Path("/d")), tasks={})
    assert config.accounts == {"default": Account("default")}


def test_every_account_key() -> None:
    config = parse(
        TASKS
        + """
        [accounts.acme]
        max_concurrent_runs = 3
        runtime_allowance_minutes = 90.5
        billing_anchor = 31
        tasks = ["report-*", "backup", "report-*"]
        rate_limit_per_minute = 1000000
        """
    )
    assert config.accounts == {
        "acme": Account(
            id="acme",
            max_concurrent_runs=3,
            runtime_allowance_minutes=90.5,
            billing_anchor=31,
            tasks=("report-*", "backup"),
            rate_limit_per_minute=1_000_000,
        )
    }
    assert config.warnings == ()


def test_declared_accounts_replace_the_default_and_are_sorted() -> None:
    config = parse('[accounts.zeta]\n[accounts.Alpha]\n[accounts."mid-1.x_y"]\n')
    assert list(config.accounts) == ["Alpha", "mid-1.x_y", "zeta"]
    assert all(account == Account(account.id) for account in config.accounts.values())


def test_integer_allowance_becomes_minutes_as_float() -> None:
    account = parse("[accounts.a]\nruntime_allowance_minutes = 0\n").accounts["a"]
    assert account.runtime_allowance_minutes == 0.0
    assert isinstance(account.runtime_allowance_minutes, float)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            "max_concurrent_runs = 0",
            "accounts.a.max_concurrent_runs: must be between 1 and 1024, got 0",
        ),
        pytest.param(
            "max_concurrent_runs = 1025",
            "accounts.a.max_concurrent_runs: must be between 1 and 1024, got 1025",
        ),
        pytest.param(
            'max_concurrent_runs = "2"',
            'accounts.a.max_concurrent_runs: expected an integer, got string "2"',
        ),
        pytest.param(
            "max_concurrent_runs = true",
            "accounts.a.max_concurrent_runs: expected an integer, got boolean true",
        ),
        pytest.param(
            "runtime_allowance_minutes = -1",
            "accounts.a.runtime_allowance_minutes: must be at least 0, got -1",
        ),
        pytest.param(
            "runtime_allowance_minutes = -0.5",
            "accounts.a.runtime_allowance_minutes: must be at least 0, got -0.5",
        ),
        pytest.param(
            "runtime_allowance_minutes = true",
            "accounts.a.runtime_allowance_minutes: expected a number of minutes, got boolean true",
        ),
        pytest.param(
            'runtime_allowance_minutes = "10h"',
            'accounts.a.runtime_allowance_minutes: expected a number of minutes, got string "10h"',
        ),
        pytest.param(
            "runtime_allowance_minutes = inf",
            "accounts.a.runtime_allowance_minutes: must be a finite number "
            "(leave the key out for no limit), got inf",
        ),
        pytest.param(
            "runtime_allowance_minutes = nan",
            "accounts.a.runtime_allowance_minutes: must be a finite number "
            "(leave the key out for no limit), got nan",
        ),
        pytest.param(
            "billing_anchor = 0", "accounts.a.billing_anchor: must be between 1 and 31, got 0"
        ),
        pytest.param(
            "billing_anchor = 32", "accounts.a.billing_anchor: must be between 1 and 31, got 32"
        ),
        pytest.param(
            "billing_anchor = 1.0", "accounts.a.billing_anchor: expected an integer, got float 1.0"
        ),
        pytest.param(
            'tasks = "report-*"',
            'accounts.a.tasks: expected an array of task name patterns like ["report-*"], '
            'got string "report-*"',
        ),
        pytest.param(
            "tasks = []",
            'accounts.a.tasks: must list at least one pattern (["*"] allows every task)',
        ),
        pytest.param('tasks = ["x", ""]', "accounts.a.tasks[1]: must not be empty"),
        pytest.param('tasks = ["  "]', "accounts.a.tasks[0]: must not be empty"),
        pytest.param('tasks = [3, "x"]', "accounts.a.tasks[0]: expected a string, got integer 3"),
        pytest.param(
            "rate_limit_per_minute = 0",
            "accounts.a.rate_limit_per_minute: must be between 1 and 1000000, got 0",
        ),
        pytest.param(
            "rate_limit_per_minute = 1000001",
            "accounts.a.rate_limit_per_minute: must be between 1 and 1000000, got 1000001",
        ),
        pytest.param(
            "rate_limit_per_minute = 1.5",
            "accounts.a.rate_limit_per_minute: expected an integer, got float 1.5",
        ),
        pytest.param(
            "rate_limit = 10",
            "accounts.a.rate_limit: unknown key; did you mean 'rate_limit_per_minute'?",
        ),
        pytest.param(
            "max_concurrent = 2",
            "accounts.a.max_concurrent: unknown key; did you mean 'max_concurrent_runs'?",
        ),
        pytest.param("colour = 'red'", "accounts.a.colour: unknown key"),
    ],
)
def test_bad_account_value(body: str, expected: str) -> None:
    assert problems_of(f"[tasks.x]\nrun = 'x'\n[accounts.a]\n{body}\n") == [expected]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("accounts = 3", "accounts: expected a table, got integer 3"),
        pytest.param('accounts = "a"', 'accounts: expected a table, got string "a"'),
        pytest.param("[accounts]\na = 1", "accounts.a: expected a table, got integer 1"),
        pytest.param(
            '[accounts."bad id!"]',
            'accounts."bad id!": account id must match ^[a-zA-Z0-9._-]{1,64}$',
        ),
        pytest.param(
            f"[accounts.{'a' * 65}]",
            f"accounts.{'a' * 65}: account id must match ^[a-zA-Z0-9._-]{{1,64}}$",
        ),
        pytest.param('[accounts.""]', 'accounts."": account id must match ^[a-zA-Z0-9._-]{1,64}$'),
        pytest.param("[acounts.a]", "acounts: unknown table; did you mean [accounts]?"),
    ],
)
def test_bad_accounts_table(text: str, expected: str) -> None:
    assert problems_of(text) == [expected]


def test_every_account_problem_reported_at_once() -> None:
    problems = problems_of(
        """
        [accounts.a]
        billing_anchor = 0
        rate_limit_per_minute = 0
        [accounts.b]
        tasks = []
        [accounts.c]
        """
    )
    assert problems == [
        "accounts.a.billing_anchor: must be between 1 and 31, got 0",
        "accounts.a.rate_limit_per_minute: must be between 1 and 1000000, got 0",
        'accounts.b.tasks: must list at least one pattern (["*"] allows every task)',
    ]


def test_sixty_four_character_id_is_valid() -> None:
    account_id = "a" * 64
    assert list(parse(f"[accounts.{account_id}]\n").accounts) == [account_id]


def test_pattern_matching_no_task_is_a_warning() -> None:
    config = parse(
        TASKS
        + """
        [accounts.acme]
        tasks = ["report-*", "Backup", "deploy-?"]
        [accounts.other]
        tasks = ["backup"]
        """
    )
    assert config.accounts["acme"].tasks == ("report-*", "Backup", "deploy-?")
    # fnmatch is case-sensitive here: "Backup" does not match "backup".
    assert config.warnings == (
        'accounts.acme.tasks: pattern "Backup" matches none of the configured tasks',
        'accounts.acme.tasks: pattern "deploy-?" matches none of the configured tasks',
    )


def test_default_patterns_never_warn_even_without_tasks() -> None:
    assert parse("[accounts.acme]\nmax_concurrent_runs = 1\n").warnings == ()


def test_patterns_match_case_sensitively() -> None:
    account = parse(TASKS + '[accounts.a]\ntasks = ["report-*"]\n').accounts["a"]
    assert account.sees("report-daily")
    assert not account.sees("Report-daily")
    assert not account.sees("backup")


def test_parse_accounts_directly() -> None:
    problems = Problems()
    accounts = parse_accounts(
        {"b": {"tasks": ["t*"]}, "a": {"billing_anchor": 15}}, ["task"], problems
    )
    assert list(accounts) == ["a", "b"]
    assert accounts["a"].billing_anchor == 15
    assert accounts["b"].tasks == ("t*",)
    assert problems.errors == [] and problems.warnings == []
    assert parse_accounts({}, [], Problems()) == {"default": Account("default")}


def test_parse_accounts_leaves_out_invalid_accounts() -> None:
    problems = Problems()
    accounts = parse_accounts({"ok": {}, "bad": {"billing_anchor": 40}}, [], problems)
    assert list(accounts) == ["ok"]
    assert problems.errors == ["accounts.bad.billing_anchor: must be between 1 and 31, got 40"]


def test_storage_is_an_unknown_table_and_services_check_their_keys() -> None:
    assert problems_of("[services.web]\nwhatever = true\n[storage]\nanything = 1\n") == [
        "storage: unknown table; the tables are [daemon], [scheduler], [defaults], "
        "[tasks.<name>], [services.<name>], [accounts.<id>], [metrics], [notifications], "
        "[notifiers.<name>], [[routes]]",
        "services.web.whatever: unknown key",
        "services.web.run: required key is missing",
    ]


# ----- daemon size caps -------------------------------------------------------------


def test_size_caps_default_to_ten_mib() -> None:
    daemon = parse("").daemon
    assert daemon.max_request_size == 10 * MIB
    assert daemon.max_output_size == 10 * MIB


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"1mb"', MIB),
        ('"512kb"', 512 * 1024),
        ('"1kb"', 1024),
        ('"1gb"', 1024 * MIB),
        ("2048", 2048),
        ("1024", 1024),
    ],
)
@pytest.mark.parametrize("key", ["max_request_size", "max_output_size"])
def test_size_caps(key: str, value: str, expected: int) -> None:
    daemon = parse(f"[daemon]\n{key} = {value}\n").daemon
    assert getattr(daemon, key) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1023", "must be at least 1kb, got 1023"),
        ('"100b"', 'must be at least 1kb, got "100b"'),
        ("0", "must be at least 1kb, got 0"),
        ('"lots"', "invalid size 'lots'; write it like 512kb, 10mb or 1gb"),
        ("1.5", 'expected a size like "100mb" or a number of bytes, got float 1.5'),
        ("true", 'expected a size like "100mb" or a number of bytes, got boolean true'),
    ],
)
@pytest.mark.parametrize("key", ["max_request_size", "max_output_size"])
def test_bad_size_caps(key: str, value: str, message: str) -> None:
    assert problems_of(f"[daemon]\n{key} = {value}\n") == [f"daemon.{key}: {message}"]


def test_size_key_typo_is_suggested() -> None:
    assert problems_of('[daemon]\nmax_request_sise = "1mb"\n') == [
        "daemon.max_request_sise: unknown key; did you mean 'max_request_size'?"
    ]


# ----- the example config ------------------------------------------------------------


def test_example_config_has_the_first_automation() -> None:
    config = load_config(EXAMPLE_CONFIG_PATH, environ={})
    assert config.warnings == ()
    assert config.accounts == {"default": Account("default")}
    task = config.tasks["my-first-automation"]
    assert task.display_name == "My First Automation"
    assert "| runyard output result" in task.run
    assert "$RUNYARD_INPUT_CSV" in task.run
