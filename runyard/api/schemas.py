"""Response and request bodies of the REST API.

Field names and enums follow the runs-list spec exactly; every body carries
a `$schema` URL that `GET /schemas/<Name>.json` serves. api/bodies.py builds
them from domain objects; api/sse.py describes the event streams.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema
from pydantic.json_schema import SkipJsonSchema

from runyard.domain.models import (
    CatchUp,
    EndReason,
    LogOnFull,
    OverlapPolicy,
    ParamPassing,
    RetryBackoff,
    RunKind,
    RunStatus,
    TriggeredBy,
)
from runyard.domain.run_environment import OUTPUT_DIR_ENV


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
    kind: RunKind = Field(
        RunKind.TASK,
        description="task: a run of the task `task_name`; service: one process lifetime of an "
        "instance (replica_index) of the service `task_name` (triggered_by service)",
    )
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
        description=f"What the run wrote into ${OUTPUT_DIR_ENV}, by token (run detail only)",
    )
    account: str | SkipJsonSchema[None] = Field(
        None, description="The v3 account that triggered the run (triggered_by=cloud)"
    )
    node: str | SkipJsonSchema[None] = Field(
        None,
        description="The node that admitted and started the run (several daemons on one "
        "PostgreSQL); absent on SQLite",
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


class ClusterNode(_Body):
    """One daemon sharing the database."""

    name: str = Field(description="[daemon] node_name (default host:port)")
    url: str = Field(description="Where the node answers: its external_url, else host:port")
    started_at: UtcDateTime
    lease_age_seconds: float | None = Field(
        description="Seconds since the node last renewed its lease, by the database's clock "
        "(null on SQLite: one daemon, no lease)"
    )
    lease_seconds: float | None = Field(
        description="How long its lease lasts unrenewed (null on SQLite)"
    )
    expired: bool = Field(
        description="The lease expired: another node is about to take its runs over"
    )
    running_runs: int = Field(description="Runs this node has running")
    config_hash: str = Field(
        description="Hash of its tasks, services, accounts and notifications; "
        "nodes that differ run different configs"
    )
    version: str = Field(description="runyard version of the node")


class ClusterResponseBody(_Body):
    """The nodes on this database (on SQLite, this daemon alone)."""

    schema_: SchemaField = None
    node: str = Field(description="The node that answered")
    nodes: list[ClusterNode] = Field(description="Every registered node, by name")
    config_mismatch: bool = Field(description="Not every node has the same config_hash")


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


class RunOutput(_Body):
    schema_: SchemaField = None
    run_id: str
    output_data: dict[str, list[list[str]]] = Field(
        description="Rows by output token: what the run wrote so far while it runs, "
        "all of it once it ended"
    )
    finished: bool = Field(description="True when the run has ended: the output is final")


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
