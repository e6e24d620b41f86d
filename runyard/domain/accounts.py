"""Accounts of the v3-compatible API: what each may see, run and spend.

Pure: the billing period and runtime arithmetic take the time as an argument.
"""

from __future__ import annotations

import calendar
import fnmatch
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from runyard.domain.models import EndReason, Run, RunStatus

DEFAULT_ACCOUNT = "default"
DEFAULT_RATE_LIMIT = 100  # calls per rolling minute per key, as the hosted service allows
RUN_ID_LENGTH = 26  # a ULID in Crockford base32
# Reported as the allowance of an account without one: a number, not null, so
# client code that compares `remaining` keeps working (about 1,900 years).
UNLIMITED_MINUTES = 1_000_000_000.0


@dataclass(frozen=True)
class Account:
    """An `[accounts.<id>]` table of the config, defaults applied."""

    id: str
    max_concurrent_runs: int | None = None  # None: only the daemon and task limits apply
    runtime_allowance_minutes: float | None = None  # per billing period; None: unlimited
    billing_anchor: int = 1  # periods start at 00:00 UTC on this day of the month (1-31)
    tasks: tuple[str, ...] = ("*",)  # glob patterns of the task names it may see and trigger
    rate_limit_per_minute: int = DEFAULT_RATE_LIMIT
    # Bytes of input data the account's waiting runs may hold, over all its
    # tasks; None: only each task's max_queued_input applies.
    max_queued_input: int | None = None

    def sees(self, task_name: str) -> bool:
        """Return whether the account may see and trigger the task called `task_name`."""
        return any(fnmatch.fnmatchcase(task_name, pattern) for pattern in self.tasks)


def billing_period_start(anchor_day: int, now: datetime) -> datetime:
    """Return the start of the billing period holding `now` (UTC midnight of the anchor day).

    In months shorter than the anchor day the period starts on their last day:
    an anchor of 31 starts on 30 April and 28 (or 29) February.
    """
    now = now.astimezone(UTC)
    year, month = now.year, now.month
    start = _anchor_in(year, month, anchor_day)
    if start > now:
        year, month = (year - 1, 12) if month == 1 else (year, month - 1)
        start = _anchor_in(year, month, anchor_day)
    return start


def _anchor_in(year: int, month: int, anchor_day: int) -> datetime:
    day = min(anchor_day, calendar.monthrange(year, month)[1])
    return datetime(year, month, day, tzinfo=UTC)


def used_minutes(
    intervals: Iterable[tuple[datetime, datetime | None]], period_start: datetime, now: datetime
) -> float:
    """Return the wall-clock minutes the (start, end) intervals cover inside [period_start, now].

    An interval without an end is a run still running: it counts up to `now`.
    """
    total = timedelta(0)
    for start, finish in intervals:
        begin = max(start, period_start)
        end = min(finish or now, now)
        if end > begin:
            total += end - begin
    return total / timedelta(minutes=1)


@dataclass(frozen=True)
class Runtime:
    """What /remaining-runtime reports, in minutes."""

    used: float
    allowance: float
    remaining: float
    limited: bool  # False: the account has no allowance (reported as UNLIMITED_MINUTES)


def runtime(account: Account, used: float) -> Runtime:
    """Return used, allowance and remaining minutes, rounded to two decimals."""
    limited = account.runtime_allowance_minutes is not None
    allowance = (
        account.runtime_allowance_minutes
        if account.runtime_allowance_minutes is not None
        else UNLIMITED_MINUTES
    )
    used_rounded = round(used, 2)
    return Runtime(
        used=used_rounded,
        allowance=round(allowance, 2),
        # From the rounded figure, so remaining == allowance - used exactly as shown.
        remaining=round(max(allowance - used_rounded, 0.0), 2),
        limited=limited,
    )


def quota_exhausted(account: Account, used: float) -> bool:
    """Return whether the account has no runtime left for a new run.

    Judged on the figures /remaining-runtime shows, so a trigger is refused
    exactly when `remaining` reads 0.
    """
    if account.runtime_allowance_minutes is None:
        return False
    return runtime(account, used).remaining <= 0


def report_status(run: Run) -> str:
    """Return the v3 status of a run: Running, Success or Failure.

    The v3 API has no queued status: a waiting run reports Running.
    """
    if run.status is not RunStatus.ENDED:
        return "Running"
    return "Success" if run.end_reason is EndReason.SUCCESS else "Failure"


def viewer_pid(run_id: str) -> str:
    """Return the two digits a run's viewer link carries as its pid (from `host=c-00NN-...`)."""
    digest = hashlib.sha256(run_id.encode("ascii")).digest()
    return f"{int.from_bytes(digest[:4], 'big') % 100:02d}"


def viewer_host(run_id: str) -> str:
    """Return the `host` query value of a run's viewer link: `c-00NN-runyard`.

    Clients take characters 2..4 of the part after the first `-` as the pid.
    """
    return f"c-00{viewer_pid(run_id)}-runyard"


def viewer_password(run_id: str, secret: str) -> str:
    """Return the `password` of a run's viewer link: the run's id, a dot, a random secret.

    The id lets /stop find the run by its primary key; the secret (at least
    128 random bits) is what proves the caller was given the link.
    """
    return f"{run_id}.{secret}"


def password_run_id(password: str) -> str | None:
    """Return the run id a viewer password names, or None for one that names none."""
    run_id, dot, secret = password.partition(".")
    return run_id if dot and secret and len(run_id) == RUN_ID_LENGTH else None


def hash_secret(secret: str) -> str:
    """Return the stored form of a key or viewer secret (SHA-256, hex).

    Both have at least 128 random bits, so a fast hash is enough: there is no
    dictionary to guess from.
    """
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


KEY_PREFIX = "ryk_"  # tells a runyard key apart in configs, logs and secret scanners
# `ryk_<key id>_<secret>`: the key names its own id (not a secret: `runyard keys
# list` shows it), so whoever holds a key can revoke it without looking it up.
_KEY_WITH_ID = re.compile(r"ryk_([0-9A-HJKMNP-TV-Z]{26})_[A-Za-z0-9_-]+")


def key_plaintext(key_id: str, secret: str) -> str:
    """Return the key handed out once: the prefix, the key's id and its secret."""
    return f"{KEY_PREFIX}{key_id}_{secret}"


def key_id_in(text: str) -> str | None:
    """Return the key id a key names, or None when `text` is not such a key."""
    match = _KEY_WITH_ID.fullmatch(text.strip())
    return None if match is None else match.group(1)


@dataclass(frozen=True)
class ApiKey:
    """A stored API key of an account; the key itself is never kept, only its hash."""

    id: str  # ULID, shown by `runyard keys list` and used to revoke the key
    account: str
    label: str
    created_at: datetime
    revoked_at: datetime | None = None  # None: the key is active

    @property
    def active(self) -> bool:
        """Return whether the key still opens the API."""
        return self.revoked_at is None
