"""Response and request bodies of the REST API, and their conversion from domain objects.

Field names and enums follow the runs-list spec exactly; every body carries
a `$schema` URL that `GET /schemas/<Name>.json` serves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema
from pydantic.json_schema import SkipJsonSchema

from runyard.api.deps import schema_url
from runyard.domain import models as domain
from runyard.domain import notifications as domain_notifications
from runyard.domain.models import (
    CatchUp,
    EndReason,
    LogOnFull,
    OverlapPolicy,
    ParamPassing,
    RetryBackoff,
    RunStatus,
    TriggeredBy,
)


def _rfc3339(at: datetime) -> str:
    # Always UTC with a `Z`, whatever zone the store handed back.
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


UtcDateTime = Annotated[
    datetime,
    PlainSerializer(_rfc3339, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]

SchemaField = Annotated[
    str | SkipJsonSchema[None],
    Field(
        alias="$schema",
        description="A URL to the JSON Schema for this object.",
        json_schema_extra={"format": "uri"},
    ),
]


class _Body(BaseModel):
    # Built by name in code, serialized by alias (`$schema`) on the wire.
    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True)


class ErrorDetail(_Body):
    location: str | None = Field(
        None, description="Where the error occurred, e.g. 'body.items[3].tags' or 'path.thing-id'"
    )
    message: str | None = Field(None, description="Error message text")
    value: Any = Field(None, description="The value at the given location")


class ErrorModel(_Body):
    schema_: SchemaField = None
    type: str = Field(
        "about:blank",
        description="A URI reference to human-readable documentation for the error.",
        json_schema_extra={"format": "uri"},
    )
    title: str | None = Field(
        None,
        description="A short, human-readable summary of the problem type. This value should "
        "not change between occurrences of the error.",
    )
    status: int | None = Field(None, description="HTTP status code")
    detail: str | None = Field(
        None, description="A human-readable explanation specific to this occurrence of the problem."
    )
    instance: str | None = Field(
        None,
        description="A URI reference that identifies the specific occurrence of the problem.",
        # The request's path: a relative reference, not an absolute URI.
        json_schema_extra={"format": "uri-reference"},
    )
    errors: list[ErrorDetail] | None = Field(
        None, description="Optional list of individual error details"
    )


class Run(_Body):
    """One run. Optional fields are omitted while they have no value."""

    schema_: SchemaField = None
    id: str
    task_name: str
    status: RunStatus = Field(description="Run lifecycle phase")
    end_reason: EndReason | SkipJsonSchema[None] = Field(
        None, description="Why the run ended (set when status=ended)"
    )
    exit_code: int
    created_at: UtcDateTime
    start_at: UtcDateTime | SkipJsonSchema[None] = None
    end_at: UtcDateTime | SkipJsonSchema[None] = None
    replica_index: int
    retry_attempt: int
    retry_of_run_id: str | SkipJsonSchema[None] = None
    triggered_by: TriggeredBy = Field(description="How the run was triggered")
    external_execution_id: str | SkipJsonSchema[None] = None
    duration_ms: int | SkipJsonSchema[None] = Field(
        None, description="Wall time from start to end (ended runs)"
    )
    params: dict[str, str] = Field(default_factory=dict, description="Resolved param values")
    description: str = Field("", description="What happened to the run, in plain words")
    input_data: list[list[list[str]]] | SkipJsonSchema[None] = Field(
        None, description="Tables given to the run as input (run detail only)"
    )
    output_data: dict[str, list[list[str]]] | SkipJsonSchema[None] = Field(
        None,
        description="What the run wrote into $RUNYARD_OUTPUT_DIR, by token (run detail only)",
    )
    account: str | SkipJsonSchema[None] = Field(
        None, description="The v3 account that triggered the run (triggered_by=cloud)"
    )


class RunsResponseBody(_Body):
    schema_: SchemaField = None
    runs: list[Run] | None = Field(description="List of runs")
    total: int = Field(description="Total matching runs")


class TaskParam(_Body):
    name: str
    passing: ParamPassing
    env: str = Field(description="Environment variable name (when passing is env)")
    default: str | None
    required: bool
    choices: list[str]


class Task(_Body):
    """A task as configured (durations in seconds), with its live counts."""

    schema_: SchemaField = None
    name: str
    automation: str = Field(description="Display name")
    description: str
    run: str
    shell: str
    working_dir: str | None
    timeout: float | None = Field(description="Seconds per attempt, or null for none")
    graceful_stop: float
    stop_signal: str
    success_exit_codes: list[int]
    max_concurrent: int
    max_queued: int
    on_overlap: OverlapPolicy
    retry_attempts: int
    retry_delay: float
    retry_backoff: RetryBackoff
    replicas: int
    log_max_size: int = Field(description="Bytes")
    log_on_full: LogOnFull
    keep_runs: int | None
    keep_for: float | None
    params: list[TaskParam]
    cron: str | None = Field(description="The schedule as written, or null for none")
    timezone: str | None = Field(description="IANA zone the schedule is read in, or null")
    jitter: float = Field(description="Seconds each tick's start is spread over")
    run_on_start: bool = Field(description="Fire once when the daemon starts")
    catch_up: CatchUp = Field(description="What runs at start for missed ticks")
    max_catch_up_runs: int
    paused: bool = Field(description="True while the schedule is paused")
    next_run_at: UtcDateTime | None = Field(
        description="When the schedule fires next; null when paused or unscheduled"
    )
    active_runs: int = Field(description="Runs running now")
    queued_runs: int = Field(description="Runs waiting for a slot or a retry delay")


class TasksResponseBody(_Body):
    schema_: SchemaField = None
    tasks: list[Task]


class ReloadResponseBody(_Body):
    """What a config reload changed; every list is empty when nothing did."""

    schema_: SchemaField = None
    added: list[str] = Field(description="Tasks added")
    removed: list[str] = Field(description="Tasks removed")
    changed: list[str] = Field(description="Tasks whose definition changed")
    restart_required: list[str] = Field(
        description="Changed daemon settings that apply only at the next restart"
    )
    warnings: list[str] = Field(description="Warnings about the new config")
    skipped_runs: list[str] = Field(
        description="Ids of queued runs of removed tasks, ended as skipped"
    )
    accounts_changed: list[str] = Field(
        default_factory=list,
        description="v3 accounts added, removed or changed (their limits apply at once)",
    )
    services_added: list[str] = Field(default_factory=list, description="Services added, started")
    services_removed: list[str] = Field(
        default_factory=list, description="Services removed, stopped"
    )
    services_changed: list[str] = Field(
        default_factory=list, description="Services whose definition changed, restarted"
    )


# Text the store can hold: what runyard.api.params.StorableText and the domain's
# text rule let through, as far as a JSON Schema can say it (a lone surrogate
# cannot be written in a valid JSON Schema string at all).
NO_NUL_PATTERN = "^[^\\x00]*$"
PARAM_VALUE_SCHEMA: dict[str, Any] = {
    "type": ["string", "number", "boolean"],
    "pattern": NO_NUL_PATTERN,
}
_CELL_SCHEMA: dict[str, Any] = {
    "type": ["string", "number", "boolean", "null"],
    "pattern": NO_NUL_PATTERN,
}
_TABLE_SCHEMA: dict[str, Any] = {"type": "array", "items": {"type": "array", "items": _CELL_SCHEMA}}
INPUT_DATA_SCHEMA: dict[str, Any] = {
    "anyOf": [_TABLE_SCHEMA, {"type": "array", "items": _TABLE_SCHEMA}, {"type": "null"}],
    "description": "Input data: a 2-D array [row][col] (one table) or a 3-D array "
    "(several tables); cells are strings, numbers, booleans or null",
}


class TriggerRequest(_Body):
    """Body of POST /api/tasks/{taskName}/run."""

    model_config = ConfigDict(extra="forbid")
    params: Annotated[
        dict[str, Any],
        WithJsonSchema(
            {
                "type": "object",
                "additionalProperties": PARAM_VALUE_SCHEMA,
                "propertyNames": {"pattern": NO_NUL_PATTERN},
                "description": "Param values: strings, numbers or booleans, by the names "
                "the task declares",
            }
        ),
    ] = Field(default_factory=dict)
    data: Annotated[Any, WithJsonSchema(INPUT_DATA_SCHEMA)] = None


class LogLine(_Body):
    n: int = Field(description="Line number, from 0")
    at: UtcDateTime
    stream: str = Field(description="out, err or sys")
    text: str


class LogPage(_Body):
    schema_: SchemaField = None
    run_id: str
    lines: list[LogLine]
    next: int = Field(description="The `from` that continues after this page")
    total_lines: int
    finished: bool = Field(description="True when the run has ended: no more lines will come")


class Health(_Body):
    schema_: SchemaField = None
    status: str = Field(
        description="ok, or unavailable (answered with 503) when runs cannot be recorded"
    )
    version: str
    uptime_seconds: float
    reason: str | None = Field(None, description="What is wrong when status is unavailable")
    checks: dict[str, str] = Field(
        default_factory=dict,
        description="Each check (database, disk): ok, or what is wrong with it",
    )


def _sse_event(kinds: list[str], data_schema: dict[str, Any], *, numbered: bool) -> dict[str, Any]:
    """Return the schema of one server-sent event: its kind, id and JSON data."""
    properties: dict[str, Any] = {
        "event": {"enum": kinds},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": data_schema,
        },
        # A client keeps the last id it saw; an event without one repeats it.
        "id": {"type": "string", "pattern": "^[0-9]+$"},
    }
    required = ["event", "data", "id"] if numbered else ["event", "data"]
    return {"type": "object", "properties": properties, "required": required}


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


# The events of `GET /api/runs/{runId}/log/stream`: a `line` per log line
# (id = its number), then `done` with the ended run.
LOG_STREAM_CONTENT: dict[str, Any] = {
    "text/event-stream": {
        "schema": {
            "description": "One event per log line, then `done` with the ended run",
            "anyOf": [
                _sse_event(["line"], _ref(LogLine), numbered=True),
                _sse_event(["done"], _ref(Run), numbered=False),
            ],
        }
    }
}

_EVENT_DATA_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "task_name": {"type": "string"},
        "status": {"enum": [status.value for status in RunStatus]},
        "end_reason": {"enum": [*(reason.value for reason in EndReason), None]},
        "exit_code": {"type": "integer"},
    },
    "required": ["id", "task_name", "status", "end_reason", "exit_code"],
}

# The events of `GET /api/events`, numbered in the order they happened.
EVENT_STREAM_CONTENT: dict[str, Any] = {
    "text/event-stream": {
        "schema": _sse_event(
            ["run.created", "run.started", "run.ended"], _EVENT_DATA_SCHEMA, numbered=True
        )
    }
}


# Every model `GET /schemas/<Name>.json` serves.
class NotificationDelivery(_Body):
    notifier: str = Field(description="The notifier ([notifiers.<name>]) it went to")
    url: str = Field(description="The Apprise URL, passwords and tokens hidden")
    outcome: str = Field(description="delivered, failed or dropped")
    attempts: int = Field(description="Attempts made (retries included)")
    error: str = Field(description="Why the last attempt failed; empty when delivered")


class Notification(_Body):
    id: str
    created_at: UtcDateTime
    kind: str = Field(description="succeeded, failed, timeout, crashed, ... (README)")
    task_name: str | None = Field(description="The task it is about, if any")
    run_id: str | None = Field(description="The run it is about (the latest, for a summary)")
    count: int = Field(description="Events this notification stands for (repeats folded in)")
    title: str
    body: str
    notifiers: list[str] = Field(description="Notifiers its routes chose")
    status: str = Field(description="pending, delivered, failed or dropped")
    deliveries: list[NotificationDelivery]
    updated_at: UtcDateTime


class NotificationsResponseBody(_Body):
    schema_: SchemaField = None
    notifications: list[Notification] = Field(description="Newest first")
    total: int = Field(description="Total matching notifications")
    dropped: int = Field(
        description="Notifications dropped since the daemon started (pending queue full)"
    )


SCHEMAS: dict[str, type[BaseModel]] = {
    model.__name__: model
    for model in (
        ErrorDetail,
        ErrorModel,
        Health,
        LogLine,
        LogPage,
        Notification,
        NotificationDelivery,
        NotificationsResponseBody,
        ReloadResponseBody,
        Run,
        RunsResponseBody,
        Task,
        TaskParam,
        TasksResponseBody,
        TriggerRequest,
    )
}


def _seconds(duration: timedelta | None) -> float | None:
    return None if duration is None else duration.total_seconds()


def run_body(run: domain.Run, base: str, *, detail: bool = False) -> Run:
    """Return the API view of `run`; `detail` adds the input data."""
    return Run(
        schema_=schema_url(base, "Run"),
        id=run.id,
        task_name=run.task_name,
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
    )


def run_json(run: domain.Run, base: str) -> dict[str, Any]:
    """Return the JSON object of `run`, as the run endpoints send it."""
    return run_body(run, base).model_dump(mode="json", by_alias=True, exclude_none=True)


def task_body(
    task: domain.TaskDefinition,
    counts: tuple[int, int],
    schedule_state: tuple[bool, datetime | None],
    base: str,
) -> Task:
    """Return the API view of `task` with its (running, queued) counts and (paused, next run)."""
    running, queued = counts
    paused, next_run_at = schedule_state
    schedule = task.schedule
    return Task(
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
            TaskParam(
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


def reload_body(changes: Mapping[str, Sequence[str]], base: str) -> ReloadResponseBody:
    """Return the API view of what `Runyard.reload` reported."""
    return ReloadResponseBody(
        schema_=schema_url(base, "ReloadResponseBody"),
        added=list(changes.get("added", ())),
        removed=list(changes.get("removed", ())),
        changed=list(changes.get("changed", ())),
        restart_required=list(changes.get("restart_required", ())),
        warnings=list(changes.get("warnings", ())),
        skipped_runs=list(changes.get("skipped_runs", ())),
        accounts_changed=list(changes.get("accounts_changed", ())),
        services_added=list(changes.get("services_added", ())),
        services_removed=list(changes.get("services_removed", ())),
        services_changed=list(changes.get("services_changed", ())),
    )


def notifications_body(
    found: Sequence[domain_notifications.Notification], total: int, dropped: int, base: str
) -> NotificationsResponseBody:
    """Return the API body of one page of notifications."""
    return NotificationsResponseBody(
        schema_=schema_url(base, "NotificationsResponseBody"),
        notifications=[
            Notification(
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
                    NotificationDelivery(
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
