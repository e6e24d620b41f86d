"""The pure account rules of the v3 API: visibility, billing periods, runtime, viewer links."""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from runyard.domain.accounts import (
    UNLIMITED_MINUTES,
    Account,
    Runtime,
    billing_period_start,
    hash_secret,
    key_id_in,
    key_plaintext,
    password_run_id,
    quota_exhausted,
    report_status,
    runtime,
    used_minutes,
    viewer_host,
    viewer_password,
    viewer_pid,
)
from runyard.domain.models import EndReason, Run, RunStatus, TriggeredBy

RIGA = ZoneInfo("Europe/Riga")


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


# ----- Account.sees ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "task_name", "expected"),
    [
        (("*",), "anything-at-all", True),
        (("acme-*",), "acme-report", True),
        (("acme-*",), "acme-", True),  # * matches nothing too
        (("acme-*",), "ACME-report", False),  # case-sensitive, on every platform
        (("acme-*",), "Acme-report", False),
        (("acme-*",), "zeta-report", False),
        (("acme-*",), "xacme-report", False),  # anchored at the start
        (("*-daily",), "backup-daily", True),
        (("*-daily",), "backup-daily.old", False),  # anchored at the end
        (("report-?",), "report-1", True),
        (("report-?",), "report-10", False),
        (("[ab]-*",), "a-task", True),
        (("[ab]-*",), "c-task", False),
        (("[!ab]-*",), "c-task", True),
        (("exact",), "exact", True),
        (("exact",), "exact2", False),
        (("exact",), "Exact", False),
        (("a-*", "b-*"), "b-1", True),
        (("a-*", "b-*"), "c-1", False),
        (("*.daily",), "backup.daily", True),
        (("*.daily",), "backupxdaily", False),  # the dot is literal
    ],
)
def test_sees(patterns: tuple[str, ...], task_name: str, expected: bool) -> None:
    assert Account("acme", tasks=patterns).sees(task_name) is expected


def test_an_account_without_patterns_sees_every_task() -> None:
    account = Account("default")
    assert account.tasks == ("*",)
    assert all(account.sees(name) for name in ("a", "report-daily", "Z.9_x-y"))


# ----- billing_period_start ---------------------------------------------------------


@pytest.mark.parametrize(
    ("anchor", "now", "expected"),
    [
        # anchor 1: the first of the month
        (1, utc(2025, 3, 15, 10, 30), utc(2025, 3, 1)),
        (1, utc(2025, 3, 1), utc(2025, 3, 1)),  # exactly at the anchor midnight
        (1, utc(2025, 2, 28, 23, 59, 59, 999999), utc(2025, 2, 1)),
        (1, utc(2025, 1, 1), utc(2025, 1, 1)),
        (1, utc(2024, 12, 31, 23, 59, 59), utc(2024, 12, 1)),
        # anchor 15
        (15, utc(2025, 3, 15), utc(2025, 3, 15)),  # exactly at the anchor midnight
        (15, utc(2025, 3, 14, 23, 59, 59, 999999), utc(2025, 2, 15)),
        (15, utc(2025, 3, 31, 12), utc(2025, 3, 15)),
        (15, utc(2025, 1, 10), utc(2024, 12, 15)),  # January -> previous December
        (15, utc(2025, 1, 15), utc(2025, 1, 15)),
        (15, utc(2024, 2, 29, 8), utc(2024, 2, 15)),
        # anchor 31: months shorter than 31 days start on their last day
        (31, utc(2025, 1, 5), utc(2024, 12, 31)),  # January -> previous December
        (31, utc(2025, 1, 31), utc(2025, 1, 31)),
        (31, utc(2025, 2, 27, 23, 59), utc(2025, 1, 31)),
        (31, utc(2025, 2, 28), utc(2025, 2, 28)),  # February, not a leap year
        (31, utc(2025, 3, 1), utc(2025, 2, 28)),
        (31, utc(2025, 3, 30, 23, 59), utc(2025, 2, 28)),
        (31, utc(2025, 3, 31), utc(2025, 3, 31)),
        (31, utc(2024, 2, 28, 12), utc(2024, 1, 31)),  # leap year: the 29th is the last day
        (31, utc(2024, 2, 29), utc(2024, 2, 29)),
        (31, utc(2024, 3, 1), utc(2024, 2, 29)),
        (31, utc(2025, 4, 29, 23), utc(2025, 3, 31)),  # April has 30 days
        (31, utc(2025, 4, 30), utc(2025, 4, 30)),
        (31, utc(2025, 5, 1), utc(2025, 4, 30)),
        (31, utc(2025, 5, 30, 23, 59, 59), utc(2025, 4, 30)),
        (31, utc(2025, 5, 31), utc(2025, 5, 31)),
        # anchor 29 and 30 in February
        (29, utc(2025, 2, 28, 12), utc(2025, 2, 28)),
        (29, utc(2024, 2, 28, 12), utc(2024, 1, 29)),
        (29, utc(2024, 2, 29), utc(2024, 2, 29)),
        (30, utc(2024, 3, 1), utc(2024, 2, 29)),
        (30, utc(2024, 3, 30), utc(2024, 3, 30)),
        # an aware time in another zone is read in UTC: 00:30 in Riga is 22:30 UTC the day before
        (1, datetime(2025, 3, 1, 0, 30, tzinfo=RIGA), utc(2025, 2, 1)),
        (1, datetime(2025, 3, 1, 2, 0, tzinfo=RIGA), utc(2025, 3, 1)),
        (15, datetime(2025, 1, 15, 1, 59, 59, tzinfo=RIGA), utc(2024, 12, 15)),
    ],
)
def test_billing_period_start(anchor: int, now: datetime, expected: datetime) -> None:
    start = billing_period_start(anchor, now)
    assert start == expected
    assert start.utcoffset() == timedelta(0)


@pytest.mark.parametrize("anchor", [1, 2, 15, 28, 29, 30, 31])
def test_billing_periods_tile_the_calendar(anchor: int) -> None:
    """Over two years, hour by hour: every time sits in the period that contains it."""
    now = utc(2023, 12, 20)
    while now < utc(2026, 1, 10):
        start = billing_period_start(anchor, now)
        assert start <= now
        last_day = calendar.monthrange(start.year, start.month)[1]
        assert (start.day, start.hour, start.minute) == (min(anchor, last_day), 0, 0)
        # The next period starts on the anchor of the following month, after `now`.
        year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
        following = utc(year, month, min(anchor, calendar.monthrange(year, month)[1]))
        assert now < following
        now += timedelta(hours=7)


# ----- used_minutes -----------------------------------------------------------------

PERIOD = utc(2025, 3, 1)
NOW = utc(2025, 3, 10, 12, 0)
Interval = tuple[datetime, datetime | None]


@pytest.mark.parametrize(
    ("intervals", "expected"),
    [
        ([], 0.0),
        ([(utc(2025, 3, 5, 10), utc(2025, 3, 5, 10, 30))], 30.0),
        ([(utc(2025, 3, 5, 10), utc(2025, 3, 5, 10, 1, 30))], 1.5),
        # straddling the period start: only the part inside the period counts
        ([(utc(2025, 2, 28, 23, 50), utc(2025, 3, 1, 0, 10))], 10.0),
        # entirely before the period
        ([(utc(2025, 2, 27), utc(2025, 2, 28))], 0.0),
        # ended exactly at the period start
        ([(utc(2025, 2, 28, 23), PERIOD)], 0.0),
        # a running run counts up to now
        ([(NOW - timedelta(minutes=5), None)], 5.0),
        # a running run that started before the period counts from the period start
        ([(utc(2025, 2, 28, 23), None)], (NOW - PERIOD) / timedelta(minutes=1)),
        # an end after now (clock skew between nodes) counts up to now only
        ([(NOW - timedelta(minutes=2), NOW + timedelta(minutes=10))], 2.0),
        # a start after now counts nothing
        ([(NOW + timedelta(minutes=1), None)], 0.0),
        ([(NOW + timedelta(minutes=1), NOW + timedelta(minutes=3))], 0.0),
        # several runs add up; runs side by side each use their own runtime
        (
            [
                (utc(2025, 3, 5, 10), utc(2025, 3, 5, 10, 30)),
                (utc(2025, 2, 28, 23, 50), utc(2025, 3, 1, 0, 10)),
                (NOW - timedelta(minutes=5), None),
            ],
            45.0,
        ),
        (
            [
                (utc(2025, 3, 2, 9), utc(2025, 3, 2, 9, 10)),
                (utc(2025, 3, 2, 9), utc(2025, 3, 2, 9, 10)),
            ],
            20.0,
        ),
    ],
)
def test_used_minutes(intervals: list[Interval], expected: float) -> None:
    assert used_minutes(intervals, PERIOD, NOW) == pytest.approx(expected, abs=1e-9)


def test_used_minutes_takes_any_iterable() -> None:
    intervals = iter([(utc(2025, 3, 5, 10), utc(2025, 3, 5, 10, 6))])
    assert used_minutes(intervals, PERIOD, NOW) == pytest.approx(6.0)


# ----- runtime and quota ------------------------------------------------------------


@pytest.mark.parametrize(
    ("allowance", "used", "expected"),
    [
        (600.0, 0.0, Runtime(used=0.0, allowance=600.0, remaining=600.0, limited=True)),
        (15000.0, 0.47, Runtime(used=0.47, allowance=15000.0, remaining=14999.53, limited=True)),
        (600.0, 12.3456, Runtime(used=12.35, allowance=600.0, remaining=587.65, limited=True)),
        (600.0, 12.3449, Runtime(used=12.34, allowance=600.0, remaining=587.66, limited=True)),
        (90.555, 0.0, Runtime(used=0.0, allowance=90.56, remaining=90.56, limited=True)),
        # used up, and more (a run that ran past the allowance): remaining stays at 0
        (0.02, 0.02, Runtime(used=0.02, allowance=0.02, remaining=0.0, limited=True)),
        (0.02, 0.05, Runtime(used=0.05, allowance=0.02, remaining=0.0, limited=True)),
        (0.0, 0.0, Runtime(used=0.0, allowance=0.0, remaining=0.0, limited=True)),
        (10.0, 1234.5, Runtime(used=1234.5, allowance=10.0, remaining=0.0, limited=True)),
        # no allowance: reported as numbers, never null
        (
            None,
            0.0,
            Runtime(
                used=0.0, allowance=UNLIMITED_MINUTES, remaining=UNLIMITED_MINUTES, limited=False
            ),
        ),
        (
            None,
            0.47,
            Runtime(
                used=0.47,
                allowance=UNLIMITED_MINUTES,
                remaining=UNLIMITED_MINUTES - 0.47,
                limited=False,
            ),
        ),
    ],
)
def test_runtime(allowance: float | None, used: float, expected: Runtime) -> None:
    got = runtime(Account("acme", runtime_allowance_minutes=allowance), used)
    assert got == expected
    for value in (got.used, got.allowance, got.remaining):
        assert isinstance(value, float)
        assert round(value, 2) == value


def test_unlimited_is_a_large_whole_number_of_minutes() -> None:
    # About 1,900 years: clients comparing `remaining` against a need never stop.
    assert UNLIMITED_MINUTES == 1_000_000_000
    assert UNLIMITED_MINUTES / (60 * 24 * 365) > 1000


@pytest.mark.parametrize("allowance", [100.0, 1.0, 15000.0, None])
@pytest.mark.parametrize("used", [0.005, 0.015, 0.035, 0.115, 0.125, 0.475, 12.345, 0.994])
def test_reported_remaining_is_allowance_minus_reported_used(
    allowance: float | None, used: float
) -> None:
    """The contract says remaining = allowance - used; it must hold for the numbers shown.

    A client reading used 0.01 and allowance 100 must not be told remaining 100.
    """
    got = runtime(Account("acme", runtime_allowance_minutes=allowance), used)
    assert got.remaining == round(max(got.allowance - got.used, 0.0), 2), got


@pytest.mark.parametrize(
    ("allowance", "used", "expected"),
    [
        (None, 0.0, False),
        (None, 1e12, False),  # no allowance: never exhausted
        (10.0, 0.0, False),
        (10.0, 9.99, False),
        (10.0, 10.0, True),  # all of it used: no room for a new run
        (10.0, 10.01, True),
        (0.02, 0.0149, False),  # remaining reads 0.01
        (0.02, 0.0199, True),  # remaining reads 0.00: refused, as /remaining-runtime says
        (0.02, 0.05, True),
        (0.0, 0.0, True),  # an allowance of 0 allows no run at all
    ],
)
def test_quota_exhausted(allowance: float | None, used: float, expected: bool) -> None:
    account = Account("acme", runtime_allowance_minutes=allowance)
    assert quota_exhausted(account, used) is expected


# ----- report_status ------------------------------------------------------------------

T0 = utc(2025, 4, 10, 15, 14, 51)
REPORTED_END = {
    EndReason.SUCCESS: "Success",
    EndReason.FAILED: "Failure",
    EndReason.STOPPED: "Failure",  # a stopped run reports Failure
    EndReason.TIMEOUT: "Failure",
    EndReason.CRASHED: "Failure",
    EndReason.SKIPPED: "Failure",
    EndReason.LOG_OVERFLOW: "Failure",
    EndReason.QUEUE_FULL: "Failure",
    EndReason.MISSED: "Failure",
    EndReason.DAEMON_STOPPED: "Failure",
    EndReason.START_FAILED: "Failure",
    EndReason.UNHEALTHY: "Failure",  # a service's lifetime; v3 accounts never see one
}


def a_run(status: RunStatus, end_reason: EndReason | None = None) -> Run:
    return Run(
        id="01JRQ7Z6V0K8X3M5N2P4R6T8W0",
        task_name="acme-report",
        status=status,
        created_at=T0,
        triggered_by=TriggeredBy.CLOUD,
        end_reason=end_reason,
        start_at=T0 if status is not RunStatus.PENDING else None,
        end_at=T0 + timedelta(seconds=9) if status is RunStatus.ENDED else None,
        account="acme",
    )


def test_every_end_reason_has_an_expected_report_status() -> None:
    assert set(REPORTED_END) == set(EndReason)


@pytest.mark.parametrize(
    ("status", "end_reason", "expected"),
    [
        # there is no Queued status on this API: a waiting run reports Running
        (RunStatus.PENDING, None, "Running"),
        (RunStatus.RUNNING, None, "Running"),
        *[(RunStatus.ENDED, reason, shown) for reason, shown in REPORTED_END.items()],
    ],
)
def test_report_status(status: RunStatus, end_reason: EndReason | None, expected: str) -> None:
    assert report_status(a_run(status, end_reason)) == expected


# ----- viewer links -----------------------------------------------------------------

RUN_IDS = [
    "01JRQ7Z6V0K8X3M5N2P4R6T8W0",
    "01JRQ7Z6V0K8X3M5N2P4R6T8W1",
    "01ARZ3NDEKTSV4RRFFQ69G5FAV",
    "00000000000000000000000000",
    "7ZZZZZZZZZZZZZZZZZZZZZZZZZ",
]
HOST_RE = re.compile(r"^c-00\d\d-runyard$")


@pytest.mark.parametrize("run_id", RUN_IDS)
def test_viewer_host_and_pid(run_id: str) -> None:
    host = viewer_host(run_id)
    pid = viewer_pid(run_id)
    assert HOST_RE.fullmatch(host), host
    assert re.fullmatch(r"\d\d", pid), pid
    # What the widely used client does with the link: split on "-", take characters 2..4.
    assert host.split("-")[1][2:4] == pid
    # Stable: a link handed out earlier must keep stopping its run.
    assert viewer_host(run_id) == host
    assert viewer_pid(run_id) == pid


@pytest.mark.parametrize(
    ("run_id", "pid"),
    [
        # Pinned: links already handed out must still match after an upgrade.
        ("01JRQ7Z6V0K8X3M5N2P4R6T8W0", "37"),
        ("01ARZ3NDEKTSV4RRFFQ69G5FAV", "91"),
    ],
)
def test_viewer_pid_is_pinned(run_id: str, pid: str) -> None:
    assert viewer_pid(run_id) == pid


def test_viewer_pids_spread_over_the_two_digits() -> None:
    pids = {viewer_pid(f"01JRQ7Z6V0K8X3M5N2P4R{index:05d}") for index in range(2000)}
    # Derived from the run, not a constant: nearly every value of 00..99 shows up.
    assert len(pids) >= 90
    assert all(0 <= int(pid) <= 99 for pid in pids)


# ----- hash_secret -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("secret", "expected"),
    [
        # SHA-256 test vectors (FIPS 180-2)
        ("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        ("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        (
            "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
        ),
    ],
)
def test_hash_secret_is_sha256_hex(secret: str, expected: str) -> None:
    assert hash_secret(secret) == expected


def test_hash_secret_encodes_utf8_and_tells_secrets_apart() -> None:
    hashes = {hash_secret(secret) for secret in ("ryk_a", "ryk_b", "ryk_A", "ryk_a ", "Zoë")}
    assert len(hashes) == 5
    assert all(re.fullmatch(r"[0-9a-f]{64}", value) for value in hashes)
    assert hash_secret("Zoë") == hash_secret("Zoë")


RUN_ID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"


def test_a_viewer_password_names_its_run() -> None:
    password = viewer_password(RUN_ID, "Zm9vYmFyYmF6cXV4LXNlY3JldA")
    assert password == f"{RUN_ID}.Zm9vYmFyYmF6cXV4LXNlY3JldA"
    assert password_run_id(password) == RUN_ID


@pytest.mark.parametrize(
    "password",
    [
        "Zm9vYmFyYmF6cXV4LXNlY3JldA",  # a bare secret (links issued before 0004)
        f"{RUN_ID}.",  # an id without a secret
        f"{RUN_ID[:-1]}.secret",  # too short to be a run id
        f"{RUN_ID}X.secret",  # too long
        "",
    ],
)
def test_a_password_without_a_run_id_names_none(password: str) -> None:
    assert password_run_id(password) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ryk_01JN8S7QKVVT7NA6W7W83MG8PM_-xESjWEGE659BEwuduZbt", "01JN8S7QKVVT7NA6W7W83MG8PM"),
        (" ryk_01JN8S7QKVVT7NA6W7W83MG8PM_abc\n", "01JN8S7QKVVT7NA6W7W83MG8PM"),
        ("01JN8S7QKVVT7NA6W7W83MG8PM", None),  # an id, not a key
        ("ryk_FvS2xKqnb0-older-keys-carry-no-id", None),
        ("ryk_01JN8S7QKVVT7NA6W7W83MG8P_abc", None),  # 25 characters
        ("ryk_01JN8S7QKVVT7NA6W7W83MG8PU_abc", None),  # U is not Crockford base32
    ],
)
def test_key_id_in(text: str, expected: str | None) -> None:
    assert key_id_in(text) == expected


def test_a_key_names_its_id() -> None:
    assert key_plaintext("01JN8S7QKVVT7NA6W7W83MG8PM", "s3cr3t") == (
        "ryk_01JN8S7QKVVT7NA6W7W83MG8PM_s3cr3t"
    )
