"""The runtime each v3 account used in its current billing period, and its quota."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import datetime

from runyard.clock import utc_now
from runyard.domain.accounts import (
    Account,
    Runtime,
    billing_period_start,
    quota_exhausted,
    runtime,
    used_minutes,
)
from runyard.store import RunStore


class AccountUsage:
    """Used minutes, from the runs' start and end times in the store."""

    def __init__(
        self,
        store: RunStore,
        accounts: Callable[[], Mapping[str, Account]],
        *,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        """`accounts` is read at each call: a reload may change them."""
        self._store = store
        self._accounts = accounts
        self._now = now

    async def used_minutes(self, account: Account) -> float:
        """Return the minutes of runtime `account` used in its current billing period."""
        now = self._now()
        since = billing_period_start(account.billing_anchor, now)
        intervals = await asyncio.to_thread(self._store.runtime_intervals, account.id, since)
        return used_minutes(intervals, since, now)

    async def runtime(self, account: Account) -> Runtime:
        """Return the account's used, allowed and remaining minutes in this billing period."""
        return runtime(account, await self.used_minutes(account))

    async def quota_exhausted(self, account: Account) -> bool:
        """Return whether `account` has no runtime left (never, without an allowance)."""
        if account.runtime_allowance_minutes is None:
            return False
        return quota_exhausted(account, await self.used_minutes(account))

    async def by_account(self) -> dict[str, float]:
        """Runtime each configured account used in its current billing period, in minutes."""
        return {
            account.id: await self.used_minutes(account) for account in self._accounts().values()
        }
