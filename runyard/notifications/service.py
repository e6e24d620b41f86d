"""The notification service: hears engine events, folds repeats, delivers with retries.

`on_event` runs inline in the engine's event publication: it only asks the
pure rules of `domain/notifications.py` and puts a message in a bounded
pending set, so it never waits on a database, a network or a thread. Each
pending message is an asyncio task that reads the run and its log tail,
stores the in-app notification and sends to every URL of its notifiers on a
thread pool of its own (the engine's `asyncio.to_thread` pool is never
taken), retrying with backoff within the retry budget.

Over 450 lines on purpose: it is one class whose pending set, coalescing
windows and deliveries share one state and one lock-free event-loop
discipline; the pure decisions already live in `domain/notifications.py`,
the text in `message.py`, the Apprise call in `delivery.py`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from ulid import ULID

from runyard.clock import Clock, utc_now
from runyard.config.notifications import NotificationSettings
from runyard.domain.notifications import (
    FAILURE_END_REASONS,
    PENDING,
    Delivery,
    DeliveryOutcome,
    Notification,
    NotificationKind,
    Window,
    failing_after,
    kinds_of_end,
    kinds_of_service_end,
    message_status,
    next_attempt_at,
    notifiers_for,
    observe,
    summary_due,
)
from runyard.exceptions import StoreError
from runyard.notifications.message import MessageFacts, render
from runyard.notifications.pending import PendingMessage, bare_facts, read_facts
from runyard.store import RunStore

log = logging.getLogger("runyard.notifications")

T = TypeVar("T")

# (url, title, body) -> None when delivered, else why not. Blocking: run on the pool.
Sender = Callable[[str, str, str], "str | None"]

# (notifier, outcome) for each finished delivery: the metrics hook.
DeliveryHook = Callable[[str, str], None]

SWEEP_SECONDS = 1.0  # how often closed coalescing windows are looked for
SENDING_THREADS = 4
TRIM_EVERY = 100  # stored notifications between two trims to the newest KEEP_NOTIFICATIONS
# Signals of the engine that are not run events, named by their kind.
_SIGNAL_KINDS = frozenset(
    {
        NotificationKind.DISK_FULL.value,
        NotificationKind.QUOTA_EXHAUSTED.value,
        NotificationKind.FATAL.value,  # a service's instance given up (services/daemon.py)
    }
)
# `triggered_by` of a service's lifetime (runs of kind `service`).
_SERVICE_TRIGGER = "service"


class NotificationService:
    """Route, fold and deliver notifications; keep each one in the store."""

    def __init__(
        self,
        settings: NotificationSettings,
        store: RunStore,
        *,
        link_base: str | None,
        log_path: Callable[[str], Path],
        clock: Clock = utc_now,
        sender: Sender | None = None,
        on_delivery: DeliveryHook | None = None,
    ) -> None:
        self.settings = settings
        self.link_base = link_base.rstrip("/") if link_base else None
        # Called once per delivery that ends, with (notifier, outcome).
        self.on_delivery = on_delivery
        self.dropped = 0  # messages dropped because the pending set was full
        self._store = store
        self._log_path = log_path
        self._clock = clock
        self._sender = sender or _apprise_send
        self._windows: dict[tuple[str, str], Window] = {}
        self._failing: dict[str, bool] = {}
        self._pending: dict[str, PendingMessage] = {}  # insertion order: oldest first
        self._recording: set[asyncio.Task[None]] = set()
        self._executor = ThreadPoolExecutor(SENDING_THREADS, thread_name_prefix="runyard-notify")
        self._sweeper: asyncio.Task[None] | None = None
        self._stored = 0  # notifications stored since the start (old ones are trimmed)

    # ----- lifecycle -------------------------------------------------------

    async def start(self, task_names: list[str]) -> None:
        """Learn which tasks are failing now (for `recovered`), then sweep windows."""
        await self.learn_failing(task_names)
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    def configure(self, settings: NotificationSettings, link_base: str | None) -> None:
        """Apply a reloaded config; open windows and pending messages are kept."""
        self.settings = settings
        self.link_base = link_base.rstrip("/") if link_base else None

    async def learn_failing(self, task_names: list[str]) -> None:
        """Read, for each task not known yet, whether its last judged run failed."""
        if not any(NotificationKind.RECOVERED in route.kinds for route in self.settings.routes):
            return  # only `recovered` needs the past; a reload that routes it asks again
        reasons = [*FAILURE_END_REASONS, "success"]
        for name in task_names:
            if name in self._failing:
                continue
            last = await self._in_thread(self._store.last_judged_end, name, reasons)
            # An event may have come in meanwhile: it knows better.
            self._failing.setdefault(name, last in FAILURE_END_REASONS)

    async def stop(self, grace: float = 5.0) -> None:
        """Give pending messages `grace` seconds, then drop the rest and stop."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        tasks = [message.task for message in self._pending.values() if message.task]
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        for message in list(self._pending.values()):
            self._drop(message, "the daemon stopped before it was delivered")
        if self._recording:
            await asyncio.wait(list(self._recording), timeout=grace)
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ----- events (inline in the engine: no waiting here) -------------------

    def on_event(self, kind: str, data: Mapping[str, Any]) -> None:
        """Hear one engine event or signal (an EventHub listener)."""
        if not self.settings.routes:
            return
        if kind == "run.ended" and data.get("triggered_by") == _SERVICE_TRIGGER:
            # Not a task: no `failing` state (no `recovered`), and fewer kinds.
            reason = str(data.get("end_reason") or "")
            for notification_kind in kinds_of_service_end(reason):
                self._observe(notification_kind.value, str(data["task_name"]), str(data["id"]))
        elif kind == "run.ended":
            task_name = str(data["task_name"])
            reason = str(data.get("end_reason") or "")
            before = self._failing.get(task_name, False)
            self._failing[task_name] = failing_after(reason, before)
            for notification_kind in kinds_of_end(reason, before):
                self._observe(notification_kind.value, task_name, str(data["id"]))
        elif kind in _SIGNAL_KINDS:
            self._observe(
                kind,
                data.get("task_name"),
                data.get("run_id"),
                detail=str(data.get("detail") or ""),
                account=data.get("account"),
            )

    def close_windows(self, now: datetime) -> int:
        """Send the summary of every window closed at `now`; return how many were sent."""
        length = self.settings.coalesce_window
        sent = 0
        for key, window in list(self._windows.items()):
            if not summary_due(window, now, length):
                continue
            del self._windows[key]
            if window.repeats == 0:
                continue
            task_name, kind = key
            notifiers = notifiers_for(self.settings.routes, task_name, kind)
            if notifiers:
                self._enqueue(
                    kind,
                    task_name or None,
                    window.last_run_id,
                    notifiers,
                    count=window.repeats,
                    repeats=window.repeats,
                    first_at=window.opened_at,
                )
                sent += 1
        return sent

    def _observe(
        self,
        kind: str,
        task_name: str | None,
        run_id: str | None,
        *,
        detail: str = "",
        account: str | None = None,
    ) -> None:
        notifiers = notifiers_for(self.settings.routes, task_name or "", kind)
        if not notifiers:
            return
        key = (task_name or "", kind)
        previous = self._windows.get(key)
        seen = observe(previous, self._clock(), self.settings.coalesce_window, run_id)
        self._windows[key] = seen.window
        if not seen.send:
            return
        self._enqueue(
            kind,
            task_name,
            run_id,
            notifiers,
            count=1 + seen.folded_before,
            repeats=seen.folded_before,
            first_at=previous.opened_at if previous and seen.folded_before else None,
            detail=detail,
            account=account,
        )

    def _enqueue(
        self,
        kind: str,
        task_name: str | None,
        run_id: str | None,
        notifiers: tuple[str, ...],
        *,
        count: int,
        repeats: int,
        first_at: datetime | None,
        detail: str = "",
        account: str | None = None,
    ) -> None:
        while len(self._pending) >= self.settings.max_pending:
            oldest = next(iter(self._pending.values()))
            self._drop(oldest, "the pending queue was full")
        message = PendingMessage(
            id=str(ULID()),
            created_at=self._clock(),
            kind=kind,
            task_name=task_name,
            run_id=run_id,
            count=count,
            repeats=repeats,
            first_at=first_at,
            notifiers=notifiers,
            detail=detail,
            account=account,
        )
        self._pending[message.id] = message
        message.task = asyncio.get_running_loop().create_task(self._deliver(message))

    def _drop(self, message: PendingMessage, why: str) -> None:
        if self._pending.pop(message.id, None) is None:
            return
        message.dropped = True
        self.dropped += 1
        log.warning(
            "notification %s (%s of %s) dropped: %s; %d dropped since the daemon started",
            message.id,
            message.kind,
            message.task_name or "the daemon",
            why,
            self.dropped,
        )
        if message.task is not None:
            message.task.cancel()
        recording = asyncio.get_running_loop().create_task(self._record_dropped(message))
        self._recording.add(recording)
        recording.add_done_callback(self._recording.discard)

    # ----- delivery (asyncio tasks; the blocking parts on the pool) ---------

    async def _deliver(self, message: PendingMessage) -> None:
        try:
            facts = await self._in_thread(
                read_facts, message, self._run_url(message.run_id), self._store, self._log_path
            )
            title, body = render(facts, None)
            message.targets = [
                (name, url)
                for name in message.notifiers
                if name in self.settings.notifiers
                for url in self.settings.notifiers[name].urls
            ]
            record = message.new_record(
                title, body, PENDING if message.targets else message_status([])
            )
            message.record = record
            stored = await self._store_new(record)
            await asyncio.gather(
                *(
                    self._deliver_to(message, index, name, url, facts)
                    for index, (name, url) in enumerate(message.targets)
                )
            )
            if message.targets and stored:
                deliveries = tuple(message.results[i] for i in range(len(message.targets)))
                done = dataclasses.replace(
                    record,
                    status=message_status([d.outcome for d in deliveries]),
                    deliveries=deliveries,
                    updated_at=self._clock(),
                )
                await self._in_thread(self._store.update_notification, done)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - one message's failure must not stop the others
            log.exception("notification %s could not be processed", message.id)
        finally:
            self._pending.pop(message.id, None)

    async def _store_new(self, record: Notification) -> bool:
        """Store a new notification; a store that refuses it (a full disk) never stops delivery."""
        try:
            await self._in_thread(self._store.insert_notification, record)
        except StoreError as error:
            log.warning("notification %s is sent but not kept in-app: %s", record.id, error)
            return False
        self._stored += 1
        if self._stored % TRIM_EVERY == 0:
            try:
                await self._in_thread(self._store.trim_notifications)
            except StoreError as error:
                log.warning("could not trim old notifications: %s", error)
        return True

    async def _deliver_to(
        self, message: PendingMessage, index: int, name: str, url: str, facts: MessageFacts
    ) -> None:
        notifier = self.settings.notifiers[name]
        title, body = render(facts, notifier.template)
        budget = self.settings.budget_of(name)
        first = self._clock()
        attempt = 0
        while True:
            attempt += 1
            error = await self._in_thread(self._sender, url, title, body)
            if error is None:
                outcome, why = DeliveryOutcome.DELIVERED, ""
                break
            now = self._clock()
            retry_at = next_attempt_at(first, attempt, now, budget)
            if retry_at is None:
                outcome, why = DeliveryOutcome.FAILED, error
                log.warning(
                    "notification %s to %s (%s) failed after %d attempts in %s: %s",
                    message.id,
                    name,
                    shown_url(url),
                    attempt,
                    _seconds(now - first),
                    error,
                )
                break
            await asyncio.sleep(max((retry_at - now).total_seconds(), 0.0))
        message.results[index] = Delivery(name, shown_url(url), outcome.value, attempt, why)
        self._count(name, outcome.value)

    async def _record_dropped(self, message: PendingMessage) -> None:
        try:
            record = message.record
            if record is None:
                facts = bare_facts(message, self._run_url(message.run_id))
                title, body = render(facts, None)
                record = message.new_record(title, body, PENDING)
            deliveries = []
            for index, (name, url) in enumerate(message.targets):
                done = message.results.get(index)
                if done is None:
                    done = Delivery(name, shown_url(url), DeliveryOutcome.DROPPED.value)
                    self._count(name, DeliveryOutcome.DROPPED.value)
                deliveries.append(done)
            if not message.targets:
                for name in message.notifiers:
                    self._count(name, DeliveryOutcome.DROPPED.value)
            outcomes = [d.outcome for d in deliveries] or [DeliveryOutcome.DROPPED.value]
            record = dataclasses.replace(
                record,
                status=message_status(outcomes),
                deliveries=tuple(deliveries),
                updated_at=self._clock(),
            )
            try:
                await self._in_thread(self._store.insert_notification, record)
            except StoreError:
                # Stored already (the insert had begun when the message was dropped).
                await self._in_thread(self._store.update_notification, record)
        except Exception:  # noqa: BLE001 - recording a drop is best effort
            log.exception("could not record dropped notification %s", message.id)

    def _count(self, notifier: str, outcome: str) -> None:
        if self.on_delivery is not None:
            try:
                self.on_delivery(notifier, outcome)
            except Exception:  # noqa: BLE001 - a metrics hook must not stop a delivery
                log.exception("the on_delivery hook failed")

    # ----- helpers -----------------------------------------------------------

    def _run_url(self, run_id: str | None) -> str | None:
        if run_id is None or self.link_base is None:
            return None
        return f"{self.link_base}/runs/{run_id}"

    async def _in_thread(self, function: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            try:
                self.close_windows(self._clock())
            except Exception:  # noqa: BLE001 - the next sweep tries again
                log.exception("notification window sweep failed")

    # ----- reading -----------------------------------------------------------

    async def list(
        self, status: str | None, limit: int, offset: int
    ) -> tuple[list[Notification], int]:
        """Return one page of stored notifications, newest first, and the total."""
        return await asyncio.to_thread(self._store.list_notifications, status, limit, offset)


def _apprise_send(url: str, title: str, body: str) -> str | None:
    # Apprise costs 0.2 s of imports: a daemon without notifiers never loads it.
    from runyard.notifications.delivery import send  # noqa: PLC0415

    return send(url, title, body)


def shown_url(url: str) -> str:
    """Return `url` with its passwords and tokens hidden, as Apprise shows it."""
    from runyard.notifications.delivery import shown_url as shown  # noqa: PLC0415

    return shown(url)


def _seconds(span: timedelta) -> str:
    return f"{span.total_seconds():.1f}s"
