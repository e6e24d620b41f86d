"""The v3-compatible API as a service: accounts, keys, quota, rate limit, viewer secrets.

The routers in `runyard/api/routes_v3.py` and `routes_viewer.py` only turn
HTTP into calls here. Every refusal is a `V3Error` carrying the exact message
and HTTP status of the hosted service's error table
(`reference/v3-api-facts.md`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import secrets
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ulid import ULID

from runyard.body_parser import StagedInput
from runyard.domain.accounts import (
    Account,
    ApiKey,
    Runtime,
    billing_period_start,
    hash_secret,
    password_run_id,
    quota_exhausted,
    report_status,
    runtime,
    used_minutes,
    viewer_host,
    viewer_password,
    viewer_pid,
)
from runyard.domain.input_data import InputDataError, json_kind, normalise_input
from runyard.domain.models import Run, RunStatus, TaskDefinition, TriggeredBy
from runyard.domain.ratelimit import RollingWindow
from runyard.domain.text import escape_unstorable, is_storable
from runyard.exceptions import NotFound, RunAlreadyEnded, RunyardError, StoreError
from runyard.store.keys import KeyStore, revoked_stamp

if TYPE_CHECKING:
    from runyard.app import Runyard

# Messages and statuses of the hosted service's error table, copied exactly.
TASK_NOT_FOUND = "Task not found, please check the name and try again."
INVALID_KEY = "Invalid key"
QUOTA_EXCEEDED = "Quota exceeded"
RATE_LIMITED = "Rate limit exceeded. Try again in a few seconds."
MISSING_NAME = "Missing task name, you must send the name of the task that you wish to trigger."
# The queued answer keeps the hosted service's text: clients match on it.
QUEUED_MESSAGE = (
    "Axiom could not start due to a lack of available resources. "
    "The task has been queued and will retry in five minutes."
)
NO_RUNS = "This automation has no runs yet."
RUN_NOT_FOUND = "Run not found: pid and pw do not match a run."
LINK_KEY = "OPEN LINK IN BROWSER"

DEFAULT_REPORTS = 5
MAX_REPORTS = 1000  # larger counts are served as this many: the API shows recent runs only
VIEWER_SECRET_BYTES = 24  # 192 random bits in each viewer link's password
STOP_RATE_KEY = "stop:"  # /stop carries no key: it is limited per client address
INVALID_KEY_RATE_KEY = "invalid-key:"  # invalid keys are limited per client address
# Addresses remembered by the rate limits before idle ones are forgotten.
_RATE_KEYS_MAX = 100_000
# How long a key found in the database is trusted without asking again. A key
# revoked with `runyard keys revoke` on this machine stops working at once (the
# command touches a marker in the data dir); daemons on other machines sharing
# a PostgreSQL database notice within this time.
KEY_CACHE_SECONDS = 1.0
_KEY_CACHE_MAX = 10_000


class V3Error(RunyardError):
    """A v3 call refused with `{"status": "error", "message": ...}` and an HTTP status."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        self.status = status
        self.message = message
        self.retry_after = retry_after  # seconds, for a Retry-After header (429)
        super().__init__(message)


@dataclass(frozen=True)
class Caller:
    """Who is calling: the account of an active key, and the key's id (the rate-limit unit)."""

    account: Account
    key_id: str


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


# How often a key's last_used_at is written: the Accounts page shows it to the minute.
KEY_TOUCH_SECONDS = 60.0


class CloudApi:
    """What the `/api/v3` endpoints and the run viewer do."""

    def __init__(
        self,
        runyard: Runyard,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._runyard = runyard
        self._keys = KeyStore(runyard.store._transaction)
        self._monotonic = monotonic
        self._window = RollingWindow(60.0)
        self._known_keys: dict[str, tuple[float, ApiKey]] = {}  # hash -> (found at, key)
        self._touched: dict[str, float] = {}  # key id -> when last_used_at was last written
        self._revoked_stamp = revoked_stamp(runyard.data_dir)

    # ----- callers ------------------------------------------------------------

    async def authenticate(self, key: object) -> Caller:
        """Return the caller owning `key`; V3Error 401 when it is missing, wrong or revoked."""
        if not isinstance(key, str) or not key:
            raise V3Error(401, INVALID_KEY)
        found = await self._lookup(key)
        accounts = self._runyard.config.accounts
        if found is None or found.account not in accounts:
            # A key of an account removed from the config opens nothing.
            raise V3Error(401, INVALID_KEY)
        return Caller(account=accounts[found.account], key_id=found.id)

    async def _lookup(self, key: str) -> ApiKey | None:
        """Return the active key `key`, from the database or a lookup of the last second."""
        digest = hash_secret(key)
        now = self._monotonic()
        stamp = revoked_stamp(self._runyard.data_dir)
        if stamp != self._revoked_stamp:
            self._revoked_stamp = stamp
            self._known_keys.clear()
        cached = self._known_keys.get(digest)
        if cached is not None and now - cached[0] < KEY_CACHE_SECONDS:
            await self._touch(cached[1], now)
            return cached[1]
        found = await asyncio.to_thread(self._keys.lookup, key)
        if found is not None:
            if len(self._known_keys) >= _KEY_CACHE_MAX:
                self._known_keys.clear()
            self._known_keys[digest] = (now, found)
            await self._touch(found, now)
        else:
            self._known_keys.pop(digest, None)
        return found

    async def _touch(self, key: ApiKey, now: float) -> None:
        """Record that `key` was used (the Accounts page shows it), at most once a minute."""
        last = self._touched.get(key.id)
        if last is not None and now - last < KEY_TOUCH_SECONDS:
            return
        if len(self._touched) >= _KEY_CACHE_MAX:
            self._touched.clear()
        self._touched[key.id] = now
        try:
            await asyncio.to_thread(self._keys.touch, key.id, self._runyard.clock())
        except StoreError:
            # A missed "last used" is not worth refusing the call: the next one writes it.
            self._touched.pop(key.id, None)

    def count_call(self, caller: Caller) -> None:
        """Count one v3 call against the key's limit; V3Error 429 when over it."""
        limit = caller.account.rate_limit_per_minute
        now = self._monotonic()
        if not self._window.allow(caller.key_id, limit, now):
            raise V3Error(429, RATE_LIMITED, self._window.retry_after(caller.key_id, limit, now))

    async def is_valid_key(self, key: str) -> bool:
        """Return whether `key` is an active key of an account in the config."""
        found = await self._lookup(key)
        return found is not None and found.account in self._runyard.config.accounts

    def invalid_key_retry_after(self, client: str) -> float:
        """Return the seconds until `client` may present a key again (0: it may now)."""
        limit = self._runyard.config.daemon.max_invalid_keys_per_minute
        return self._window.retry_after(INVALID_KEY_RATE_KEY + client, limit, self._monotonic())

    def count_invalid_key(self, client: str, weight: int = 1) -> None:
        """Count an invalid key presented by `client`, as `weight` calls."""
        limit = self._runyard.config.daemon.max_invalid_keys_per_minute
        now = self._monotonic()
        if self._window.size() > _RATE_KEYS_MAX:
            self._window.forget_idle(now)
        for _ in range(min(weight, limit)):
            if not self._window.allow(INVALID_KEY_RATE_KEY + client, limit, now):
                break

    def count_anonymous_call(self, client: str, limit: int) -> None:
        """Count a call that carries no key (/stop) against its client address."""
        key, now = STOP_RATE_KEY + client, self._monotonic()
        if not self._window.allow(key, limit, now):
            raise V3Error(429, RATE_LIMITED, self._window.retry_after(key, limit, now))

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
        metrics = self._runyard.metrics
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
        if caller.account.runtime_allowance_minutes is not None:
            used = await self._used_minutes(caller.account)
            if quota_exhausted(caller.account, used):
                self._runyard.engine.events.signal(
                    "quota_exhausted", {"task_name": task.name, "account": caller.account.id}
                )
                raise V3Error(403, QUOTA_EXCEEDED)
        run_id = staged.run_id if staged is not None else str(ULID())
        password = viewer_password(run_id, secrets.token_urlsafe(VIEWER_SECRET_BYTES))
        runs = await self._runyard.engine.trigger(
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
        started = self._runyard.engine.is_started(run.id) or run.status is RunStatus.ENDED
        return Triggered(
            run=run, started=started, link=self.viewer_link(run, password, request_base)
        )

    async def run_reports(self, caller: Caller, count: object) -> list[Report]:
        """Return the account's newest runs as reports, newest first."""
        limit = _report_count(count)
        stored = await asyncio.to_thread(self._runyard.store.account_runs, caller.account.id, limit)
        return [self._report(self._live(run)) for run in stored]

    async def run_data(
        self, caller: Caller, name: object
    ) -> tuple[str, dict[str, list[list[str]]]]:
        """Return the status and output data of the newest run of the automation called `name`."""
        task = self._task_named(caller.account, _required_name(name))
        run = await asyncio.to_thread(
            self._runyard.store.latest_account_run, caller.account.id, task.name
        )
        if run is None:
            raise V3Error(404, NO_RUNS)
        run = self._live(run)
        data = run.output_data
        if run.status is not RunStatus.ENDED:
            data = await self._runyard.engine.live_output(run.id)
        return report_status(run), data or {}

    async def remaining_runtime(self, caller: Caller) -> Runtime:
        """Return the account's used, allowed and remaining minutes in this billing period."""
        return runtime(caller.account, await self._used_minutes(caller.account))

    async def account_runtime(self, account: Account) -> Runtime:
        """Return an account's used, allowed and remaining minutes (the dashboard's Accounts)."""
        return runtime(account, await self._used_minutes(account))

    def list_automations(self, caller: Caller) -> list[str]:
        """Return the automation names the account may trigger, sorted."""
        return sorted(
            task.display_name for task in self._runyard.tasks() if caller.account.sees(task.name)
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
                run = await self.viewer_run(named, password)
        else:
            # A link issued before passwords named their run: found by its hash
            # among the runs not yet ended (the hash has no index since
            # migration 0004, and a search of every run is not for anyone who
            # asks). Stopping such a link's ended run answers 404.
            run = await asyncio.to_thread(
                self._runyard.store.active_run_by_secret, hash_secret(password)
            )
        expected = None if run is None else viewer_pid(run.id)
        if run is None or expected is None or not _same_pid(pid, expected):
            raise V3Error(404, RUN_NOT_FOUND)
        if run.is_active:
            # It may end while we look: stopping an ended run is a no-op here.
            with contextlib.suppress(RunAlreadyEnded, NotFound):
                await self._runyard.engine.stop(run.id)
        return expected

    # ----- viewer ----------------------------------------------------------------

    def viewer_link(self, run: Run, password: str, request_base: Callable[[], str]) -> str:
        """Return the full viewer URL of a run.

        `request_base` returns the base URL the request came in on; it is
        asked only when neither `external_url` nor a specific host says where
        the daemon is reached.
        """
        daemon = self._runyard.config.daemon
        if daemon.external_url:
            base = daemon.external_url
        elif daemon.host in ("0.0.0.0", "::", ""):
            base = request_base()
        else:
            base = f"http://{_url_host(daemon.host)}:{daemon.port}"
        base = base.rstrip("/")
        port = urlsplit(base).port or daemon.port
        # Every value is URL-safe as it is (digits, `c-00NN-runyard`, and the
        # password's run id, dot and URL-safe base64), so the query needs no encoding.
        return (
            f"{base}/view/{run.id}?host={viewer_host(run.id)}&port={port}"
            f"&password={password}&taskId={task_number(run.task_name)}"
        )

    async def viewer_run(self, run_id: str, password: str | None) -> Run:
        """Return the run if `password` is its viewer secret; NotFound otherwise.

        A wrong secret and an unknown run look the same, so the page reveals
        nothing about which runs exist.
        """
        run = None
        # A run id or secret holding NUL or a lone surrogate names no run; the
        # store must not be asked (PostgreSQL refuses NUL with an error).
        if password and is_storable(run_id) and is_storable(password):
            live = self._runyard.engine.live_run(run_id)
            run = live or await asyncio.to_thread(self._runyard.store.get_run, run_id)
        if (
            run is None
            or run.secret_hash is None
            or not password
            or not hmac.compare_digest(run.secret_hash, hash_secret(password))
        ):
            raise NotFound("run", run_id)
        return run

    async def output_of(self, run: Run) -> dict[str, list[list[str]]]:
        """Return a run's output data: live while it runs, frozen once it ended."""
        if run.status is RunStatus.ENDED:
            return run.output_data or {}
        return await self._runyard.engine.live_output(run.id) or {}

    def display_name(self, task_name: str) -> str:
        """Return the automation name of a task (its task name once removed from the config)."""
        task = self._runyard.engine.tasks.get(task_name)
        return task.display_name if task is not None else task_name

    # ----- helpers -----------------------------------------------------------------

    def _task_named(self, account: Account, name: str) -> TaskDefinition:
        for task in self._runyard.engine.tasks.values():
            if task.display_name == name and account.sees(task.name):
                return task
        raise V3Error(404, TASK_NOT_FOUND)

    def _live(self, run: Run) -> Run:
        return self._runyard.engine.live_run(run.id) or run

    def _report(self, run: Run) -> Report:
        return Report(
            task_name=self.display_name(run.task_name),
            status=report_status(run),
            description=run.description,
            created_at=run.created_at,
            updated_at=run.end_at or run.start_at or run.created_at,
        )

    async def used_minutes_by_account(self) -> dict[str, float]:
        """Runtime each configured account used in its current billing period, in minutes."""
        return {
            account.id: await self._used_minutes(account)
            for account in self._runyard.config.accounts.values()
        }

    async def _used_minutes(self, account: Account) -> float:
        now = self._runyard.clock()
        since = billing_period_start(account.billing_anchor, now)
        intervals = await asyncio.to_thread(
            self._runyard.store.runtime_intervals, account.id, since
        )
        return used_minutes(intervals, since, now)


def parse_input(data: object) -> list[list[list[str]]] | None:
    """Return the input tables of a trigger body's `data` (None when absent); V3Error 400."""
    if data is None:
        return None
    try:
        return normalise_input(data)
    except InputDataError as error:
        raise V3Error(400, error.message) from None


def task_number(task_name: str) -> int:
    """Return the `taskId` of a task's viewer links: a stable number derived from its name."""
    return zlib.crc32(task_name.encode("utf-8"))


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


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _shown(value: object) -> str:
    if isinstance(value, str):
        return f'"{escape_unstorable(value)}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json_kind(value)
