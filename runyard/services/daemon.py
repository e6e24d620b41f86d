"""The daemon's services: its ServiceSupervisor, and what a crashed daemon left running.

`Runyard` (app.py) holds one `DaemonServices`: started after the engine's
recovery, stopped before the engine drains, handed the new definitions at
each reload. The API and the CLI reach the services through it.

Right before each spawn, the process's run id goes into `services.log` in
the data dir (the same memory-mapped list as the engine's `started.log`). A
daemon killed with -9 leaves its services running, each carrying its run id
in `RUNYARD_RUN_ID`; the next daemon kills them by that id before starting
fresh ones, so no second instance finds its port taken.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple

from runyard.domain.services import Instance, ServiceChanges, ServiceDefinition, diff_services
from runyard.engine.log_follow import LogFollowers
from runyard.engine.start_log import StartLog
from runyard.engine.strays import kill_strays
from runyard.exceptions import NotFound
from runyard.services.supervisor import ServiceLifetime, ServiceSupervisor

SERVICES_LOG = "services.log"  # in the data dir: the run ids of the services' processes
log = logging.getLogger("runyard.services")


class ServiceStatus(NamedTuple):
    """A service as configured, and its instances as they are now."""

    definition: ServiceDefinition
    instances: list[Instance]


class DaemonServices:
    """The services of one daemon: start, stop, reload, and the operations the API offers."""

    def __init__(
        self,
        services: Mapping[str, ServiceDefinition],
        *,
        data_dir: Path,
        log_path: Callable[[str], Path],
        followers: LogFollowers,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        self._live: set[str] = set()  # run ids of the processes up now
        self._started = StartLog(data_dir / SERVICES_LOG, lambda: list(self._live))
        # The supervisor keeps the wall clock: a restart's delay and a good start
        # are measured in real time, whatever clock the engine is given.
        self.supervisor = ServiceSupervisor(
            services,
            logs_dir=data_dir / "logs",
            log_path=log_path,
            followers=followers,
            environ=environ,
            on_starting=self._starting,
            on_ended=self._ended,
        )

    # ----- the daemon's life --------------------------------------------------------

    async def start(self) -> None:
        """Kill what a dead daemon's services left running, then start the autostart ones."""
        leftovers = await asyncio.to_thread(self._started.leftovers)
        if leftovers:
            killed = await asyncio.to_thread(kill_strays, leftovers)
            for run_id, groups in sorted(killed.items()):
                log.warning(
                    "killed a service process the previous daemon left running "
                    "(run %s, process group %s)",
                    run_id,
                    ", ".join(str(group) for group in groups),
                )
        self._started.open()
        self.supervisor.start_all()

    async def stop(self) -> None:
        """Stop every service, dependants before their dependencies."""
        await self.supervisor.stop_all()
        self._started.close()

    async def reload(self, services: Mapping[str, ServiceDefinition]) -> ServiceChanges:
        """Restart changed services, start added ones, stop removed ones; return the changes."""
        changes = diff_services(self.supervisor.services, services)
        await self.supervisor.reload(services)
        return changes

    # ----- what the API offers --------------------------------------------------------

    def list(self) -> list[ServiceStatus]:
        """Return every service, sorted by name."""
        return [self.get(name) for name in sorted(self.supervisor.services)]

    def get(self, name: str) -> ServiceStatus:
        """Return one service; NotFound when there is none of that name."""
        definition = self.supervisor.services.get(name)
        if definition is None:
            raise NotFound("service", name)
        return ServiceStatus(definition, self.supervisor.instances(name))

    async def start_service(self, name: str) -> ServiceStatus:
        """Start the instances not up (a manual start: it revives fatal ones).

        Return once each has taken its first step (`waiting` or `starting`).
        """
        self.get(name)
        self.supervisor.start(name)
        await asyncio.sleep(0)  # the instances' tasks run up to their first wait
        return self.get(name)

    async def stop_service(self, name: str) -> ServiceStatus:
        """Stop every instance and return once their processes are gone."""
        self.get(name)
        await self.supervisor.stop(name)
        return self.get(name)

    async def restart_service(self, name: str) -> ServiceStatus:
        """Stop the service, then start it again."""
        self.get(name)
        await self.supervisor.restart(name)
        await asyncio.sleep(0)
        return self.get(name)

    # ----- each process ---------------------------------------------------------------

    def _starting(self, run_id: str, service: ServiceDefinition, index: int) -> None:
        self._live.add(run_id)
        self._started.record(run_id)

    def _ended(self, lifetime: ServiceLifetime) -> None:
        self._live.discard(lifetime.run_id)
        log.info(
            "service %s[%d] ended (%s, exit code %d), now %s%s",
            lifetime.service,
            lifetime.index,
            lifetime.end_reason,
            lifetime.exit_code,
            lifetime.state_after,
            f": {lifetime.description}" if lifetime.description else "",
        )
