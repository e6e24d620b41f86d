"""From domain objects to the REST API's bodies (api/schemas.py): runs, tasks, reloads and more."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from runyard.api import schemas
from runyard.api.deps import schema_url
from runyard.domain import models as domain
from runyard.domain import notifications as domain_notifications
from runyard.domain.models import ParamPassing
from runyard.domain.reload import ReloadOutcome
from runyard.store.nodes import NodeInfo


def _seconds(duration: timedelta | None) -> float | None:
    return None if duration is None else duration.total_seconds()


def run_body(run: domain.Run, base: str, *, detail: bool = False) -> schemas.Run:
    """Return the API view of `run`; `detail` adds the input data."""
    return schemas.Run(
        schema_=schema_url(base, "Run"),
        id=run.id,
        task_name=run.task_name,
        kind=run.kind,
        status=run.status,
        end_reason=run.end_reason,
        exit_code=run.exit_code,
        created_at=run.created_at,
        start_at=run.start_at,
        end_at=run.end_at,
        replica_index=run.replica_index,
        retry_attempt=run.retry_attempt,
        retry_of_run_id=run.retry_of_run_id,
        triggered_by=run.triggered_by,
        external_execution_id=run.external_execution_id,
        duration_ms=run.duration_ms,
        params=dict(run.params),
        description=run.description,
        input_data=run.input_data if detail else None,
        output_data=run.output_data if detail else None,
        account=run.account,
        node=run.node,
    )


def run_json(run: domain.Run, base: str) -> dict[str, Any]:
    """Return the JSON object of `run`, as the run endpoints send it."""
    return run_body(run, base).model_dump(mode="json", by_alias=True, exclude_none=True)


def task_body(
    task: domain.TaskDefinition,
    counts: tuple[int, int],
    schedule_state: tuple[bool, datetime | None],
    base: str,
) -> schemas.Task:
    """Return the API view of `task` with its (running, queued) counts and (paused, next run)."""
    running, queued = counts
    paused, next_run_at = schedule_state
    schedule = task.schedule
    return schemas.Task(
        schema_=schema_url(base, "Task"),
        name=task.name,
        automation=task.display_name,
        description=task.description,
        run=task.run,
        shell=task.shell,
        working_dir=task.working_dir,
        timeout=_seconds(task.timeout),
        graceful_stop=task.graceful_stop.total_seconds(),
        stop_signal=task.stop_signal,
        success_exit_codes=list(task.success_exit_codes),
        max_concurrent=task.max_concurrent,
        max_queued=task.max_queued,
        on_overlap=task.on_overlap,
        retry_attempts=task.retry_attempts,
        retry_delay=task.retry_delay.total_seconds(),
        retry_backoff=task.retry_backoff,
        replicas=task.replicas,
        log_max_size=task.log_max_size,
        log_on_full=task.log_on_full,
        keep_runs=task.keep_runs,
        keep_for=_seconds(task.keep_for),
        params=[
            schemas.TaskParam(
                name=spec.name,
                passing=spec.passing,
                env=spec.env_name if spec.passing is ParamPassing.ENV else "",
                default=spec.default,
                required=spec.required,
                choices=list(spec.choices),
            )
            for spec in task.params
        ],
        cron=schedule.expression if schedule is not None else None,
        timezone=schedule.timezone if schedule is not None else None,
        jitter=task.jitter.total_seconds(),
        run_on_start=task.run_on_start,
        catch_up=task.catch_up,
        max_catch_up_runs=task.max_catch_up_runs,
        paused=paused,
        next_run_at=None if paused else next_run_at,
        active_runs=running,
        queued_runs=queued,
    )


def reload_body(outcome: ReloadOutcome, base: str) -> schemas.ReloadResponseBody:
    """Return the API view of what `Runyard.reload` reported."""
    return schemas.ReloadResponseBody(
        schema_=schema_url(base, "ReloadResponseBody"), **dataclasses.asdict(outcome)
    )


def notifications_body(
    found: Sequence[domain_notifications.Notification], total: int, dropped: int, base: str
) -> schemas.NotificationsResponseBody:
    """Return the API body of one page of notifications."""
    return schemas.NotificationsResponseBody(
        schema_=schema_url(base, "NotificationsResponseBody"),
        notifications=[
            schemas.Notification(
                id=item.id,
                created_at=item.created_at,
                kind=item.kind,
                task_name=item.task_name,
                run_id=item.run_id,
                count=item.count,
                title=item.title,
                body=item.body,
                notifiers=list(item.notifiers),
                status=item.status,
                deliveries=[
                    schemas.NotificationDelivery(
                        notifier=d.notifier,
                        url=d.url,
                        outcome=d.outcome,
                        attempts=d.attempts,
                        error=d.error,
                    )
                    for d in item.deliveries
                ],
                updated_at=item.updated_at or item.created_at,
            )
            for item in found
        ],
        total=total,
        dropped=dropped,
    )


def cluster_body(node: str, nodes: Sequence[NodeInfo], base: str) -> schemas.ClusterResponseBody:
    """Return the API view of the registered nodes, as `node` answers it."""
    return schemas.ClusterResponseBody(
        schema_=schema_url(base, "ClusterResponseBody"),
        node=node,
        nodes=[
            schemas.ClusterNode(
                name=info.name,
                url=info.url,
                started_at=info.started_at,
                lease_age_seconds=None if info.lease_age is None else round(info.lease_age, 3),
                lease_seconds=info.lease_seconds,
                expired=info.expired,
                running_runs=info.running_runs,
                config_hash=info.config_hash,
                version=info.version,
            )
            for info in nodes
        ],
        config_mismatch=len({info.config_hash for info in nodes}) > 1,
    )
