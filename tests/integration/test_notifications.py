"""Notifications from a real engine, through Apprise, to real local receivers.

The engine runs real processes on a real store (SQLite and PostgreSQL); the
notification service hears its events as the daemon wires it; Apprise
delivers to an HTTP server and an SMTP server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from notification_receivers import HttpReceiver, SmtpReceiver, text_of

from runyard.config.notifications import NotificationSettings, Notifier
from runyard.domain.models import Run, TaskDefinition, TriggeredBy
from runyard.domain.notifications import Route
from runyard.engine.core import Engine
from runyard.notifications.service import NotificationService
from runyard.store.runs import RunStore

pytestmark = pytest.mark.anyio

LINK = "https://runyard.example.com"
ALL_KINDS = frozenset(
    {"succeeded", "failed", "timeout", "crashed", "stopped", "recovered", "queue_full"}
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def http() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    receiver = SmtpReceiver()
    yield receiver
    receiver.close()


class FakeClock:
    """The notification service's clock: real time plus whatever the test adds."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


def settings(
    urls: dict[str, list[str]],
    kinds: frozenset[str] = ALL_KINDS,
    **overrides: object,
) -> NotificationSettings:
    notifiers = {name: Notifier(name, tuple(found)) for name, found in urls.items()}
    routes = (Route(kinds=kinds, notifiers=tuple(notifiers)),)
    return NotificationSettings(notifiers=notifiers, routes=routes, **overrides)  # type: ignore[arg-type]


class Daemon:
    """An engine and a notification service wired as runyard/app.py wires them."""

    def __init__(self, tmp_path: Path, url: str) -> None:
        self.tmp_path = tmp_path
        self.store = RunStore.open(url)
        self.clock = FakeClock()
        self.engine: Engine | None = None
        self.notifications: NotificationService | None = None
        self.delivered: list[tuple[str, str]] = []

    async def start(
        self, config: NotificationSettings, *tasks: TaskDefinition, max_concurrent_runs: int = 4
    ) -> tuple[Engine, NotificationService]:
        self.engine = Engine(
            tasks={t.name: t for t in tasks},
            store=self.store,
            data_dir=self.tmp_path,
            max_concurrent_runs=max_concurrent_runs,
            base_environ={"PATH": os.environ["PATH"]},
            retention_interval=3600,
        )
        self.notifications = NotificationService(
            config,
            self.store,
            link_base=LINK,
            log_path=self.engine.log_path,
            clock=self.clock,
            on_delivery=lambda notifier, outcome: self.delivered.append((notifier, outcome)),
        )
        self.engine.events.listen(self.notifications.on_event)
        await self.notifications.start(list(self.engine.tasks))
        await self.engine.start()
        return self.engine, self.notifications

    async def run(self, task_name: str) -> Run:
        assert self.engine is not None
        (run,) = await self.engine.trigger(task_name, {}, TriggeredBy.API)
        ended = await self.engine.wait_for_end(run.id, 30)
        assert ended is not None
        return ended

    async def settled(self, timeout: float = 30) -> None:
        """Wait until no notification is pending."""
        assert self.notifications is not None
        await until(lambda: not self.notifications._pending, timeout)  # type: ignore[union-attr]


@pytest.fixture
async def daemon(tmp_path: Path, store_url: str) -> AsyncIterator[Daemon]:
    d = Daemon(tmp_path, store_url)
    yield d
    if d.engine is not None:
        await d.engine.shutdown(timeout=10)
    if d.notifications is not None:
        await d.notifications.stop(grace=1)
    d.store.close()


async def until(predicate: Callable[[], bool], timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def in_thread(function: Callable[[], object]) -> object:
    return await asyncio.to_thread(function)


async def test_a_failure_reaches_a_json_webhook_and_an_email_and_is_kept_in_app(
    daemon: Daemon, http: HttpReceiver, smtp: SmtpReceiver
) -> None:
    mailto = (
        f"mailto://127.0.0.1:{smtp.port}?mode=insecure&from=runyard@example.com&to=ops@example.com"
    )
    await daemon.start(
        settings({"hook": [f"json://127.0.0.1:{http.port}/hook"], "mail": [mailto]}),
        TaskDefinition(
            name="backup-db",
            run="for i in $(seq 1 30); do echo line $i; done; echo disk gone >&2; exit 3",
        ),
    )
    run = await daemon.run("backup-db")
    (post,) = await asyncio.to_thread(http.wait_for, 1)
    (mail,) = await asyncio.to_thread(smtp.wait_for, 1)

    body = post.json()
    assert post.path == "/hook"
    assert body["title"] == "runyard: backup-db failed (exit 3)"
    message = body["message"]
    assert "Task: backup-db" in message
    assert "Outcome: failed (exit code 3)" in message
    assert "Duration: " in message
    assert f"Run: {LINK}/runs/{run.id}" in message
    # The last 20 log lines: 12..30 from stdout, then the stderr line.
    assert "Last 20 log lines:" in message
    assert "line 11\n" not in message
    assert "line 12" in message and "line 30" in message and "disk gone" in message

    assert mail["Subject"] == "runyard: backup-db failed (exit 3)"
    assert smtp.recipients == [["ops@example.com"]]
    assert f"Run: {LINK}/runs/{run.id}" in text_of(mail)
    assert "disk gone" in text_of(mail)

    await daemon.settled()
    found, total = daemon.store.list_notifications(None, 10, 0)
    assert total == 1
    (kept,) = found
    assert (kept.kind, kept.task_name, kept.run_id, kept.count) == (
        "failed",
        "backup-db",
        run.id,
        1,
    )
    assert kept.status == "delivered"
    assert sorted((d.notifier, d.outcome, d.attempts) for d in kept.deliveries) == [
        ("hook", "delivered", 1),
        ("mail", "delivered", 1),
    ]
    assert sorted(daemon.delivered) == [("hook", "delivered"), ("mail", "delivered")]


async def test_a_slack_url_posts_slack_format(
    daemon: Daemon, http: HttpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apprise.plugins.slack import NotifySlack

    # Apprise's Slack service posts to Slack's webhook host; this moves it here.
    monkeypatch.setattr(NotifySlack, "webhook_url", f"http://127.0.0.1:{http.port}/services")
    await daemon.start(
        settings({"chat": ["slack://T000/B000/XXXX"]}),
        TaskDefinition(name="report", run="echo done"),
    )
    await daemon.run("report")
    (post,) = await asyncio.to_thread(http.wait_for, 1)
    assert post.path == "/services/T000/B000/XXXX"
    payload = post.json()
    (attachment,) = payload["attachments"]
    assert attachment["title"] == "runyard: report succeeded"
    assert "Task: report" in attachment["text"]
    assert "    done" in attachment["text"]


async def test_a_receiver_that_fails_then_recovers_gets_the_message(
    daemon: Daemon, http: HttpReceiver
) -> None:
    http.fail_next(2)
    await daemon.start(
        settings({"hook": [f"json://127.0.0.1:{http.port}/hook"]}),
        TaskDefinition(name="flaky", run="exit 1"),
    )
    await daemon.run("flaky")
    (post,) = await asyncio.to_thread(http.wait_for, 1, 20)
    assert http.refused == 2
    assert post.json()["title"] == "runyard: flaky failed (exit 1)"
    await daemon.settled()
    (kept,), _ = daemon.store.list_notifications(None, 10, 0)
    assert kept.status == "delivered"
    assert [(d.outcome, d.attempts, d.error) for d in kept.deliveries] == [("delivered", 3, "")]


async def test_a_spent_retry_budget_is_recorded_failed_and_logged(
    daemon: Daemon, http: HttpReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    http.fail_next(1000)
    await daemon.start(
        settings(
            {"hook": [f"json://127.0.0.1:{http.port}/hook"]}, retry_budget=timedelta(seconds=2)
        ),
        TaskDefinition(name="flaky", run="exit 1"),
    )
    with caplog.at_level(logging.WARNING, logger="runyard.notifications"):
        await daemon.run("flaky")
        await daemon.settled()
    assert http.posts == []
    assert http.refused >= 2  # the first attempt and at least one retry within 2 s
    (kept,), _ = daemon.store.list_notifications("failed", 10, 0)
    (delivery,) = kept.deliveries
    assert delivery.outcome == "failed"
    assert delivery.attempts == http.refused
    assert "500" in delivery.error
    assert daemon.delivered == [("hook", "failed")]
    (line,) = [r.getMessage() for r in caplog.records if "failed after" in r.getMessage()]
    assert f"to hook (json://127.0.0.1:{http.port}/hook) failed after" in line


async def test_a_flood_of_1000_failures_is_one_message_then_one_count(
    daemon: Daemon, http: HttpReceiver
) -> None:
    engine, notifications = await daemon.start(
        settings({"hook": [f"json://127.0.0.1:{http.port}/hook"]}),
        TaskDefinition(name="nightly", run="exit 2", replicas=100, max_queued=1000),
        max_concurrent_runs=100,
    )
    ended: list[str] = []
    engine.events.listen(
        lambda kind, data: ended.append(data["id"]) if kind == "run.ended" else None
    )
    for _ in range(10):
        await engine.trigger("nightly", {}, TriggeredBy.API)
    await until(lambda: len(ended) == 1000, timeout=110)
    await daemon.settled()
    (first,) = http.posts
    assert first.json()["title"] == "runyard: nightly failed (exit 2)"

    # The coalesce window (1 h) closes: one message reports the 999 folded failures.
    daemon.clock.offset = timedelta(hours=1)
    assert notifications.close_windows(daemon.clock()) == 1
    posts = await asyncio.to_thread(http.wait_for, 2)
    assert len(posts) == 2
    summary = posts[1].json()
    assert summary["title"] == "runyard: nightly failed (exit 2) x999"
    assert "nightly: failed 999 more times since" in summary["message"]
    await daemon.settled()
    found, total = daemon.store.list_notifications(None, 10, 0)
    assert total == 2
    assert [n.count for n in found] == [999, 1]  # newest first
    assert found[0].run_id == ended[-1]


async def test_a_success_after_a_failure_is_recovered(daemon: Daemon, http: HttpReceiver) -> None:
    marker = daemon.tmp_path / "fixed"
    await daemon.start(
        settings(
            {"hook": [f"json://127.0.0.1:{http.port}/hook"]},
            kinds=frozenset({"failed", "recovered"}),
        ),
        TaskDefinition(name="sync", run=f"test -e {marker}"),
    )
    await daemon.run("sync")
    await daemon.run("sync")  # a repeat within the window: folded, not sent
    marker.touch()
    await daemon.run("sync")
    await daemon.run("sync")  # a second success is not a recovery
    posts = await asyncio.to_thread(http.wait_for, 2)
    await daemon.settled()
    assert [post.json()["title"] for post in http.posts] == [
        "runyard: sync failed (exit 1)",
        "runyard: sync recovered",
    ]
    assert len(posts) == 2


async def test_a_full_pending_queue_drops_the_oldest_and_never_blocks_the_engine(
    daemon: Daemon, http: HttpReceiver
) -> None:
    http.release.clear()  # the receiver hangs: deliveries pile up
    tasks = [TaskDefinition(name=f"job{index}", run="exit 1") for index in range(5)]
    engine, notifications = await daemon.start(
        settings({"hook": [f"json://127.0.0.1:{http.port}/hook"]}, max_pending=2), *tasks
    )
    for index in range(5):
        await daemon.run(f"job{index}")  # every run ends while the receiver hangs
    assert notifications.dropped == 3
    http.release.set()
    await daemon.settled()
    found, total = daemon.store.list_notifications(None, 10, 0)
    assert total == 5
    by_task = {n.task_name: n.status for n in found}
    assert by_task == {
        "job0": "dropped",
        "job1": "dropped",
        "job2": "dropped",
        "job3": "delivered",
        "job4": "delivered",
    }
    # A dropped message whose request was already on the wire cannot be called
    # back; the two kept ones are delivered for sure.
    titles = {post.json()["title"] for post in http.posts}
    assert {"runyard: job3 failed (exit 1)", "runyard: job4 failed (exit 1)"} <= titles
    assert daemon.delivered.count(("hook", "dropped")) == 3


RELOADED = """
[daemon]
data_dir = "data"

[tasks.sync]
run = "exit 5"
"""

ROUTED = """
[notifiers.hook]
urls = ["json://127.0.0.1:{port}/hook"]

[[routes]]
kinds = ["failed"]
notifiers = ["hook"]
"""


async def test_reload_applies_new_notifiers_and_routes(tmp_path: Path, http: HttpReceiver) -> None:
    from runyard.app import Runyard
    from runyard.config.loader import load_config

    path = tmp_path / "runyard.toml"
    path.write_text(RELOADED, "utf-8")
    runyard = Runyard(load_config(path, environ={}), environ={"PATH": os.environ["PATH"]})
    await runyard.start()
    try:
        (run,) = await runyard.trigger("sync", {})
        assert await runyard.wait_for_end(run.id, 30) is not None
        path.write_text(RELOADED + ROUTED.format(port=http.port), "utf-8")
        await runyard.reload()
        (run,) = await runyard.trigger("sync", {})
        assert await runyard.wait_for_end(run.id, 30) is not None
        (post,) = await asyncio.to_thread(http.wait_for, 1)
        assert post.json()["title"] == "runyard: sync failed (exit 5)"
        # The link base is the daemon's own address when external_url is unset.
        assert f"Run: http://127.0.0.1:9477/runs/{run.id}" in post.json()["message"]
    finally:
        await runyard.stop()


async def test_a_restarted_daemon_knows_a_task_was_failing(
    daemon: Daemon, http: HttpReceiver
) -> None:
    marker = daemon.tmp_path / "fixed"
    sync = TaskDefinition(name="sync", run=f"test -e {marker}")
    config = settings(
        {"hook": [f"json://127.0.0.1:{http.port}/hook"]}, kinds=frozenset({"recovered"})
    )
    await daemon.start(config, sync)
    await daemon.run("sync")  # fails; only recoveries are routed
    assert daemon.engine is not None and daemon.notifications is not None
    await daemon.engine.shutdown(timeout=10)
    await daemon.notifications.stop(grace=1)

    marker.touch()
    await daemon.start(config, sync)  # a new engine and service on the same store
    await daemon.run("sync")
    (post,) = await asyncio.to_thread(http.wait_for, 1)
    assert post.json()["title"] == "runyard: sync recovered"
