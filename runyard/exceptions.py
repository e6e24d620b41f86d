"""Every exception runyard raises on purpose."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runyard.domain.models import Run


class RunyardError(Exception):
    """Base class for runyard's own errors."""


class ConfigError(RunyardError):
    """The config file is invalid; `problems` lists every problem found."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        joined = "\n".join(f"  {problem}" for problem in problems)
        super().__init__(f"{path}: invalid config:\n{joined}")


class StoreError(RunyardError):
    """The database failed or answered something unexpected."""


class StoreUnavailable(StoreError):
    """The database cannot take the request now; the same request can succeed later.

    The connection was lost or refused, the server is restarting, SQLite is
    locked by another writer, the disk is full. `maybe_committed` is True when
    the failure came while committing over a network: the transaction may
    have landed all the same. `retry_after` is the seconds a client is told to
    wait before trying again.
    """

    retry_after = 5.0

    def __init__(self, message: str, *, maybe_committed: bool = False) -> None:
        self.maybe_committed = maybe_committed
        super().__init__(message)


class DiskFull(StoreUnavailable):
    """The disk that holds runyard's data (or its database) has no space left."""

    retry_after = 30.0


class NotFound(RunyardError):
    """A task or run that does not exist."""

    def __init__(self, kind: str, key: str) -> None:
        self.kind = kind
        self.key = key
        super().__init__(f"{kind} {key!r} not found")


class InvalidInput(RunyardError):
    """A caller sent something that cannot be accepted; `location` names the field."""

    def __init__(self, location: str, message: str, value: object = None) -> None:
        self.location = location
        self.message = message
        self.value = value
        super().__init__(f"{location}: {message}")


class UnstorableInput(InvalidInput):
    """A caller sent text that cannot be stored (NUL, a lone surrogate): answered 400.

    `value` shows the text with those characters escaped, so the answer can carry it.
    """


class DataDirBusy(RunyardError):
    """Another daemon holds the data dir's lock; `pid` is its process id when known."""

    def __init__(self, data_dir: object, pid: int | None) -> None:
        self.data_dir = data_dir
        self.pid = pid
        holder = f"pid {pid}" if pid is not None else "a process whose pid is not recorded"
        super().__init__(
            f"the data dir {data_dir} is in use by another runyard daemon ({holder}); "
            "stop that daemon first, or give this one another data dir (--data-dir)"
        )


class InputQueueFull(RunyardError):
    """A trigger whose input would pass a `max_queued_input` cap: refused (429), not recorded."""


class ShuttingDown(RunyardError):
    """The daemon is stopping and accepts no new runs."""


class RunAlreadyEnded(RunyardError):
    """A stop was asked for a run that has already ended."""

    def __init__(self, run: Run) -> None:
        self.run = run
        super().__init__(
            f"run {run.id} already ended ({run.end_reason.value if run.end_reason else ''})"
        )


class ServiceLifetimeStop(RunyardError):
    """A stop was asked for a run that is a service instance's lifetime, not a task's run.

    The supervisor would only start the instance again: the service is what stops.
    """

    def __init__(self, run: Run) -> None:
        self.run = run
        super().__init__(
            f"run {run.id} is a lifetime of service {run.task_name}; "
            f"stop the service instead (runyard stop {run.task_name})"
        )


class V3Error(RunyardError):
    """A v3 call refused with `{"status": "error", "message": ...}` and an HTTP status.

    The messages of the hosted service's error table are in `runyard/v3/messages.py`.
    """

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        self.status = status
        self.message = message
        self.retry_after = retry_after  # seconds, for a Retry-After header (429)
        super().__init__(message)


class TickTaken(RunyardError):
    """Another node fired this cron tick first: it has its run (PostgreSQL, several nodes)."""

    def __init__(self, task_name: str, tick: object) -> None:
        super().__init__(f"task {task_name}: the tick at {tick} was fired by another node")
        self.task_name = task_name


class NodeNameTaken(RunyardError):
    """A live node on the same database already goes by this node name."""


class NodeUnreachable(RunyardError):
    """What only another node has (a run's log, live output, its process) cannot be had from it.

    The node is not registered any more, its lease expired, it did not
    answer in time, or it refused this node's cluster credential.
    """

    def __init__(self, run_id: str, node: str, reason: str) -> None:
        self.run_id = run_id
        self.node = node
        self.reason = reason
        super().__init__(
            f"run {run_id} belongs to node {node!r}, whose disk holds its log and output "
            f"while it runs; that node cannot be reached: {reason}"
        )


class RunOnAnotherNode(RunyardError):
    """A stop asked of a node for a run another node started (PostgreSQL, several nodes)."""

    def __init__(self, run: Run) -> None:
        self.run = run
        super().__init__(f"run {run.id} runs on node {run.node}; ask that node to stop it")


class LeaseLost(StoreUnavailable):
    """A write of a node whose lease another node took over: refused, never stored.

    The node that took it over has recorded the node's runs (ended crashed,
    retried, queued elsewhere); what the fenced node still had to write about
    them would overwrite that record.
    """


class NodeFenced(StoreUnavailable):
    """This node cannot renew its lease: it starts no runs until it can (ask another node)."""
