"""The v3-compatible API as a service: what the `/api/v3` endpoints and the run viewer do.

The routers in `runyard/api/routes_v3.py` and `routes_viewer.py` only turn
HTTP into calls here. Every refusal is a `V3Error` carrying the exact message
(`messages.py`) and HTTP status of the hosted service's error table
(`reference/v3-api-facts.md`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ulid import ULID

from runyard.body_parser import StagedInput
from runyard.clock import utc_now
from runyard.domain.accounts import (
    Account,
    Runtime,
    hash_secret,
    password_run_id,
    report_status,
    viewer_pid,
)
from runyard.domain.input_data import InputDataError, json_kind, normalise_input
from runyard.domain.models import Run, RunStatus, TaskDefinition, TriggeredBy
from runyard.domain.text import escape_unstorable
from runyard.exceptions import NodeUnreachable, NotFound, RunAlreadyEnded, V3Error
from runyard.store import RunStore
from runyard.store.keys import KeyStore
from runyard.store.rate_limit import SharedRateLimit
from runyard.v3.accounts import AccountUsage
from runyard.v3.callers import Caller, Callers
from runyard.v3.messages import (
    MISSING_NAME,
    NO_RUNS,
    NODE_UNREACHABLE,
    QUOTA_EXCEEDED,
    RUN_NOT_FOUND,
    TASK_NOT_FOUND,
)
from runyard.v3.ports import OutputOf, RunEngine, Settings, StopRun, TriggerCounter
from runyard.v3.viewer import Viewer, new_password

DEFAULT_REPORTS = 5
MAX_REPORTS = 1000  # larger counts are served as this many: the API shows recent runs only


@dataclass(frozen=True)
class Triggered:
    """The answer to a trigger: the run, whether it started, its viewer link."""

    run: Run
    started: bool
    link: str


@dataclass(frozen=True)
class Report:
    task_name: str
    status: str
    description: str
    created_at: datetime
    updated_at: datetime


class V3Service:
    """What the `/api/v3` endpoints and the run viewer do.

    `callers` (keys and rate limits), `usage` (runtime and quota) and
    `viewer` (links and the runs they open) are its parts; the methods that
    only pass a call on to them are here so the routes have one object to ask.
    """

    def __init__(
        self,
        *,
        engine: RunEngine,
        store: RunStore,
        keys: KeyStore,
        metrics: TriggerCounter,
        config: Callable[[], Settings],
        data_dir: Path,
        now: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        output_of: OutputOf | None = None,
        stop_run: StopRun | None = None,
    ) -> None:
        """`config` is read at each call: a reload may change the accounts and settings.

        `output_of` and `stop_run` reach a run wherever it runs (several nodes:
        its own node is asked); by default, this engine's runs alone.
        """
        self._engine = engine
        self._stop_run: StopRun = stop_run or engine.stop
        self._store = store
        self._metrics = metrics
        self._config = config
        # Several nodes on one PostgreSQL share each key's rate limit there.
        shared_limit = SharedRateLimit(store.transaction) if store.shared else None
        self.callers = Callers(
            keys, config, data_dir, now=now, monotonic=monotonic, shared_limit=shared_limit
        )
        self.usage = AccountUsage(store, lambda: config().accounts, now=now)
        self.viewer = Viewer(engine, store, config, output_of)

    # ----- callers ------------------------------------------------------------

    # The busiest pass-throughs hand back their part's awaitable rather than
    # awaiting it in a coroutine of their own: one frame less on each call.

    def authenticate(self, key: object) -> Awaitable[Caller]:
        """Return the caller owning `key`; V3Error 401 when it is missing, wrong or revoked."""
        return self.callers.authenticate(key)

    def count_call(self, caller: Caller) -> Awaitable[None]:
        """Count one v3 call against the key's limit; V3Error 429 when over it."""
        return self.callers.count_call(caller)

    def is_valid_key(self, key: str) -> Awaitable[bool]:
        """Return whether `key` is an active key of an account in the config."""
        return self.callers.is_valid_key(key)

    def invalid_key_retry_after(self, client: str) -> float:
        """Return the seconds until `client` may present a key again (0: it may now)."""
        return self.callers.invalid_key_retry_after(client)

    def count_invalid_key(self, client: str, weight: int = 1) -> None:
        """Count an invalid key presented by `client`, as `weight` calls."""
        self.callers.count_invalid_key(client, weight)

    def count_anonymous_call(self, client: str, limit: int) -> None:
        """Count a call that carries no key (/stop) against its client address."""
        self.callers.count_anonymous_call(client, limit)

    # ----- endpoints -----------------------------------------------------------

    async def trigger(
        self,
        caller: Caller,
        name: object,
        data: object,
        request_base: Callable[[], str],
        staged: StagedInput | None = None,
    ) -> Triggered:
        """Start (or queue) a run of the automation called `name`, with input `data`.

        `request_base` returns the request's base URL, for the viewer link.
        `staged`: the input data of a large body, parsed by a worker process.
        """
        metrics = self._metrics
        try:
            triggered = await self._trigger(caller, name, data, request_base, staged)
        except V3Error as error:
            metrics.v3_trigger(caller.account.id, metrics.v3_outcome_of_status(error.status))
            raise
        except Exception:
            metrics.v3_trigger(caller.account.id, "error")
            raise
        if triggered.run.status is RunStatus.ENDED:
            outcome = "refused"
        else:
            outcome = "started" if triggered.started else "queued"
        metrics.v3_trigger(caller.account.id, outcome)
        return triggered

    async def _trigger(
        self,
        caller: Caller,
        name: object,
        data: object,
        request_base: Callable[[], str],
        staged: StagedInput | None,
    ) -> Triggered:
        wanted = _required_name(name)
        input_size = None
        if staged is None:
            tables = parse_input(data)
        elif staged.problem is not None:
            raise V3Error(400, staged.problem.message)
        else:
            tables = staged.tables
            input_size = None if tables is not None else staged.size
        task = self._task_named(caller.account, wanted)
        account = caller.account
        # An account without an allowance costs the trigger no read of the store.
        limited = account.runtime_allowance_minutes is not None
        if limited and await self.usage.quota_exhausted(account):
            self._engine.events.signal(
                "quota_exhausted", {"task_name": task.name, "account": caller.account.id}
            )
            raise V3Error(403, QUOTA_EXCEEDED)
        run_id = staged.run_id if staged is not None else str(ULID())
        password = new_password(run_id)
        runs = await self._engine.trigger(
            task.name,
            {},
            TriggeredBy.CLOUD,
            tables,
            account=caller.account.id,
            secret_hash=hash_secret(password),
            run_id=run_id,
            input_size=input_size,
        )
        run = runs[0]
        started = self._engine.is_started(run.id) or run.status is RunStatus.ENDED
        return Triggered(
            run=run, started=started, link=self.viewer.link(run, password, request_base)
        )

    async def run_reports(self, caller: Caller, count: object) -> list[Report]:
        """Return the account's newest runs as reports, newest first."""
        limit = _report_count(count)
        stored = await asyncio.to_thread(self._store.account_runs, caller.account.id, limit)
        return [self._report(self._live(run)) for run in stored]

    async def run_data(
        self, caller: Caller, name: object
    ) -> tuple[str, dict[str, list[list[str]]]]:
        """Return the status and output data of the newest run of the automation called `name`."""
        task = self._task_named(caller.account, _required_name(name))
        run = await asyncio.to_thread(self._store.latest_account_run, caller.account.id, task.name)
        if run is None:
            raise V3Error(404, NO_RUNS)
        run = self._live(run)
        try:
            data = await self.viewer.output_of(run)
        except NodeUnreachable:
            raise V3Error(503, NODE_UNREACHABLE) from None
        return report_status(run), data

    async def remaining_runtime(self, caller: Caller) -> Runtime:
        """Return the account's used, allowed and remaining minutes in this billing period."""
        return await self.usage.runtime(caller.account)

    async def account_runtime(self, account: Account) -> Runtime:
        """Return an account's used, allowed and remaining minutes (the dashboard's Accounts)."""
        return await self.usage.runtime(account)

    async def used_minutes_by_account(self) -> dict[str, float]:
        """Runtime each configured account used in its current billing period, in minutes."""
        return await self.usage.by_account()

    def list_automations(self, caller: Caller) -> list[str]:
        """Return the automation names the account may trigger, sorted."""
        return sorted(
            task.display_name
            for task in self._engine.tasks.values()
            if caller.account.sees(task.name)
        )

    async def stop(self, pid: object, password: object) -> str:
        """Stop the run whose viewer secret is `password`; return its pid.

        Stopping a run that has already ended changes nothing and still succeeds.
        """
        if not isinstance(password, str) or not password:
            raise V3Error(404, RUN_NOT_FOUND)
        run: Run | None = None
        named = password_run_id(password)
        if named is not None:
            with contextlib.suppress(NotFound):
                run = await self.viewer.run(named, password)
        else:
            # A link issued before passwords named their run: found by its hash
            # among the runs not yet ended (the hash has no index since
            # migration 0004, and a search of every run is not for anyone who
            # asks). Stopping such a link's ended run answers 404.
            run = await asyncio.to_thread(self._store.active_run_by_secret, hash_secret(password))
        expected = None if run is None else viewer_pid(run.id)
        if run is None or expected is None or not _same_pid(pid, expected):
            raise V3Error(404, RUN_NOT_FOUND)
        if run.is_active:
            # It may end while we look: stopping an ended run is a no-op here.
            with contextlib.suppress(RunAlreadyEnded, NotFound):
                try:
                    await self._stop_run(run.id)
                except NodeUnreachable:
                    raise V3Error(503, NODE_UNREACHABLE) from None
        return expected

    # ----- viewer ----------------------------------------------------------------

    def viewer_link(self, run: Run, password: str, request_base: Callable[[], str]) -> str:
        """Return the full viewer URL of a run (`Viewer.link`)."""
        return self.viewer.link(run, password, request_base)

    async def viewer_run(self, run_id: str, password: str | None) -> Run:
        """Return the run if `password` is its viewer secret; NotFound otherwise."""
        return await self.viewer.run(run_id, password)

    async def output_of(self, run: Run) -> dict[str, list[list[str]]]:
        """Return a run's output data: live while it runs, frozen once it ended.

        The viewer page shows what it can: while the run's node does not
        answer, no output (its log stream says the node cannot be reached).
        """
        try:
            return await self.viewer.output_of(run)
        except NodeUnreachable:
            return {}

    def display_name(self, task_name: str) -> str:
        """Return the automation name of a task (its task name once removed from the config)."""
        return self.viewer.display_name(task_name)

    # ----- helpers -----------------------------------------------------------------

    def _task_named(self, account: Account, name: str) -> TaskDefinition:
        for task in self._engine.tasks.values():
            if task.display_name == name and account.sees(task.name):
                return task
        raise V3Error(404, TASK_NOT_FOUND)

    def _live(self, run: Run) -> Run:
        return self._engine.live_run(run.id) or run

    def _report(self, run: Run) -> Report:
        return Report(
            task_name=self.viewer.display_name(run.task_name),
            status=report_status(run),
            description=run.description,
            created_at=run.created_at,
            updated_at=run.end_at or run.start_at or run.created_at,
        )


def parse_input(data: object) -> list[list[list[str]]] | None:
    """Return the input tables of a trigger body's `data` (None when absent); V3Error 400."""
    if data is None:
        return None
    try:
        return normalise_input(data)
    except InputDataError as error:
        raise V3Error(400, error.message) from None


def _required_name(name: object) -> str:
    if name is None or name == "":
        raise V3Error(400, MISSING_NAME)
    if not isinstance(name, str):
        raise V3Error(400, f"name must be a string, got {json_kind(name)}.")
    return name


def _report_count(count: object) -> int:
    if count is None:
        return DEFAULT_REPORTS
    value: int | None = None
    if isinstance(count, int) and not isinstance(count, bool):
        value = count
    elif isinstance(count, float) and count.is_integer():
        value = int(count)
    elif isinstance(count, str):
        value = _whole_number(count)
    if value is None or value < 1:
        raise V3Error(400, f"count must be a whole number of at least 1, got {_shown(count)}.")
    return min(value, MAX_REPORTS)


def _whole_number(text: str) -> int | None:
    """Return the ASCII digits `text` holds (spaces around allowed) as an int; None otherwise.

    str.isdigit() says yes to "²" and "٣", which int() then refuses or reads
    as another digit; and int() refuses more than 4,300 digits.
    """
    digits = text.strip()
    if not digits or not digits.isascii() or not digits.isdigit():
        return None
    significant = digits.lstrip("0") or "0"
    # Any number this long is past every bound it is checked against.
    return int(significant) if len(significant) <= 18 else 10**18


def _same_pid(given: object, expected: str) -> bool:
    if isinstance(given, bool):
        return False
    if isinstance(given, int):
        return given == int(expected)
    if isinstance(given, str):
        return _whole_number(given) == int(expected)
    return False


def _shown(value: object) -> str:
    if isinstance(value, str):
        return f'"{escape_unstorable(value)}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json_kind(value)
