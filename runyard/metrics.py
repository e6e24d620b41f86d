"""Prometheus metrics: what `GET /metrics` serves.

Counters and histograms are fed as things happen (the engine's observer, the
v3 service, notification delivery); gauges of what is true now (runs active
and queued, runtime used this billing period) are read at scrape time, so
they never drift from the engine's own counts.

Label values come from the config only (task names, account ids, notifier
names) or from fixed sets (end reasons, trigger outcomes), so the number of
series stays bounded whatever callers send.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from runyard.domain.models import EndReason, Run

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "TaskLoad", "V3_OUTCOMES"]

# How long runs take: from a second to six hours.
DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)
# How late cron fires: on time is a few milliseconds; a second is late.
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# One group commit of run changes.
WRITE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

# runyard_v3_triggers_total{outcome}: what a v3 trigger call came to.
V3_OUTCOMES = (
    "started",  # the run started at once
    "queued",  # the run waits for a free slot
    "refused",  # the run was recorded as ended at once (its queue was full)
    "invalid",  # 400: a bad name or input data
    "quota_exceeded",  # 403: the account's runtime allowance is used up
    "not_found",  # 404: no automation of that name for the account
    "rate_limited",  # 429
    "error",  # anything else (the database unavailable, the daemon stopping)
)
_OUTCOME_BY_STATUS = {400: "invalid", 403: "quota_exceeded", 404: "not_found", 429: "rate_limited"}


@dataclass(frozen=True)
class TaskLoad:
    running: int
    queued: int


class _Now(Collector):
    """Gauges read at scrape time: runs active and queued per configured task."""

    def __init__(self, loads: Callable[[], Mapping[str, TaskLoad]]) -> None:
        self._loads = loads

    def collect(self) -> Iterable[GaugeMetricFamily]:
        active = GaugeMetricFamily(
            "runyard_runs_active", "Runs with a live process, per task.", labels=["task"]
        )
        queued = GaugeMetricFamily(
            "runyard_runs_queued",
            "Runs waiting for a slot or a retry delay, per task.",
            labels=["task"],
        )
        for task, load in sorted(self._loads().items()):
            active.add_metric([task], load.running)
            queued.add_metric([task], load.queued)
        yield active
        yield queued


class Metrics:
    """runyard's metrics in a registry of its own (several daemons in one test process)."""

    def __init__(
        self,
        version: str,
        loads: Callable[[], Mapping[str, TaskLoad]],
        runtime_used: Callable[[], Awaitable[Mapping[str, float]]],
    ) -> None:
        self.registry = CollectorRegistry()
        self._runtime_used = runtime_used
        self._runs = Counter(
            "runyard_runs",
            "Runs that ended, per task and end reason.",
            ["task", "end_reason"],
            registry=self.registry,
        )
        self._duration = Histogram(
            "runyard_run_duration_seconds",
            "How long runs ran, start to end, per task (runs that never started left out).",
            ["task"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self._lag = Histogram(
            "runyard_schedule_lag_seconds",
            "How late cron ticks fired: fire time minus planned time (catch-up runs left out).",
            ["task"],
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )
        self._missed = Counter(
            "runyard_missed_ticks",
            "Cron ticks that did not fire (the daemon was down), per task.",
            ["task"],
            registry=self.registry,
        )
        self._v3_triggers = Counter(
            "runyard_v3_triggers",
            "Calls to POST /api/v3/trigger with a valid key, per account and outcome.",
            ["account", "outcome"],
            registry=self.registry,
        )
        self._runtime = Gauge(
            "runyard_v3_runtime_used_minutes",
            "Runtime a v3 account used in its current billing period, in minutes.",
            ["account"],
            registry=self.registry,
        )
        self._notifications = Counter(
            "runyard_notifications",
            "Notifications handed to a notifier, per notifier and outcome.",
            ["notifier", "outcome"],
            registry=self.registry,
        )
        self._store_write = Histogram(
            "runyard_store_write_seconds",
            "How long one group commit of run changes took.",
            buckets=WRITE_BUCKETS,
            registry=self.registry,
        )
        build = Gauge(
            "runyard_build_info",
            "Always 1; the labels say which runyard serves.",
            ["version"],
            registry=self.registry,
        )
        build.labels(version=version).set(1)
        self.registry.register(_Now(loads))

    # ----- the engine's observer ------------------------------------------------

    def run_ended(self, run: Run) -> None:
        reason = (run.end_reason or EndReason.FAILED).value
        self._runs.labels(task=run.task_name, end_reason=reason).inc()
        duration_ms = run.duration_ms
        if duration_ms is not None:
            self._duration.labels(task=run.task_name).observe(duration_ms / 1000)

    def cron_fired(self, task_name: str, lag_seconds: float) -> None:
        self._lag.labels(task=task_name).observe(lag_seconds)

    def ticks_missed(self, task_name: str, count: int) -> None:
        self._missed.labels(task=task_name).inc(count)

    def store_written(self, seconds: float) -> None:
        self._store_write.observe(seconds)

    # ----- the v3 service and notifications ------------------------------------

    def v3_trigger(self, account: str, outcome: str) -> None:
        self._v3_triggers.labels(account=account, outcome=outcome).inc()

    @staticmethod
    def v3_outcome_of_status(status: int) -> str:
        """The outcome label of a v3 trigger refused with HTTP `status`."""
        return _OUTCOME_BY_STATUS.get(status, "error")

    def notification(self, notifier: str, outcome: str) -> None:
        self._notifications.labels(notifier=notifier, outcome=outcome).inc()

    # ----- the scrape -------------------------------------------------------------

    async def exposition(self) -> bytes:
        """The registry in Prometheus text format, runtime used brought up to date first."""
        used = await self._runtime_used()
        self._runtime.clear()  # an account removed by a reload leaves the figures
        for account, minutes in used.items():
            self._runtime.labels(account=account).set(minutes)
        return generate_latest(self.registry)
