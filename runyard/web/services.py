"""The services pages: every service with its instances, one service's page, and their actions.

The pages read `Runyard.services` (the daemon's `DaemonServices`) as the API
does; Start, Stop and Restart call the same methods as
`POST /api/services/{name}/start|stop|restart`. A service's lifetimes are
runs whose task name is the service's name, read as the task page reads its runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import Response

from runyard.domain import words
from runyard.domain.services import Instance, InstanceState, ServiceDefinition, is_ready
from runyard.exceptions import NotFound, RunyardError
from runyard.store import dashboard as reads
from runyard.web.pages import (
    ServiceNamePath,
    context,
    current_session,
    form_value,
    not_found,
    read_form,
    runyard_of,
    see_other,
)
from runyard.web.render import page
from runyard.web.session import safe_next

router = APIRouter(include_in_schema=False)

# What `DaemonServices` answers (its ServiceStatus): a definition and its instances now.
ServiceStatus = tuple[ServiceDefinition, list[Instance]]

LIFETIMES = 20  # recent lifetimes on a service's page
# How often the services pages refresh themselves: a probe's result or a
# restart is no run event, so the pages poll rather than follow the event stream.
POLL_MS = 2000


@dataclass(frozen=True)
class ServiceRow:
    """A service as its pages show it: its definition, its instances, whether it is ready."""

    definition: ServiceDefinition
    instances: list[Instance]
    ready: bool  # every instance healthy (or running, without a health check)


def _row(status: ServiceStatus) -> ServiceRow:
    definition, instances = status
    return ServiceRow(definition, instances, is_ready(definition, instances))


@router.get("/services")
async def services_page(request: Request) -> Response:
    """Every service with its instances' state, pid, restarts, uptime and last health check."""
    session = current_session(request)
    rows = [_row(status) for status in runyard_of(request).services.list()]
    return page(
        request,
        "services.html",
        context(
            request,
            session,
            title="Services",
            services=rows,
            ready=sum(1 for row in rows if row.ready),
            poll_ms=POLL_MS,
        ),
    )


@router.get("/services/{serviceName}")
async def service_page(request: Request, service_name: ServiceNamePath) -> Response:
    """One service: its instances and actions, its definition, its dependencies, its lifetimes."""
    session = current_session(request)
    runyard = runyard_of(request)
    try:
        row = _row(runyard.services.get(service_name))
    except NotFound:
        return not_found(request, session, f"No service is called {service_name}.")
    everything = {status.definition.name: _row(status) for status in runyard.services.list()}
    name = row.definition.name
    lifetimes = (
        await asyncio.to_thread(reads.recent_runs_of_tasks, runyard.store, [name], LIFETIMES)
    )[name]
    return page(
        request,
        "service.html",
        context(
            request,
            session,
            title=f"Service {name}",
            service=row,
            env=words.masked_env(row.definition.env),
            # A dependency missing from the config holds nothing back: shown as such.
            dependencies=[(dep, everything.get(dep)) for dep in row.definition.depends_on],
            dependants=sorted(
                other for other, found in everything.items() if name in found.definition.depends_on
            ),
            lifetimes=lifetimes,
            poll_ms=POLL_MS,
        ),
    )


def _states(status: ServiceStatus) -> str:
    """Return the instances' states in words: `healthy`, or `0: healthy, 1: waiting for db`."""
    _, instances = status

    def one(instance: Instance) -> str:
        if instance.state is InstanceState.WAITING and instance.reason:
            return instance.reason
        return instance.state.value

    if len(instances) == 1:
        return one(instances[0])
    return ", ".join(f"{instance.index}: {one(instance)}" for instance in instances)


async def _act(
    request: Request,
    service_name: str,
    action: Callable[[str], Awaitable[ServiceStatus]],
    done: str,
) -> Response:
    session = current_session(request)
    form = await read_form(request, session)
    back = safe_next(form_value(form, "back", f"/services/{service_name}"))
    try:
        status = await action(service_name)
    except NotFound:
        return not_found(request, session, f"No service is called {service_name}.")
    except RunyardError as error:
        session.flashes.append(("error", f"{service_name}: {error}"))
        return see_other(back)
    session.flashes.append(("ok", f"{done} {service_name} ({_states(status)})."))
    return see_other(back)


@router.post("/services/{serviceName}/start")
async def service_start(request: Request, service_name: ServiceNamePath) -> Response:
    """Start the instances that are not up, fatal ones included."""
    return await _act(request, service_name, runyard_of(request).services.start_service, "Started")


@router.post("/services/{serviceName}/stop")
async def service_stop(request: Request, service_name: ServiceNamePath) -> Response:
    """Stop every instance (the page asks for confirmation first); answer once they are gone."""
    return await _act(request, service_name, runyard_of(request).services.stop_service, "Stopped")


@router.post("/services/{serviceName}/restart")
async def service_restart(request: Request, service_name: ServiceNamePath) -> Response:
    """Stop every instance, then start them again."""
    services = runyard_of(request).services
    return await _act(request, service_name, services.restart_service, "Restarted")
