"""The schedule keys of a task and the [scheduler] table."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from runyard.config import Config, parse_config_text
from runyard.config.schedules import host_timezone
from runyard.domain.models import CatchUp, Schedule, ScheduleKind, TaskDefinition
from runyard.exceptions import ConfigError

CONFIG = Path("/srv/runyard/runyard.toml")
RIGA = {"TZ": "Europe/Riga"}


def parse(text: str, environ: dict[str, str] | None = None) -> Config:
    return parse_config_text(text, CONFIG, environ=RIGA if environ is None else environ)


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    return caught.value.problems


def test_every_schedule_key() -> None:
    config = parse(
        """
        [tasks.a]
        run = "a"
        cron = "*/5 * * * *"
        timezone = "America/New_York"
        jitter = "30s"
        run_on_start = true
        catch_up = "all"
        max_catch_up_runs = 7
        """
    )
    assert config.tasks["a"] == TaskDefinition(
        name="a",
        run="a",
        schedule=Schedule("*/5 * * * *", ScheduleKind.CRON, "America/New_York", "*/5 * * * *"),
        jitter=timedelta(seconds=30),
        run_on_start=True,
        catch_up=CatchUp.ALL,
        max_catch_up_runs=7,
    )
    assert config.warnings == ()


def test_schedule_defaults() -> None:
    task = parse('[tasks.a]\nrun = "a"\ncron = "@every 90s"\n').tasks["a"]
    assert task.schedule == Schedule(
        "@every 90s", ScheduleKind.EVERY, "Europe/Riga", every=timedelta(seconds=90)
    )
    assert task.jitter == timedelta(0)
    assert task.run_on_start is False
    assert task.catch_up is CatchUp.LATEST
    assert task.max_catch_up_runs == 100


def test_defaults_inherited_and_overridden() -> None:
    config = parse(
        """
        [defaults]
        timezone = "Asia/Tokyo"
        jitter = "1m"
        catch_up = "skip"
        max_catch_up_runs = 5

        [tasks.inherits]
        run = "a"
        cron = "@daily"

        [tasks.overrides]
        run = "b"
        cron = "@daily"
        timezone = "UTC"
        jitter = 0
        catch_up = "latest"

        [tasks.manual]
        run = "c"
        """
    )
    inherits, overrides, manual = (config.tasks[n] for n in ("inherits", "overrides", "manual"))
    assert inherits.schedule is not None and inherits.schedule.timezone == "Asia/Tokyo"
    assert (inherits.jitter, inherits.catch_up, inherits.max_catch_up_runs) == (
        timedelta(minutes=1),
        CatchUp.SKIP,
        5,
    )
    assert overrides.schedule is not None and overrides.schedule.timezone == "UTC"
    assert (overrides.jitter, overrides.catch_up) == (timedelta(0), CatchUp.LATEST)
    assert manual.schedule is None
    # Inherited timezone/jitter on a task without cron are not worth a warning.
    assert config.warnings == ()


@pytest.mark.parametrize(
    ("text", "environ", "zone"),
    [
        ('[scheduler]\ntimezone = "Asia/Tokyo"\n', {"TZ": "Europe/Riga"}, "Asia/Tokyo"),
        ("", {"TZ": "Europe/Riga"}, "Europe/Riga"),
        ("", {"TZ": ":America/New_York"}, "America/New_York"),
        ("[scheduler]\n", {"TZ": "Europe/Riga"}, "Europe/Riga"),
        (
            '[scheduler]\ntimezone = "Asia/Tokyo"\n[defaults]\ntimezone = "UTC"\n',
            {},
            "UTC",
        ),
    ],
)
def test_default_timezone(text: str, environ: dict[str, str], zone: str) -> None:
    config = parse(text + '[tasks.a]\nrun = "a"\ncron = "@daily"\n', environ)
    schedule = config.tasks["a"].schedule
    assert schedule is not None and schedule.timezone == zone


def test_host_timezone(tmp_path: Path) -> None:
    zoneinfo_dir = tmp_path / "usr" / "share" / "zoneinfo" / "Europe"
    zoneinfo_dir.mkdir(parents=True)
    (zoneinfo_dir / "Riga").write_bytes(b"")
    link = tmp_path / "localtime"
    link.symlink_to(zoneinfo_dir / "Riga")
    assert host_timezone({}, link) == "Europe/Riga"
    assert host_timezone({"TZ": "Asia/Tokyo"}, link) == "Asia/Tokyo"
    assert host_timezone({"TZ": "Not/AZone"}, link) == "Europe/Riga"
    assert host_timezone({}, tmp_path / "missing") == "UTC"
    assert host_timezone({"TZ": ""}, tmp_path / "missing") == "UTC"
    posix = tmp_path / "zoneinfo" / "posix" / "Asia"
    posix.mkdir(parents=True)
    (posix / "Tokyo").write_bytes(b"")
    other = tmp_path / "localtime2"
    other.symlink_to(posix / "Tokyo")
    assert host_timezone({}, other) == "Asia/Tokyo"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'cron = "61 * * * *"',
            "tasks.x.cron: minute field: 61 is out of range 0-59 in '61 * * * *'",
        ),
        ('cron = "* * *"', "tasks.x.cron: expected 5 fields"),
        ('cron = "@every 0s"', "tasks.x.cron: @every needs a positive duration, got '0s'"),
        ('cron = "@reboot"', "tasks.x.cron: @reboot is not supported; use run_on_start = true"),
        ('cron = ""', "tasks.x.cron: must not be empty"),
        ("cron = 5", "tasks.x.cron: expected a string, got integer 5"),
        ('timezone = "Mars/Base"', "tasks.x.timezone: unknown time zone 'Mars/Base'"),
        ("timezone = 3", "tasks.x.timezone: expected a string"),
        ('jitter = "soon"', "tasks.x.jitter: invalid duration"),
        ("jitter = -1", "tasks.x.jitter: must be a positive number of seconds, got -1"),
        ('run_on_start = "yes"', "tasks.x.run_on_start: expected true or false"),
        ('catch_up = "some"', 'tasks.x.catch_up: must be one of latest, all, skip, got "some"'),
        ("max_catch_up_runs = 0", "tasks.x.max_catch_up_runs: must be between 1 and 10000, got 0"),
        (
            "max_catch_up_runs = 10001",
            "tasks.x.max_catch_up_runs: must be between 1 and 10000, got 10001",
        ),
    ],
)
def test_task_problems(text: str, expected: str) -> None:
    problems = problems_of(f'[tasks.x]\nrun = "x"\n{text}\n')
    assert len(problems) == 1
    assert problems[0].startswith(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[defaults]\ncron = "@daily"',
            "defaults.cron: not allowed in [defaults]; set it on each task",
        ),
        ('[defaults]\ntimezone = "Nowhere"', "defaults.timezone: unknown time zone 'Nowhere'"),
        ('[defaults]\ncatch_up = "never"', "defaults.catch_up: must be one of latest, all, skip"),
        ('[scheduler]\ntimezone = "Mars/Base"', "scheduler.timezone: unknown time zone"),
        (
            '[scheduler]\ntimzone = "UTC"',
            "scheduler.timzone: unknown key; did you mean 'timezone'?",
        ),
        ("[scheduler]\nanything = 1", "scheduler.anything: unknown key"),
        ("scheduler = 1", "scheduler: expected a table, got integer 1"),
    ],
)
def test_section_problems(text: str, expected: str) -> None:
    problems = problems_of(text)
    assert len(problems) == 1
    assert problems[0].startswith(expected)


def test_cron_error_uses_the_task_zone_check_first() -> None:
    problems = problems_of('[tasks.x]\nrun = "x"\ncron = "@daily"\ntimezone = "Mars/Base"\n')
    assert problems == ["tasks.x.timezone: unknown time zone 'Mars/Base'"]


def test_never_firing_schedule_is_a_warning() -> None:
    config = parse('[tasks.x]\nrun = "x"\ncron = "0 0 30 2 *"\n')
    assert config.tasks["x"].schedule is not None
    assert config.warnings == ("tasks.x.cron: '0 0 30 2 *' never fires",)


@pytest.mark.parametrize(
    ("keys", "warnings"),
    [
        ('timezone = "UTC"', ("tasks.x.timezone: has no effect without cron",)),
        ('jitter = "5s"', ("tasks.x.jitter: has no effect without cron",)),
        (
            'timezone = "UTC"\njitter = "5s"',
            (
                "tasks.x.timezone: has no effect without cron",
                "tasks.x.jitter: has no effect without cron",
            ),
        ),
        ("run_on_start = true", ()),
        ('catch_up = "all"', ()),
    ],
)
def test_schedule_keys_without_cron(keys: str, warnings: tuple[str, ...]) -> None:
    config = parse(f'[tasks.x]\nrun = "x"\n{keys}\n')
    assert config.warnings == warnings
    assert config.tasks["x"].schedule is None


def test_run_on_start_without_cron_is_kept() -> None:
    assert parse('[tasks.x]\nrun = "x"\nrun_on_start = true\n').tasks["x"].run_on_start
