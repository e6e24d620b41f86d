"""Each process lifetime of a service's instance, as a run: its start and its end.

A lifetime is recorded like a task's run (docs/services.md): `task_name` is
the service's name (the config refuses a name shared by a task and a
service), `replica_index` the instance's index, `triggered_by` `service`. Its
row is written `running` right before the spawn and ended with the exit code,
the end reason and a description; a spawn that fails is one ended row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from ulid import ULID

from runyard import __version__
from runyard.domain.describe import describe_service_start
from runyard.domain.models import EXIT_CRASHED, EndReason, Run, RunStatus, TriggeredBy
from runyard.domain.services import InstanceState
from runyard.engine.runs import ended
from runyard.services.supervisor import ServiceLifetime

# Ended lifetimes retention keeps per service (the newest; rows and logs). A
# service has no keep_runs of its own: its history is bounded all the same, so
# a process restarted every minute for a year does not fill the disk.
LIFETIMES_KEPT = 1000


def lifetime_run(run_id: str, service: str, index: int, now: datetime) -> Run:
    """Return the run of a lifetime about to start, as it is recorded: `running`."""
    return Run(
        id=run_id,
        task_name=service,
        status=RunStatus.RUNNING,
        created_at=now,
        triggered_by=TriggeredBy.SERVICE,
        start_at=now,
        replica_index=index,
        description=describe_service_start(__version__, service, index),
    )


@dataclass(frozen=True)
class NotedStart:
    """A line of `services.log`: a lifetime about to start, as the daemon noted it."""

    run_id: str
    service: str | None  # None: a line of an older daemon, which noted the id only
    index: int = 0


def start_note(run: Run) -> str:
    """Return the `services.log` line of a lifetime's run: its id, service and index.

    Noted right before the spawn, before the run's row is committed: a daemon
    killed in between leaves the next one what it needs to record the run.
    """
    return f"{run.id} {run.task_name} {run.replica_index}"


def read_note(line: str) -> NotedStart | None:
    """Return the start a `services.log` line notes, or None for a line not understood."""
    parts = line.split()
    if len(parts) == 1:
        return NotedStart(parts[0], None)
    if len(parts) == 3 and parts[2].isdigit():
        return NotedStart(parts[0], parts[1], int(parts[2]))
    return None


def crashed_unrecorded(note: NotedStart, groups: Sequence[int], now: datetime) -> Run:
    """Return the run of a lifetime whose start never reached the store, ended `crashed`.

    Its creation time is the one its id carries (a ULID starts with it).
    """
    assert note.service is not None
    created = ULID.from_str(note.run_id).datetime
    run = lifetime_run(note.run_id, note.service, note.index, created)
    detail = "Its start was not stored before the daemon died."
    if groups:
        killed = ", ".join(str(group) for group in groups)
        detail += f" Processes it left running (process group {killed}) were killed."
    return ended(run, EndReason.CRASHED, EXIT_CRASHED, now, detail=detail)


def ended_lifetime(run: Run, lifetime: ServiceLifetime, *, daemon_stopping: bool) -> Run:
    """Return the run of `lifetime` ended: exit code, end reason, end time and why.

    A stop made by the daemon's shutdown ends as `daemon_stopped`, as a task's
    run would; an operator's stop (or a reload) stays `stopped`.
    """
    reason = lifetime.end_reason
    if daemon_stopping and reason is EndReason.STOPPED:
        reason = EndReason.DAEMON_STOPPED
    details = []
    if reason is EndReason.UNHEALTHY and lifetime.last_probe:
        details.append(f"Last health check: {lifetime.last_probe}.")
    if reason not in (EndReason.STOPPED, EndReason.DAEMON_STOPPED) and lifetime.description:
        why = lifetime.description[:1].upper() + lifetime.description[1:]
        details.append(f"{why} (instance now {lifetime.state_after.value}).")
    elif lifetime.state_after is InstanceState.FATAL:
        details.append("The instance is now fatal.")
    return ended(
        run,
        reason,
        lifetime.exit_code,
        lifetime.ended_at,
        detail="\n".join(details),
        duration=lifetime.ended_at - lifetime.started_at,
        start_at=min(run.start_at or lifetime.started_at, lifetime.started_at),
    )


def fatal_detail(lifetime: ServiceLifetime) -> str:
    """Return the sentence of a `fatal` notification: which instance gave up, and why."""
    why = f": {lifetime.description}" if lifetime.description else ""
    return (
        f"Instance {lifetime.index} of service {lifetime.service} is fatal{why}. "
        f"runyard will not start it again until it is started by hand "
        f"(runyard start {lifetime.service})."
    )
