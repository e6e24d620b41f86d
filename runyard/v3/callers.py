"""Who calls the v3 API, and how often: keys looked up (and trusted a second), rate limits.

A call with a key is counted against the key's `rate_limit_per_minute`;
`/stop` carries no key and is limited per client address, and so are invalid
keys (`max_invalid_keys_per_minute`): one rolling window in this daemon's
memory holds all three. Nodes sharing a PostgreSQL count each key's calls in
the database instead (store/rate_limit.py), so the key's limit holds for the
cluster; the addresses' limits stay per node (they are about clients hitting
this node).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from runyard.domain.accounts import Account, ApiKey, hash_secret
from runyard.domain.ratelimit import RATE_WINDOW_SECONDS, RollingWindow
from runyard.exceptions import StoreError, V3Error
from runyard.store.keys import KeyStore, revoked_stamp
from runyard.store.rate_limit import SharedRateLimit
from runyard.v3.messages import INVALID_KEY, RATE_LIMITED
from runyard.v3.ports import Settings

log = logging.getLogger("runyard.v3")

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
# How often a key's last_used_at is written: the Accounts page shows it to the minute.
KEY_TOUCH_SECONDS = 60.0
# How often this node's counting of a call also deletes every key's calls that
# left the window (keys never used again): rows a key's next call does not trim.
SWEEP_SECONDS = 60.0


@dataclass(frozen=True)
class Caller:
    """Who is calling: the account of an active key, and the key's id (the rate-limit unit)."""

    account: Account
    key_id: str


class Callers:
    """Authenticate keys and count calls, in this daemon's memory or the shared database."""

    def __init__(
        self,
        keys: KeyStore,
        config: Callable[[], Settings],
        data_dir: Path,
        *,
        now: Callable[[], datetime],
        monotonic: Callable[[], float] = time.monotonic,
        shared_limit: SharedRateLimit | None = None,
    ) -> None:
        """`config` is read at each call: a reload may change the accounts and limits.

        `shared_limit`: the key limits counted in the database several nodes
        share (PostgreSQL); None counts them in memory (SQLite, one daemon).
        """
        self._keys = keys
        self._config = config
        self._data_dir = data_dir
        self._now = now
        self._monotonic = monotonic
        self._window = RollingWindow(RATE_WINDOW_SECONDS)
        self._shared_limit = shared_limit
        self._swept_at = -SWEEP_SECONDS  # monotonic time of this node's last sweep
        self._shared_failing = False  # the last shared count failed: counting in memory
        self._known_keys: dict[str, tuple[float, ApiKey]] = {}  # hash -> (found at, key)
        self._touched: dict[str, float] = {}  # key id -> when last_used_at was last written
        self._revoked_stamp = revoked_stamp(data_dir)

    async def authenticate(self, key: object) -> Caller:
        """Return the caller owning `key`; V3Error 401 when it is missing, wrong or revoked."""
        if not isinstance(key, str) or not key:
            raise V3Error(401, INVALID_KEY)
        found = await self._lookup(key)
        accounts = self._config().accounts
        if found is None or found.account not in accounts:
            # A key of an account removed from the config opens nothing.
            raise V3Error(401, INVALID_KEY)
        return Caller(account=accounts[found.account], key_id=found.id)

    async def is_valid_key(self, key: str) -> bool:
        """Return whether `key` is an active key of an account in the config."""
        found = await self._lookup(key)
        return found is not None and found.account in self._config().accounts

    async def _lookup(self, key: str) -> ApiKey | None:
        """Return the active key `key`, from the database or a lookup of the last second."""
        digest = hash_secret(key)
        now = self._monotonic()
        stamp = revoked_stamp(self._data_dir)
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
            await asyncio.to_thread(self._keys.touch, key.id, self._now())
        except StoreError:
            # A missed "last used" is not worth refusing the call: the next one writes it.
            self._touched.pop(key.id, None)

    # ----- rate limits -------------------------------------------------------------

    async def count_call(self, caller: Caller) -> None:
        """Count one v3 call against the key's limit; V3Error 429 when over it."""
        if self._shared_limit is not None:
            await self._count_shared_call(self._shared_limit, caller)
            return
        # One daemon: in memory, with no thread hop and no await.
        limit = caller.account.rate_limit_per_minute
        now = self._monotonic()
        if not self._window.allow(caller.key_id, limit, now):
            raise V3Error(429, RATE_LIMITED, self._window.retry_after(caller.key_id, limit, now))

    async def _count_shared_call(self, shared: SharedRateLimit, caller: Caller) -> None:
        """Count the call in the database the nodes share; in memory while it fails."""
        limit = caller.account.rate_limit_per_minute
        started = self._monotonic()
        sweep = started - self._swept_at >= SWEEP_SECONDS
        try:
            verdict = await asyncio.to_thread(shared.count_call, caller.key_id, limit, sweep=sweep)
        except StoreError as error:
            # A call is not refused because its count could not be shared: it
            # is held to what this node saw of the key in the last minute.
            if not self._shared_failing:
                log.warning(
                    "v3 rate limits are counted by this node alone until the database "
                    "answers again: %s",
                    error,
                )
                self._shared_failing = True
            now = self._monotonic()
            if not self._window.allow(caller.key_id, limit, now):
                raise V3Error(
                    429, RATE_LIMITED, self._window.retry_after(caller.key_id, limit, now)
                ) from None
            return
        if self._shared_failing:
            log.info("v3 rate limits are counted across the nodes again")
            self._shared_failing = False
        if sweep:
            self._swept_at = started
        if not verdict.allowed:
            raise V3Error(429, RATE_LIMITED, verdict.retry_after)
        # This node's calls are kept in memory too: what it goes by if the
        # database fails (what it answers is the database's count).
        self._window.allow(caller.key_id, limit, self._monotonic())

    def invalid_key_retry_after(self, client: str) -> float:
        """Return the seconds until `client` may present a key again (0: it may now)."""
        limit = self._config().daemon.max_invalid_keys_per_minute
        return self._window.retry_after(INVALID_KEY_RATE_KEY + client, limit, self._monotonic())

    def count_invalid_key(self, client: str, weight: int = 1) -> None:
        """Count an invalid key presented by `client`, as `weight` calls."""
        limit = self._config().daemon.max_invalid_keys_per_minute
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
