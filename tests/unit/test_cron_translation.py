"""`runyard import cron`'s translation, rule by rule (pure: no files, no cron)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from runyard.config.loader import parse_config_text
from runyard.importers.common import keep_valid, render_config
from runyard.importers.cron import CronImport, import_crontab

HOMES = {"alice": "/home/alice", "root": "/root"}


def translate(text: str, *, system: bool = False, user: str = "alice", **kw: str) -> CronImport:
    return import_crontab(text, system=system, user=user, home_of=HOMES.get, **kw)


def only_task(text: str, **kw: object) -> dict[str, object]:
    result = translate(text, **kw)  # type: ignore[arg-type]
    assert result.skipped == []
    assert len(result.tasks) == 1, result.tasks
    return next(iter(result.tasks.values()))


def test_a_job_gets_crons_environment_and_home() -> None:
    task = only_task("15 4 * * 1-5 /usr/local/bin/report --daily\n")
    assert task == {
        "cron": "15 4 * * 1-5",
        "run": "/usr/local/bin/report --daily",
        "shell": "/bin/sh",
        "working_dir": "/home/alice",
        "env_base": "clean",
        "env": {
            "HOME": "/home/alice",
            "LOGNAME": "alice",
            "PATH": "/usr/bin:/bin",
            "SHELL": "/bin/sh",
        },
    }


def test_environment_lines_apply_to_the_jobs_below_them() -> None:
    result = translate(
        "0 1 * * * first\n"
        "SHELL=/bin/bash\n"
        'PATH = "/opt/bin:/usr/bin:/bin"\n'
        "GREETING='hello world'\n"
        "HOME=/srv/work\n"
        "CRON_TZ=Europe/Riga\n"
        "0 2 * * * second\n"
    )
    first, second = result.tasks["first"], result.tasks["second"]
    assert first["shell"] == "/bin/sh" and "timezone" not in first
    assert second["shell"] == "/bin/bash"
    assert second["timezone"] == "Europe/Riga"
    assert second["working_dir"] == "/srv/work"  # cron runs a job in its HOME
    assert second["env"] == {
        "GREETING": "hello world",
        "HOME": "/srv/work",
        "LOGNAME": "alice",
        "PATH": "/opt/bin:/usr/bin:/bin",
        "SHELL": "/bin/bash",
    }


def test_mailto_is_listed_not_dropped_unless_it_asks_for_no_mail() -> None:
    result = translate('MAILTO=""\n0 1 * * * a\nMAILTO=ops@example.com\n0 2 * * * b\n')
    assert list(result.tasks) == ["a", "b"]
    assert result.tasks["a"]["env"]["MAILTO"] == ""  # type: ignore[index]
    assert result.tasks["b"]["env"]["MAILTO"] == "ops@example.com"  # type: ignore[index]
    [skipped] = result.skipped
    assert (skipped.line, skipped.text) == (3, "MAILTO=ops@example.com")
    assert "does not mail" in skipped.reason


@pytest.mark.parametrize(
    ("line", "keys"),
    [
        ("@reboot /srv/start", {"run_on_start": True}),
        ("@daily /srv/job", {"cron": "@daily"}),
        ("@MIDNIGHT /srv/job", {"cron": "@midnight"}),
        ("@annually /srv/job", {"cron": "@annually"}),
        ("*/10 9-17 * jan,jul mon-fri /srv/job", {"cron": "*/10 9-17 * jan,jul mon-fri"}),
        ("0 0 * * 7 /srv/job", {"cron": "0 0 * * 7"}),
    ],
)
def test_schedules(line: str, keys: dict[str, object]) -> None:
    task = only_task(line + "\n")
    assert {key: task[key] for key in keys} == keys
    if "run_on_start" in keys:
        assert "cron" not in task


def test_percent_signs_feed_standard_input_and_escaped_ones_stay() -> None:
    task = only_task(r"0 * * * * date +\%H:\%M > now; mail -s hi root%line one%%last" + "\n")
    assert task["run"] == (
        "set +e\n"
        "{\n"
        "date +%H:%M > now; mail -s hi root\n"
        "} <<'CRON_STDIN'\n"
        "line one\n"
        "\n"
        "last\n"
        "CRON_STDIN"
    )


def test_the_here_document_end_never_clashes_with_the_input() -> None:
    task = only_task("0 * * * * cat%CRON_STDIN%x\n")
    assert task["run"] == "set +e\n{\ncat\n} <<'CRON_STDIN_'\nCRON_STDIN\nx\nCRON_STDIN_"


@pytest.mark.parametrize(
    ("command", "compound"),
    [
        ("false; echo still runs", True),
        ("(cd /tmp && ls)", True),
        ("echo `date`", True),
        ("echo $(date)", True),
        ("test -x /bin/true || { echo missing; }", True),
        ("/usr/bin/backup --all", False),
        ("a && b || c", False),
        ("producer | consumer", False),
    ],
)
def test_set_plus_e_where_sh_e_and_cron_would_part_ways(command: str, compound: bool) -> None:
    task = only_task(f"0 * * * * {command}\n")
    assert task["run"] == (f"set +e\n{command}" if compound else command)


def test_comments_right_above_a_job_describe_it() -> None:
    result = translate(
        "# nightly backup\n# of the photos\n0 2 * * * backup\n"
        "\n# a paragraph apart\n\n0 3 * * * other\n"
        "# 0 4 * * * commented-out\n0 5 * * * third\n"
    )
    assert result.tasks["backup"]["description"] == "nightly backup of the photos"
    assert "description" not in result.tasks["other"]
    assert "description" not in result.tasks["third"]


def test_a_long_comment_block_is_a_preamble_not_a_description() -> None:
    preamble = "".join(f"# line {n}\n" for n in range(6))
    assert "description" not in only_task(preamble + "0 2 * * * backup\n")


def test_system_files_carry_a_user_field_and_other_users_jobs_run_as_them() -> None:
    crontab = "17 *\t* * *\troot\tcd / && run-parts --report /etc/cron.hourly\n" + (
        "0 1 * * * alice /usr/bin/alices-job\n"
    )
    result = translate(crontab, system=True, user="root")
    assert list(result.tasks) == ["run-parts", "alices-job"]
    assert result.tasks["run-parts"]["working_dir"] == "/root"
    assert "user" not in result.tasks["run-parts"]
    alices = result.tasks["alices-job"]
    assert (alices["user"], alices["working_dir"]) == ("alice", "/home/alice")
    assert alices["env"] == {
        "HOME": "/home/alice",
        "LOGNAME": "alice",
        "PATH": "/usr/bin:/bin",
        "SHELL": "/bin/sh",
    }
    assert result.skipped == []
    # A daemon that is not root cannot switch: the job is listed, not dropped.
    as_alice = translate(crontab, system=True, user="alice")
    assert list(as_alice.tasks) == ["alices-job"]
    assert "user" not in as_alice.tasks["alices-job"]
    [skipped] = as_alice.skipped
    assert skipped.line == 1
    assert skipped.reason == (
        "runs as root; a task runs as another user than the daemon's (alice) only when "
        "the daemon runs as root: import it there, or where the daemon runs as root"
    )


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("61 * * * * job", "schedule '61 * * * *': minute field"),
        ("* * * job", "expected five schedule fields and a command"),
        ("@fortnightly job", "unknown schedule @fortnightly"),
        ("@daily", "no command after the schedule"),
    ],
)
def test_lines_that_cannot_be_translated_say_why(line: str, reason: str) -> None:
    result = translate(line + "\n")
    assert result.tasks == {}
    [skipped] = result.skipped
    assert (skipped.line, skipped.text) == (1, line)
    assert reason in skipped.reason


def test_names_come_from_the_command_or_the_prefix_and_never_clash() -> None:
    result = translate(
        "0 1 * * * /usr/local/bin/backup.sh\n0 2 * * * backup.sh --again\n"
        "0 3 * * * cd /srv && nice -n 5 ./rotate-logs\n0 4 * * * FOO=1 ~\n"
    )
    assert list(result.tasks) == ["backup", "backup-2", "rotate-logs", "cron"]
    prefixed = translate("0 1 * * * a\n0 2 * * * b\n", name_prefix="my.job")
    assert list(prefixed.tasks) == ["my.job", "my.job-2"]


def test_the_rendered_config_loads_and_lists_what_was_left_out() -> None:
    result = translate("MAILTO=me@example.com\n# greet\n0 9 * * * echo 'hi \"you\"'%a\n")
    text = render_config(result, "/tmp/crontab", "import cron")
    assert text.startswith(
        "# Imported from /tmp/crontab by `runyard import cron`.\n"
        "# Not translated:\n"
        "#   line 1: MAILTO=me@example.com\n"
    )
    assert tomllib.loads(text)["tasks"] == result.tasks
    config = parse_config_text(text, Path("/srv/runyard.toml"), environ={})
    assert config.tasks["echo"].description == "greet"


def test_keep_valid_moves_what_runyard_refuses_to_the_skipped_lines() -> None:
    result = translate("0 1 * * * fine\n0 2 * * * refused\n")
    keep_valid(result, lambda text: ["tasks.refused.run: no"] if "refused" in text else [])
    assert list(result.tasks) == ["fine"]
    [skipped] = result.skipped
    assert (skipped.line, skipped.text, skipped.reason) == (
        2,
        "0 2 * * * refused",
        "tasks.refused.run: no",
    )
