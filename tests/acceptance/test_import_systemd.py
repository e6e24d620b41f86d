"""`runyard import systemd` against systemd itself and the timers Debian ships.

systemd-analyze (Debian's systemd package; `make test` installs it) is the
oracle: for each OnCalendar= expression, the next elapses it computes must
be the ticks runyard computes for the translated cron expression. The test
fails, never skips, without it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from runyard_harness import cli_env, run_cli

from runyard.domain.schedule import next_tick, parse_schedule
from runyard.importers.systemd import calendar_to_cron, parse_unit

BASE = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # before the spring DST change in Europe
ITERATIONS = 8
TIMER_DIR = Path("/lib/systemd/system")
_ELAPSE = re.compile(r"(?:Next elapse|Iter\. #\d+): \w+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC")


def systemd_elapses(calendar: str) -> list[datetime]:
    assert shutil.which("systemd-analyze"), "systemd-analyze is missing: apt-get install systemd"
    done = subprocess.run(
        [
            "systemd-analyze",
            "calendar",
            f"--base-time={BASE:%Y-%m-%d %H:%M:%S} UTC",
            f"--iterations={ITERATIONS}",
            calendar,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TZ": "UTC"},
    )
    assert done.returncode == 0, done.stderr
    found = [
        datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
        for text in _ELAPSE.findall(done.stdout)
    ]
    assert len(found) == ITERATIONS, done.stdout
    return found


def runyard_ticks(cron: str, zone: str | None) -> list[datetime]:
    schedule = parse_schedule(cron, zone or "UTC")
    ticks: list[datetime] = []
    after = BASE
    for _ in range(ITERATIONS):
        tick = next_tick(schedule, after)
        assert tick is not None
        ticks.append(tick)
        after = tick
    return ticks


def _debian_calendars() -> list[str]:
    calendars = []
    for path in sorted(TIMER_DIR.glob("*.timer")):
        unit = parse_unit(path.name, path.read_text(encoding="utf-8"))
        calendars += unit.values("Timer", "OnCalendar")
    return calendars


CRAFTED = [
    "daily",
    "weekly",
    "monthly",
    "quarterly",
    "semiannually",
    "hourly",
    "Mon..Fri *-*-* 09:00",
    "Sat,Sun 10:30",
    "*-*-* *:0/15",
    "*:0/10:30",
    "*-02-29 00:00",
    "03-15 08..17:00",
    "*-*-1,15 12:00",
    "Mon *-*-* 00:00:00 Europe/Riga",
    "*-*-* 02:30 Europe/Berlin",  # crosses the spring DST change after BASE
]


@pytest.mark.parametrize("calendar", sorted(set(CRAFTED + _debian_calendars())))
def test_translated_schedules_fire_when_systemd_would(calendar: str) -> None:
    cron, zone = calendar_to_cron(calendar)
    assert runyard_ticks(cron, zone) == systemd_elapses(calendar), cron


def test_debians_timers_import_and_validate(tmp_path: Path) -> None:
    timers = sorted(str(path) for path in TIMER_DIR.glob("*.timer"))
    assert timers, f"no timers in {TIMER_DIR}: apt-get install systemd"
    config = tmp_path / "runyard.toml"
    imported = run_cli("import", "systemd", *timers, "--write", str(config), env=cli_env())
    assert imported.returncode == 0, imported.stderr
    validated = run_cli("--config", str(config), "validate", env=cli_env())
    assert validated.returncode == 0, validated.stdout + validated.stderr
    text = config.read_text(encoding="utf-8")
    _header, listed, tasks = _sections(text)
    for timer in timers:
        name = Path(timer).stem
        # Each timer is a task, or listed with its reason (templates need %i).
        assert f"[tasks.{name}]" in tasks or f"{name}." in listed, (name, text)
    assert "[tasks.fstrim]" in tasks
    # OnBootSec=15min + OnUnitActiveSec=1d: at daemon start, then every day.
    assert "[tasks.systemd-tmpfiles-clean]" in tasks
    assert "systemd-tmpfiles-clean.timer: OnUnitActiveSec=1d" in imported.stderr


def test_a_non_timer_and_a_missing_file_are_refused(tmp_path: Path) -> None:
    service = tmp_path / "x.service"
    service.write_text("[Service]\nExecStart=/bin/true\n", encoding="utf-8")
    refused = run_cli("import", "systemd", str(service), env=cli_env())
    assert refused.returncode == 1
    assert f"{service} is not a .timer unit" in refused.stderr
    missing = run_cli("import", "systemd", str(tmp_path / "gone.timer"), env=cli_env())
    assert missing.returncode == 1
    assert f"cannot read {tmp_path / 'gone.timer'}" in missing.stderr


def _sections(text: str) -> tuple[str, str, str]:
    """(the header line, the listed lines, the tasks) of an imported config."""
    header, _, rest = text.partition("\n")
    listed = "\n".join(line for line in rest.splitlines() if line.startswith("#"))
    tasks = "\n".join(line for line in rest.splitlines() if not line.startswith("#"))
    return header, listed, tasks
