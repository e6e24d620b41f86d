"""The notification tables: defaults, every field checked, all problems in one pass."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from runyard.config import parse_config_text
from runyard.config.loader import Config
from runyard.domain.notifications import Route
from runyard.exceptions import ConfigError

TASKS = """
[tasks.backup-db]
run = "true"

[tasks.report]
run = "true"
"""


def parse(text: str, directory: Path) -> Config:
    return parse_config_text(text + TASKS, directory / "runyard.toml", environ={})


def problems_of(text: str, directory: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(text, directory)
    return caught.value.problems


def test_no_notification_tables_means_defaults_and_no_routes(tmp_path: Path) -> None:
    settings = parse("", tmp_path).notifications
    assert settings.routes == ()
    assert settings.notifiers == {}
    assert settings.coalesce_window == timedelta(hours=1)
    assert settings.retry_budget == timedelta(minutes=5)
    assert settings.max_pending == 1000


def test_the_issue_example_and_every_key(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "failure.md").write_text("{{ task }} {{ kind }}\n", "utf-8")
    config = parse(
        """
[notifications]
coalesce_window = "10m"
retry_budget = "90s"
max_pending = 50

[notifiers.ops]
urls = ["slack://T000/B000/XXXX", "mailto://user:pass@mail.example.com?to=ops@example.com"]
template = "templates/failure.md"
retry_budget = "1m"

[notifiers.inbox]
urls = []

[[routes]]
kinds = ["failed", "timeout", "crashed", "missed", "recovered"]
tasks = ["backup*"]
notifiers = ["ops"]

[[routes]]
kinds = ["queue_full", "disk_full", "quota_exhausted"]
notifiers = ["inbox", "ops", "inbox"]
""",
        tmp_path,
    )
    settings = config.notifications
    assert settings.coalesce_window == timedelta(minutes=10)
    assert settings.retry_budget == timedelta(seconds=90)
    assert settings.max_pending == 50
    ops = settings.notifiers["ops"]
    assert len(ops.urls) == 2
    assert ops.template_path == tmp_path / "templates" / "failure.md"
    assert ops.template == "{{ task }} {{ kind }}\n"
    assert settings.budget_of("ops") == timedelta(minutes=1)
    assert settings.budget_of("inbox") == timedelta(seconds=90)
    assert settings.routes == (
        Route(
            kinds=frozenset({"failed", "timeout", "crashed", "missed", "recovered"}),
            notifiers=("ops",),
            tasks=("backup*",),
        ),
        Route(
            kinds=frozenset({"queue_full", "disk_full", "quota_exhausted"}),
            notifiers=("inbox", "ops"),
            tasks=("*",),
        ),
    )


def test_every_problem_is_reported_at_once_naming_its_field(tmp_path: Path) -> None:
    (tmp_path / "broken.j2").write_text("{% if x %}never closed\n", "utf-8")
    problems = problems_of(
        """
[notifications]
coalesce_window = "soon"
max_pending = 0
retry = 3

[notifiers.ops]
urls = ["nosuchservice://host/path", "not a url", "json://", 7]
template = "missing.md"

[notifiers.chat]
urls = "json://localhost/hook"
template = "broken.j2"

[notifiers."bad name!"]
urls = []

[[routes]]
kinds = ["failed", "exploded", "unhealthy"]
notifiers = ["ops", "pager"]
when = "always"

[[routes]]
tasks = []
""",
        tmp_path,
    )
    assert problems == [
        "notifications.retry: unknown key",
        "notifications.coalesce_window: invalid duration 'soon'; write it like 90s, 5m or "
        "1h30m (units: ms, s, m, h, d)",
        "notifications.max_pending: must be at least 1, got 0",
        "notifiers.\"bad name!\": a notifier name is 1-100 letters, digits, '.', '_' or '-'",
        "notifiers.chat.urls: expected an array of Apprise URLs, got string "
        '"json://localhost/hook"',
        f"notifiers.chat.template: {tmp_path / 'broken.j2'}: Jinja2 syntax error at line 1: "
        "Unexpected end of template. Jinja was looking for the following tags: 'elif' or "
        "'else' or 'endif'. The innermost block that needs to be closed is 'if'.",
        'notifiers.ops.urls[0]: Apprise has no service with the scheme "nosuchservice"',
        'notifiers.ops.urls[1]: not an Apprise URL (expected "<scheme>://...", '
        'such as "json://host/path")',
        "notifiers.ops.urls[2]: Apprise refuses this json:// URL (a part it needs is "
        "missing or malformed; see the service's page in Apprise's documentation)",
        "notifiers.ops.urls[3]: expected a string, got integer 7",
        f"notifiers.ops.template: template file {tmp_path / 'missing.md'} does not exist",
        "routes[0].when: unknown key",
        'routes[0].kinds[1]: unknown kind "exploded"; the kinds are succeeded, failed, '
        "timeout, crashed, stopped, log_overflow, queue_full, missed, recovered, disk_full, "
        "quota_exhausted, unhealthy, fatal",
        'routes[0].notifiers[1]: unknown notifier "pager"; declared notifiers: bad name!, '
        "chat, ops",
        "routes[1].kinds: missing: give the event kinds as an array of strings",
        "routes[1].tasks: must not be empty: give at least one of the task names or globs",
        "routes[1].notifiers: missing: give the notifier names as an array of strings",
    ]


def test_a_secret_in_a_refused_url_is_never_repeated(tmp_path: Path) -> None:
    problems = problems_of('[notifiers.ops]\nurls = ["json//s3cr3t@host"]\n', tmp_path)
    assert len(problems) == 1
    assert "s3cr3t" not in problems[0]


def test_a_glob_matching_no_task_is_a_warning(tmp_path: Path) -> None:
    config = parse(
        '[notifiers.inbox]\n[[routes]]\nkinds = ["failed"]\ntasks = ["bakup*"]\n'
        'notifiers = ["inbox"]\n',
        tmp_path,
    )
    assert config.warnings == (
        'routes[0].tasks[0]: "bakup*" matches no task or service of this config',
    )


def test_a_route_names_services_as_it_names_tasks(tmp_path: Path) -> None:
    config = parse(
        '[services.web]\nrun = "sleep 600"\n[notifiers.inbox]\n'
        '[[routes]]\nkinds = ["unhealthy", "fatal"]\ntasks = ["web"]\nnotifiers = ["inbox"]\n',
        tmp_path,
    )
    assert config.warnings == ()
    (route,) = config.notifications.routes
    assert route.kinds == {"unhealthy", "fatal"} and route.tasks == ("web",)


def test_routes_must_be_an_array_of_tables(tmp_path: Path) -> None:
    assert problems_of("routes = 3\n", tmp_path) == [
        "routes: expected [[routes]] tables, got integer 3"
    ]
