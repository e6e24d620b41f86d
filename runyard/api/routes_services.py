"""Services: list and describe them with their instances; start, stop and restart them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import Field

from runyard.api import schemas
from runyard.api.deps import RunyardDep, SchemaBase, schema_url
from runyard.api.errors import problem_responses
from runyard.api.params import StorableText
from runyard.api.schemas import SchemaField, UtcDateTime
from runyard.domain.models import LogOnFull, RetryBackoff
from runyard.domain.services import (
    HealthCheck,
    Instance,
    InstanceState,
    ProbeKind,
    RestartPolicy,
    ServiceDefinition,
)

router = APIRouter(tags=["services"], responses=problem_responses(400, 401, 404, 422, 500))

ServiceNamePath = Annotated[
    str,
    Path(
        alias="serviceName",
        description="Service name",
        min_length=1,
        max_length=100,
        pattern=r"^[a-zA-Z0-9._-]+$",
    ),
    StorableText,
]


class ServiceHealthCheck(schemas._Body):
    """A service's health check (durations in seconds)."""

    kind: ProbeKind = Field(description="http (a GET), tcp (a connect) or run (a command)")
    target: str = Field(description="The URL, the host:port, or the command")
    interval: float
    timeout: float
    failures: int = Field(description="Failed probes in a row that make an instance unhealthy")
    start_period: float = Field(description="Seconds after a start when failed probes don't count")


class ServiceDefinitionBody(schemas._Body):
    """A service as configured (durations in seconds); its env is not shown."""

    run: str
    instances: int
    restart: RestartPolicy
    restart_delay: float
    restart_backoff: RetryBackoff
    restart_attempts: int
    healthy_after: float
    depends_on: list[str]
    priority: int
    autostart: bool
    graceful_stop: float
    stop_signal: str
    working_dir: str | None
    shell: str
    user: str | None
    log_max_size: int = Field(description="Bytes")
    log_on_full: LogOnFull
    health_check: ServiceHealthCheck | None


class ServiceInstance(schemas._Body):
    """One instance of a service, as it is now."""

    index: int = Field(description="0-based; the process sees it as RUNYARD_REPLICA_INDEX")
    state: InstanceState
    reason: str = Field(description="Why it is in this state, in a sentence")
    pid: int | None = Field(description="Its process, while it has one")
    started_at: UtcDateTime | None = Field(description="When its current process started")
    restarts: int = Field(description="Starts after the first, since the daemon started")
    failures: int = Field(description="Failed starts in a row")
    restart_at: UtcDateTime | None = Field(description="In backoff: when it starts again")
    last_exit_code: int | None
    health_ok: bool | None = Field(description="Whether the last probe passed; null before one")
    health: str = Field(description="The last probe's message")
    run_id: str | None = Field(
        description="The run recording its current process, or its last one (follow its log "
        "at /api/runs/{runId}/log/stream); null before its first start"
    )


class Service(schemas._Body):
    schema_: SchemaField = None
    name: str
    definition: ServiceDefinitionBody
    instances: list[ServiceInstance]


class ServicesResponseBody(schemas._Body):
    schema_: SchemaField = None
    services: list[Service]


# Registered with the other bodies, so their `$schema` URLs resolve.
schemas.SCHEMAS.update(
    {
        model.__name__: model
        for model in (
            Service,
            ServiceDefinitionBody,
            ServiceHealthCheck,
            ServiceInstance,
            ServicesResponseBody,
        )
    }
)


@router.get("/api/services", summary="List services")
async def list_services(runyard: RunyardDep, base: SchemaBase) -> ServicesResponseBody:
    """Return every configured service, sorted by name, with its instances."""
    return ServicesResponseBody(
        schema_=schema_url(base, "ServicesResponseBody"),
        services=[_service_body(*found, base) for found in runyard.services.list()],
    )


@router.get("/api/services/{serviceName}", summary="Get a service")
async def get_service(name: ServiceNamePath, runyard: RunyardDep, base: SchemaBase) -> Service:
    """Return one service as configured, with its instances' state, pid and health."""
    return _service_body(*runyard.services.get(name), base)


@router.post("/api/services/{serviceName}/start", summary="Start a service")
async def start_service(name: ServiceNamePath, runyard: RunyardDep, base: SchemaBase) -> Service:
    """Start the instances that are not up, fatal ones included; answer at once.

    Each instance waits for the service's dependencies first (state `waiting`).
    """
    return _service_body(*await runyard.services.start_service(name), base)


@router.post("/api/services/{serviceName}/stop", summary="Stop a service")
async def stop_service(name: ServiceNamePath, runyard: RunyardDep, base: SchemaBase) -> Service:
    """Stop every instance (stop_signal, then SIGKILL after graceful_stop); answer once stopped.

    A stopped service stays stopped until started again (or the daemon restarts).
    """
    return _service_body(*await runyard.services.stop_service(name), base)


@router.post("/api/services/{serviceName}/restart", summary="Restart a service")
async def restart_service(name: ServiceNamePath, runyard: RunyardDep, base: SchemaBase) -> Service:
    """Stop every instance, then start them again; answer once they are starting."""
    return _service_body(*await runyard.services.restart_service(name), base)


def _service_body(
    definition: ServiceDefinition, instances: Sequence[Instance], base: str
) -> Service:
    return Service(
        schema_=schema_url(base, "Service"),
        name=definition.name,
        definition=_definition_body(definition),
        instances=[_instance_body(instance) for instance in instances],
    )


def _definition_body(service: ServiceDefinition) -> ServiceDefinitionBody:
    return ServiceDefinitionBody(
        run=service.run,
        instances=service.instances,
        restart=service.restart,
        restart_delay=_seconds(service.restart_delay),
        restart_backoff=service.restart_backoff,
        restart_attempts=service.restart_attempts,
        healthy_after=_seconds(service.healthy_after),
        depends_on=list(service.depends_on),
        priority=service.priority,
        autostart=service.autostart,
        graceful_stop=_seconds(service.graceful_stop),
        stop_signal=service.stop_signal,
        working_dir=service.working_dir,
        shell=service.shell,
        user=service.user,
        log_max_size=service.log_max_size,
        log_on_full=service.log_on_full,
        health_check=_check_body(service.health_check),
    )


def _check_body(check: HealthCheck | None) -> ServiceHealthCheck | None:
    if check is None:
        return None
    return ServiceHealthCheck(
        kind=check.kind,
        target=check.target,
        interval=_seconds(check.interval),
        timeout=_seconds(check.timeout),
        failures=check.failures,
        start_period=_seconds(check.start_period),
    )


def _instance_body(instance: Instance) -> ServiceInstance:
    return ServiceInstance(
        index=instance.index,
        state=instance.state,
        reason=instance.reason,
        pid=instance.pid,
        started_at=instance.started_at,
        restarts=instance.restarts,
        failures=instance.failures,
        restart_at=instance.restart_at,
        last_exit_code=instance.last_exit_code,
        health_ok=instance.last_probe_ok,
        health=instance.last_probe,
        run_id=instance.run_id,
    )


def _seconds(duration: timedelta) -> float:
    return duration.total_seconds()
