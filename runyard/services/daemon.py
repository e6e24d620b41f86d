"""The daemon's services: its ServiceSupervisor, and what a crashed daemon left running.

`Runyard` (app.py) holds one `DaemonServices`: started after the engine's
recovery, stopped before the engine drains, handed the new definitions at
each reload. The API and the CLI reach the services through it.

Right before each spawn, the process's run id goes into `services.log` in
the data dir (the same memory-mapped list as the engine's `started.log`). A
daemon killed with -9 leaves its services running, each carrying its run id
in `RUNYARD_RUN_ID`; the next daemon kills them by that id before starting
fresh ones, so no second instance finds its port taken.

Each process's lifetime is a run (`services/lifetimes.py`), recorded through
the engine's `RunRecorder`: its insert (`running`) is queued right before
the spawn, not waited for, so a restart never waits on the database; it is
ended when the process is gone. The `services.log` line (run id, service,
index) is written first: a daemon killed before the insert committed leaves
the next one what it needs to record the lifetime, ended `crashed`. The
engine's recovery ends a row a killed daemon left `running` as `crashed`,
like any run. An instance that becomes `fatal` is signalled
(`fatal`) to the event listeners, the notifications among them, once its
last run's end is stored.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple

from runyard.clock import Clock, utc_now
from runyard.domain.models import Run
from runyard.domain.services import (
    Instance,
    InstanceState,
    ServiceChanges,
    ServiceDefinition,
    diff_services,
)
from runyard.engine.events import EventHub
from runyard.engine.log_follow import LogFollowers
from runyard.engine.recorder import RunRecorder
from runyard.engine.start_log import StartLog
from runyard.engine.strays import kill_strays
from runyard.exceptions import NotFound, StoreError
from runyard.services.lifetimes import (
    LIFETIMES_KEPT,
    NotedStart,
    crashed_unrecorded,
    ended_lifetime,
    fatal_detail,
    lifetime_run,
    read_note,
    start_note,
)
from runyard.services.supervisor import ServiceLifetime, ServiceSupervisor

SERVICES_LOG = "services.log"  # in the data dir: the run ids of the services' processes
# How long the daemon's shutdown waits for the ends of its services' runs to
# commit (then the engine's writer has its own last try).
END_WAIT_SECONDS = 10.0
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
        recorder: RunRecorder,
        events: EventHub,
        environ: Mapping[str, str] = os.environ,
        clock: Clock = utc_now,
    ) -> None:
        self._live: dict[str, Run] = {}  # the runs of the processes up now, by id
        self._started = StartLog(
            data_dir / SERVICES_LOG, lambda: [start_note(run) for run in self._live.values()]
        )
        self._recorder = recorder
        self._events = events
        self._clock = clock
        self._ending: set[asyncio.Task[None]] = set()  # ends being stored
        self._stopping = False  # the daemon shuts down: its stops end as daemon_stopped
        recorder.keep(dict.fromkeys(services, LIFETIMES_KEPT))
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
        """Kill what a dead daemon's services left running, then start the autostart ones.

        Lifetimes whose `running` row the dead daemon never committed are
        recorded here, ended `crashed` (the engine's recovery has ended the
        rows that were committed).
        """
        notes = [note for line in await asyncio.to_thread(self._started.leftovers)
                 if (note := read_note(line)) is not None]  # fmt: skip
        killed: dict[str, list[int]] = {}
        if notes:
            killed = await asyncio.to_thread(kill_strays, {note.run_id for note in notes})
            for run_id, groups in sorted(killed.items()):
                log.warning(
                    "killed a service process the previous daemon left running "
                    "(run %s, process group %s)",
                    run_id,
                    ", ".join(str(group) for group in groups),
                )
        await self._record_unrecorded(notes, killed)
        self._started.open()
        self.supervisor.start_all()

    async def _record_unrecorded(
        self, notes: list[NotedStart], killed: Mapping[str, list[int]]
    ) -> None:
        named = [note for note in notes if note.service is not None]
        try:
            missing = await self._recorder.unrecorded([note.run_id for note in named])
            now = self._clock()
            await self._recorder.crashed(
                [
                    crashed_unrecorded(note, killed.get(note.run_id, []), now)
                    for note in named
                    if note.run_id in missing
                ]
            )
        except StoreError as error:  # history only: the services start all the same
            log.error("could not record the lifetimes a crashed daemon left: %s", error)

    async def stop(self) -> None:
        """Stop every service, dependants before their dependencies; store their runs' ends."""
        self._stopping = True
        await self.supervisor.stop_all()
        if self._ending:
            _, late = await asyncio.wait(self._ending, timeout=END_WAIT_SECONDS)
            if late:
                log.warning(
                    "%d service run ends were not stored within %gs; "
                    "the next start ends those runs crashed",
                    len(late),
                    END_WAIT_SECONDS,
                )
        self._started.close()

    async def reload(self, services: Mapping[str, ServiceDefinition]) -> ServiceChanges:
        """Restart changed services, start added ones, stop removed ones; return the changes."""
        changes = diff_services(self.supervisor.services, services)
        self._recorder.keep(dict.fromkeys(services, LIFETIMES_KEPT))
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
        run = lifetime_run(run_id, service.name, index, self._clock())
        self._live[run_id] = run
        self._started.record(start_note(run))
        self._recorder.started(run)

    def live_run(self, run_id: str) -> Run | None:
        """Return the run of a process up now (its row may not be committed yet), or None."""
        return self._live.get(run_id)

    def _ended(self, lifetime: ServiceLifetime) -> None:
        run = self._live.pop(lifetime.run_id, None)
        if run is None:  # cannot happen (on_starting comes first); the end is still told
            run = lifetime_run(lifetime.run_id, lifetime.service, lifetime.index, self._clock())
        ended = ended_lifetime(run, lifetime, daemon_stopping=self._stopping)
        task = asyncio.get_running_loop().create_task(self._record_end(ended, lifetime))
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)

    async def _record_end(self, ended: Run, lifetime: ServiceLifetime) -> None:
        try:
            await self._recorder.ended(ended)
        except Exception:  # noqa: BLE001 - the row stays running: the next start ends it crashed
            log.exception("could not record the end of service run %s", ended.id)
        if lifetime.state_after is InstanceState.FATAL:
            # After the end is stored: the message reads the run it links to.
            self._events.signal(
                "fatal",
                {
                    "task_name": lifetime.service,
                    "run_id": ended.id,
                    "detail": fatal_detail(lifetime),
                },
            )
