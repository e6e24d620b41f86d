"""The objects runyard talks about: tasks, runs and their enums.

The enum values and their order are part of the API (see the runs-list spec):
never rename or reorder them, only append.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

TASK_NAME_PATTERN = r"^[a-zA-Z0-9._-]{1,100}$"
TASK_NAME_RE = re.compile(TASK_NAME_PATTERN)


class RunStatus(StrEnum):
    """Run lifecycle phase."""

    PENDING = "pending"  # accepted, waiting for a slot (queued) or for a retry delay
    RUNNING = "running"  # a process exists for it
    ENDED = "ended"  # finished; end_reason says why


class EndReason(StrEnum):
    """Why a run ended (set when status is ended)."""

    SUCCESS = "success"  # exit code listed in success_exit_codes
    FAILED = "failed"  # any other exit code, or the process could not be judged a success
    STOPPED = "stopped"  # an operator stop, or on_overlap = kill made room for a newer run
    TIMEOUT = "timeout"  # ran past the task's timeout and was stopped
    CRASHED = "crashed"  # found running at daemon start (exit -2), or died abnormally
    SKIPPED = "skipped"  # refused by on_overlap = skip, or its task vanished (exit -1)
    LOG_OVERFLOW = "log_overflow"  # log_on_full = kill and the log reached log_max_size
    QUEUE_FULL = "queue_full"  # refused because max_queued runs were already waiting (exit -1)
    MISSED = "missed"  # a cron tick that should have fired while the daemon was down
    DAEMON_STOPPED = "daemon_stopped"  # the daemon shut down while the run was running
    START_FAILED = "start_failed"  # the process could not be started (bad shell, working_dir)
    UNHEALTHY = "unhealthy"  # a service's health check failed `failures` times in a row


class TriggeredBy(StrEnum):
    """How the run was triggered."""

    CRON = "cron"  # a schedule tick
    API = "api"  # REST API or CLI
    CLOUD = "cloud"  # the v3-compatible API
    SERVICE = "service"  # one lifetime of a service's instance (task_name: the service's name)


class OverlapPolicy(StrEnum):
    """What a trigger does when the task already runs max_concurrent runs."""

    QUEUE = "queue"  # wait FIFO for a slot (up to max_queued)
    SKIP = "skip"  # record a skipped run and do nothing
    KILL = "kill"  # stop the oldest running run, then start


class RetryBackoff(StrEnum):
    CONSTANT = "constant"  # retry_delay every time
    LINEAR = "linear"  # retry_delay * attempt
    EXPONENTIAL = "exponential"  # retry_delay * 2 ** (attempt - 1)


class LogOnFull(StrEnum):
    DROP_NEW = "drop_new"  # keep the beginning, drop further output
    DROP_OLD = "drop_old"  # keep the most recent output, drop the oldest
    KILL = "kill"  # stop the run, end reason log_overflow


class EnvBase(StrEnum):
    """What a run's environment starts from, before the task's `env`."""

    INHERIT = "inherit"  # the daemon's own environment
    CLEAN = "clean"  # nothing: only the task's env (PATH: /usr/local/bin:/usr/bin:/bin if unset)


class CatchUp(StrEnum):
    """What runs at start for ticks missed while the daemon was down."""

    LATEST = "latest"  # one run for the most recent missed tick
    ALL = "all"  # one run per missed tick, up to max_catch_up_runs
    SKIP = "skip"  # nothing; the missed record is all


class ScheduleKind(StrEnum):
    CRON = "cron"  # a 5-field (or 6-field, leading seconds) cron expression
    EVERY = "every"  # @every <duration>, anchored to the Unix epoch


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a task fires: a parsed `cron = ...` in its time zone."""

    expression: str  # as written in the config, e.g. "@daily" or "*/5 * * * *"
    kind: ScheduleKind
    timezone: str  # IANA zone name the expression is read in
    cron: str = ""  # the normalised cron fields (aliases expanded); kind CRON only
    every: timedelta | None = None  # the interval; kind EVERY only


class ParamPassing(StrEnum):
    ENV = "env"  # an environment variable
    ARG = "arg"  # a positional argument: "$1", "$2", ... in declaration order


# Exit codes runyard records for runs that never produced one.
DEFAULT_MAX_QUEUED_INPUT = 1024**3  # 1 GiB, per task

EXIT_NOT_RUN = -1  # skipped, queue_full, missed
EXIT_CRASHED = -2  # found running when the daemon started
EXIT_START_FAILED = 127  # the same code a shell gives for a command it cannot run


class RunKind(StrEnum):
    """What a run is a run of; derived from `triggered_by`, never stored."""

    TASK = "task"  # one execution attempt of a task
    SERVICE = "service"  # one process lifetime of a service's instance


FAILURE_LIKE = frozenset(
    {
        EndReason.FAILED,
        EndReason.TIMEOUT,
        EndReason.CRASHED,
        EndReason.LOG_OVERFLOW,
        EndReason.START_FAILED,
    }
)


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """A declared task parameter."""

    name: str
    passing: ParamPassing = ParamPassing.ENV
    env: str = ""  # variable name when passing is env; defaults to the upper-cased name
    default: str | None = None
    required: bool = False
    choices: tuple[str, ...] = ()

    @property
    def env_name(self) -> str:
        return self.env or self.name.upper().replace("-", "_").replace(".", "_")


@dataclass(frozen=True, slots=True)
class TaskDefinition:
    """A task as resolved from the config (defaults applied)."""

    name: str
    run: str
    description: str = ""
    automation: str = ""  # display name matched by the v3 API; empty means the task name
    shell: str = "/bin/sh"
    working_dir: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    env_file: str | None = None
    env_base: EnvBase = EnvBase.INHERIT
    # Passed like env, but never shown: not in the API, the pages, the CLI or
    # the logs, and masked as *** in what the run prints.
    secrets: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    secrets_file: str | None = None
    umask: int | None = None  # the process's file mode creation mask; None: the daemon's
    user: str | None = (
        None  # who the process runs as (the daemon must be root); None: the daemon's user
    )
    timeout: timedelta | None = None
    graceful_stop: timedelta = timedelta(seconds=5)
    stop_signal: str = "SIGTERM"
    success_exit_codes: tuple[int, ...] = (0,)
    max_concurrent: int = 1
    max_queued: int = 100
    # Bytes of input data (as JSON) the task's waiting runs may hold in all;
    # a trigger that would pass it is refused (429), not recorded.
    max_queued_input: int = DEFAULT_MAX_QUEUED_INPUT
    on_overlap: OverlapPolicy = OverlapPolicy.QUEUE
    retry_attempts: int = 0
    retry_delay: timedelta = timedelta(seconds=5)
    retry_backoff: RetryBackoff = RetryBackoff.CONSTANT
    replicas: int = 1
    log_max_size: int = 100 * 1024 * 1024
    log_on_full: LogOnFull = LogOnFull.DROP_NEW
    keep_runs: int | None = None
    keep_for: timedelta | None = None
    params: tuple[ParamSpec, ...] = ()
    schedule: Schedule | None = None  # None: runs only when triggered
    jitter: timedelta = timedelta(0)  # spread each tick's start over this window
    run_on_start: bool = False  # fire once when the daemon starts
    catch_up: CatchUp = CatchUp.LATEST
    max_catch_up_runs: int = 100

    @property
    def display_name(self) -> str:
        return self.automation or self.name


@dataclass(frozen=True, slots=True)
class Run:
    """One execution attempt of a task."""

    id: str
    task_name: str
    status: RunStatus
    created_at: datetime
    triggered_by: TriggeredBy
    exit_code: int = 0  # 0 until the run ends; see EXIT_* for runs that never ran
    end_reason: EndReason | None = None
    start_at: datetime | None = None
    end_at: datetime | None = None
    replica_index: int = 0
    retry_attempt: int = 0
    retry_of_run_id: str | None = None
    external_execution_id: str | None = None
    params: dict[str, str] = field(default_factory=dict)
    description: str = ""
    # When a pending run may start at the earliest (retries wait out their delay).
    not_before: datetime | None = None
    # Input data travels in one of two ways (docs/DESIGN.md, "Input data"):
    # small tables inline (input_data, kept in the run's row) or, from
    # INLINE_INPUT_BYTES up, a file in the data dir that the run's row only
    # counts (input_size). input_size is the JSON size either way; None: no input.
    input_data: list[list[list[str]]] | None = None
    input_size: int | None = None
    output_data: dict[str, list[list[str]]] | None = None
    account: str | None = None  # the v3 account that triggered it; None for REST, CLI and cron
    secret_hash: str | None = None  # hash of the viewer link's password (v3 runs only)
    # The node (daemon) that admitted and started it, on PostgreSQL; None on SQLite.
    node: str | None = None

    @property
    def duration_ms(self) -> int | None:
        """Wall time between start and end, in milliseconds; None until both exist."""
        if self.start_at is None or self.end_at is None:
            return None
        return int((self.end_at - self.start_at) / timedelta(milliseconds=1))

    @property
    def has_input(self) -> bool:
        """Return whether the run was given input data (inline or in a file)."""
        return self.input_data is not None or self.input_size is not None

    @property
    def input_in_file(self) -> bool:
        """Return whether the run's input data is a file in the data dir (not held inline)."""
        return self.input_size is not None and self.input_data is None

    @property
    def kind(self) -> RunKind:
        """A service's lifetime or a task's run (the API's `kind`)."""
        return RunKind.SERVICE if self.triggered_by is TriggeredBy.SERVICE else RunKind.TASK

    @property
    def is_active(self) -> bool:
        return self.status is not RunStatus.ENDED
