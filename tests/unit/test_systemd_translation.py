"""`runyard import systemd`'s translation of timers and their services (pure)."""

from __future__ import annotations

import pytest

from runyard.importers.systemd import (
    SYSTEMD_PATH,
    CalendarError,
    calendar_to_cron,
    import_timers,
    parse_unit,
)


@pytest.mark.parametrize(
    ("calendar", "cron", "zone"),
    [
        ("daily", "0 0 * * *", None),
        ("weekly", "0 0 * * 1", None),
        ("minutely", "* * * * *", None),
        ("quarterly", "0 0 1 1,4,7,10 *", None),
        ("*-*-* 6:00", "0 6 * * *", None),
        ("*-*-* 6,18:00", "0 6,18 * * *", None),
        ("Sun *-*-* 03:10:00", "10 3 * * 0", None),
        ("Mon..Fri *-*-* 09:00", "0 9 * * 1-5", None),
        ("Sat..Sun 10:30", "30 10 * * 6-7", None),
        ("*-*-* *:0/15", "0-59/15 * * * *", None),
        ("*:0/10:30", "30 0-59/10 * * * *", None),
        ("*-02-29 00:00", "0 0 29 2 *", None),
        ("*-*-01 04:00:00", "0 4 1 * *", None),
        ("03-15 08..17:00", "0 8-17 15 3 *", None),
        ("Mon *-*-* 00:00:00 Europe/Riga", "0 0 * * 1", "Europe/Riga"),
        ("daily UTC", "0 0 * * *", "UTC"),
    ],
)
def test_calendars_cron_can_say(calendar: str, cron: str, zone: str | None) -> None:
    assert calendar_to_cron(calendar) == (cron, zone)


@pytest.mark.parametrize(
    ("calendar", "reason"),
    [
        ("2027-*-* 00:00", "a fixed year (2027) has no cron form"),
        ("*-*~01", "`~` (days counted from the end of the month)"),
        ("Mon *-*-01 00:00", "a weekday together with a day of the month"),
        ("Funday 10:00", "cannot read the weekday 'Funday'"),
        ("*-*-* 25:00", "hour '25' is out of range 0-23"),
        ("*-13-01", "month '13' is out of range 1-12"),
    ],
)
def test_calendars_cron_cannot_say(calendar: str, reason: str) -> None:
    with pytest.raises(CalendarError) as caught:
        calendar_to_cron(calendar)
    assert reason in str(caught.value)


def test_unit_files_are_read_as_systemd_reads_them() -> None:
    unit = parse_unit(
        "x.service",
        "[Unit]\nDescription=Backup\n# a comment\n; another\n"
        "[Service]\nExecStart=/usr/bin/backup \\\n  --all\nEnvironment=A=1\nEnvironment=B=2\n",
    )
    assert unit.last("Unit", "Description") == "Backup"
    assert unit.values("Service", "ExecStart") == ["/usr/bin/backup  --all"]
    assert unit.values("Service", "Environment") == ["A=1", "B=2"]


TIMER = "[Unit]\nDescription=Nightly backup\n[Timer]\nOnCalendar=*-*-* 02:30\nPersistent=true\n"
SERVICE = (
    "[Unit]\nDescription=Back up\n[Service]\nType=oneshot\n"
    'ExecStart=/usr/bin/backup --to "/mnt/my disk" --note \'a "b"\'\n'
    "ExecStart=-/usr/bin/notify done\n"
    'Environment="GREETING=hello world" MODE=fast\n'
    "WorkingDirectory=~\nEnvironmentFile=-/etc/default/backup\n"
)


def translate(timer: str = TIMER, service: str | None = SERVICE, name: str = "backup") -> object:
    timers = [parse_unit(f"{name}.timer", timer)]
    services = {f"{name}.service": parse_unit(f"{name}.service", service) if service else None}
    return import_timers(
        timers, services, user="alice", is_user=lambda u: u in ("alice", "1000"), home="/home/alice"
    )


def test_a_timer_and_its_service_become_one_task() -> None:
    result = translate()
    assert result.skipped == []  # type: ignore[attr-defined]
    assert result.tasks == {  # type: ignore[attr-defined]
        "backup": {
            "description": "Nightly backup",
            "cron": "30 2 * * *",
            "catch_up": "latest",
            "run": "/usr/bin/backup --to '/mnt/my disk' --note 'a \"b\"'\n/usr/bin/notify done",
            "working_dir": "/home/alice",
            "env_base": "clean",
            "env": {"GREETING": "hello world", "MODE": "fast", "PATH": SYSTEMD_PATH},
            "env_file": "/etc/default/backup",
        }
    }


def test_each_oncalendar_is_a_task_and_persistent_false_skips_missed_ticks() -> None:
    timer = "[Timer]\nOnCalendar=Mon 08:00\nOnCalendar=Fri 17:00\nRandomizedDelaySec=5min\n"
    result = translate(timer)
    tasks = result.tasks  # type: ignore[attr-defined]
    assert list(tasks) == ["backup", "backup-2"]
    assert (tasks["backup"]["cron"], tasks["backup-2"]["cron"]) == ("0 8 * * 1", "0 17 * * 5")
    assert tasks["backup"]["catch_up"] == "skip"
    assert tasks["backup"]["jitter"] == "300s"


@pytest.mark.parametrize(
    ("timer", "service", "reason"),
    [
        (TIMER, None, "its service backup.service was not found"),
        (TIMER, "[Service]\nUser=bob\nExecStart=/bin/true\n", "runs as bob (User=)"),
        (TIMER, "[Service]\nExecStart=/bin/echo %h\n", "systemd specifiers"),
        (TIMER, "[Service]\nType=oneshot\n", "no ExecStart="),
        ("[Timer]\nOnCalendar=2027-01-01\n", SERVICE, "a fixed year"),
        ("[Timer]\n", SERVICE, "no OnCalendar= to translate"),
    ],
)
def test_what_cannot_be_translated_says_why(timer: str, service: str | None, reason: str) -> None:
    result = translate(timer, service)
    assert result.tasks == {}  # type: ignore[attr-defined]
    assert [s for s in result.skipped if reason in s.reason], result.skipped  # type: ignore[attr-defined]


def test_elapsed_time_timers_become_every_and_run_on_start_with_a_note() -> None:
    timer = "[Timer]\nOnBootSec=15min\nOnUnitActiveSec=1d\nOnCalendar=daily\nOnActiveSec=5\n"
    result = translate(timer)
    tasks = result.tasks  # type: ignore[attr-defined]
    assert list(tasks) == ["backup", "backup-2"]
    assert (tasks["backup"]["cron"], tasks["backup"]["run_on_start"]) == ("0 0 * * *", True)
    assert tasks["backup-2"]["cron"] == "@every 86400s"
    assert "run_on_start" not in tasks["backup-2"]
    notes = {s.text: s.reason for s in result.skipped}  # type: ignore[attr-defined]
    assert notes["backup.timer: OnUnitActiveSec=1d"].startswith('translated as cron = "@every')
    assert notes["backup.timer: OnBootSec=15min"].startswith("translated as run_on_start")
    assert "no runyard form" in notes["backup.timer: OnActiveSec=5"]


def test_a_boot_only_timer_runs_at_daemon_start() -> None:
    result = translate("[Timer]\nOnBootSec=0\n")
    task = result.tasks["backup"]  # type: ignore[attr-defined]
    assert task["run_on_start"] is True and "cron" not in task
    assert result.skipped == []  # type: ignore[attr-defined]


def test_user_given_by_uid_and_percent_escapes() -> None:
    service = "[Service]\nUser=1000\nExecStart=/bin/date +%%H\n"
    result = translate(service=service)
    assert result.tasks["backup"]["run"] == "/bin/date +%H"  # type: ignore[attr-defined]


def test_a_root_daemon_runs_a_service_of_another_user_as_them() -> None:
    timers = [parse_unit("backup.timer", TIMER)]
    services = {
        "backup.service": parse_unit("backup.service", "[Service]\nUser=bob\nExecStart=/bin/true\n")
    }
    result = import_timers(
        timers, services, user="root", is_user=lambda u: u in ("root", "0"), home="/root"
    )
    assert result.tasks["backup"]["user"] == "bob"  # type: ignore[attr-defined]
    by_uid_text = "[Service]\nUser=1000\nExecStart=/bin/true\n"
    by_uid = {"backup.service": parse_unit("backup.service", by_uid_text)}
    refused = import_timers(
        timers, by_uid, user="root", is_user=lambda u: u in ("root", "0"), home="/root"
    )
    assert refused.tasks == {}  # type: ignore[attr-defined]
    assert [s.reason for s in refused.skipped] == [  # type: ignore[attr-defined]
        "runs as uid 1000 (User=); a task's user is given by name"
    ]
