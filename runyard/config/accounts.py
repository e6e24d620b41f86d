"""Read the `[accounts.<id>]` tables: who may call the v3 API, and within what limits."""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Collection
from typing import Any, cast

from runyard.config.checks import (
    Check,
    Problems,
    check_int,
    check_keys,
    check_size,
    check_str,
    check_table,
    describe,
    key_path,
    quote,
)
from runyard.domain.accounts import DEFAULT_ACCOUNT, Account

ACCOUNT_ID_PATTERN = r"^[a-zA-Z0-9._-]{1,64}$"
_ACCOUNT_ID_RE = re.compile(ACCOUNT_ID_PATTERN)


def default_accounts() -> dict[str, Account]:
    """Return the accounts of a config that declares none: `default`, without limits."""
    return {DEFAULT_ACCOUNT: Account(DEFAULT_ACCOUNT)}


def check_minutes(value: object, path: str, problems: Problems) -> float | None:
    """Return a number of minutes, zero or more, written as an integer or a float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.add(path, f"expected a number of minutes, got {describe(value)}")
        return None
    # TOML has inf and nan; "no limit" is written by leaving the key out.
    if not math.isfinite(value):
        problems.add(path, f"must be a finite number (leave the key out for no limit), got {value}")
        return None
    if value < 0:
        problems.add(path, f"must be at least 0, got {value}")
        return None
    return float(value)


def check_patterns(value: object, path: str, problems: Problems) -> tuple[str, ...] | None:
    """Return the non-empty list of task name glob patterns, without repeats."""
    if not isinstance(value, list):
        problems.add(
            path,
            f'expected an array of task name patterns like ["report-*"], got {describe(value)}',
        )
        return None
    if not value:
        problems.add(path, 'must list at least one pattern (["*"] allows every task)')
        return None
    patterns = [
        check_str(item, f"{path}[{index}]", problems, non_empty=True)
        for index, item in enumerate(value)
    ]
    valid = [pattern for pattern in patterns if pattern is not None]
    if len(valid) != len(patterns):
        return None
    return tuple(dict.fromkeys(valid))


# Keys an account may set, each with its check; the names are Account's fields.
ACCOUNT_CHECKS: dict[str, Check] = {
    "max_concurrent_runs": lambda v, p, pr: check_int(v, p, pr, 1, 1024),
    "runtime_allowance_minutes": check_minutes,
    "billing_anchor": lambda v, p, pr: check_int(v, p, pr, 1, 31),
    "tasks": check_patterns,
    "rate_limit_per_minute": lambda v, p, pr: check_int(v, p, pr, 1, 1_000_000),
    "max_queued_input": lambda v, p, pr: check_size(v, p, pr, 0),
}


def parse_accounts(
    value: object, task_names: Collection[str], problems: Problems
) -> dict[str, Account]:
    """Return the accounts of the `[accounts]` table, sorted by id.

    Without accounts (no table, or an empty one) the `default` account, with
    no limits, is the only one. A task pattern that matches none of
    `task_names` is a warning: the task may be added later.
    """
    table = check_table(value, "accounts", problems)
    if table is None:
        return {}
    if not table:
        return default_accounts()
    accounts: dict[str, Account] = {}
    for account_id, raw in table.items():
        path = key_path("accounts", account_id)
        before = len(problems)
        if not _ACCOUNT_ID_RE.fullmatch(account_id):
            problems.add(path, f"account id must match {ACCOUNT_ID_PATTERN}")
        account = _parse_account(account_id, raw, path, problems)
        if account is not None and len(problems) == before:
            if isinstance(raw, dict) and "tasks" in raw:
                # Only patterns the user wrote: the default "*" is not a claim.
                _warn_unmatched_patterns(account, path, task_names, problems)
            accounts[account_id] = account
    return dict(sorted(accounts.items()))


def _parse_account(account_id: str, raw: object, path: str, problems: Problems) -> Account | None:
    table = check_table(raw, path, problems)
    if table is None:
        return None
    before = len(problems)
    check_keys(table, path, ACCOUNT_CHECKS, problems)
    fields: dict[str, object] = {}
    for key, item in table.items():
        if key in ACCOUNT_CHECKS:
            parsed = ACCOUNT_CHECKS[key](item, key_path(path, key), problems)
            if parsed is not None:
                fields[key] = parsed
    if len(problems) > before:
        return None
    # Every value was checked against its field's type by ACCOUNT_CHECKS.
    return Account(id=account_id, **cast(dict[str, Any], fields))


def _warn_unmatched_patterns(
    account: Account, path: str, task_names: Collection[str], problems: Problems
) -> None:
    for pattern in account.tasks:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in task_names):
            problems.warn(
                key_path(path, "tasks"),
                f"pattern {quote(pattern)} matches none of the configured tasks",
            )
