"""The text of a notification: the built-in template, a notifier's own, and its fallback."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from runyard.notifications.message import MessageFacts, default_title, render

FAILED = MessageFacts(
    kind="failed",
    task="backup-db",
    run_id="01J0000000000000000000000",
    run_url="https://runyard.example.com/runs/01J0000000000000000000000",
    outcome="failed",
    exit_code=4,
    duration=timedelta(minutes=1, seconds=30),
    log_lines=["dumping", "pg_dump: connection refused"],
)


def test_the_built_in_message_of_a_failed_run() -> None:
    title, body = render(FAILED, None)
    assert title == "runyard: backup-db failed (exit 4)"
    assert body.splitlines() == [
        "Task: backup-db",
        "Outcome: failed (exit code 4)",
        "Duration: 1m30s",
        "Run: https://runyard.example.com/runs/01J0000000000000000000000",
        "",
        "Last 2 log lines:",
        "    dumping",
        "    pg_dump: connection refused",
    ]


def test_a_window_summary_says_how_many_were_folded() -> None:
    summary = MessageFacts(
        kind="failed",
        task="backup-db",
        count=999,
        repeats=999,
        first_at=datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
        run_id="01J0000000000000000000000",
        outcome="failed",
        exit_code=2,
    )
    title, body = render(summary, None)
    assert title == "runyard: backup-db failed (exit 2) x999"
    assert body.splitlines()[0] == (
        "backup-db: failed 999 more times since 2026-03-01T12:00:00+00:00 "
        "(folded into this message; the first one was sent then)."
    )


def test_a_refused_trigger_has_no_run() -> None:
    facts = MessageFacts(kind="disk_full", task="report", detail="0 B free on the disk of /data")
    title, body = render(facts, None)
    assert title == "runyard: report disk_full"
    assert body.splitlines() == ["Task: report", "0 B free on the disk of /data"]


def test_success_titles_carry_no_exit_code() -> None:
    facts = MessageFacts(kind="recovered", task="sync", exit_code=0, run_id="r")
    assert default_title(facts) == "runyard: sync recovered"


def test_a_template_that_fails_falls_back_with_a_note() -> None:
    title, body = render(FAILED, "{{ log_lines.nope.deeper }}")
    assert title == "runyard: backup-db failed (exit 4)"
    assert body.startswith("Task: backup-db\n")
    assert "(The notifier's template failed:" in body


def test_a_service_message_names_the_service_and_its_instance() -> None:
    facts = MessageFacts(
        kind="unhealthy",
        task="web",
        run_id="01J0000000000000000000001",
        run_url="https://runyard.example.com/runs/01J0000000000000000000001",
        outcome="unhealthy",
        exit_code=143,
        duration=timedelta(seconds=42),
        detail="Last health check: HTTP 503 Service Unavailable.",
        instance=1,
    )
    title, body = render(facts, None)
    assert title == "runyard: web[1] unhealthy (exit 143)"
    assert body.splitlines() == [
        "Service: web (instance 1)",
        "Outcome: unhealthy (exit code 143)",
        "Duration: 42s",
        "Run: https://runyard.example.com/runs/01J0000000000000000000001",
        "Last health check: HTTP 503 Service Unavailable.",
    ]
