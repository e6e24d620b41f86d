"""Dashboard sign-in: server-side sessions in memory, CSRF tokens, and the sign-in limit.

A session is a random id (256 bits) in an HttpOnly, SameSite=Strict cookie,
pointing at an entry in this process's memory: signing out forgets it at once,
and a daemon restart forgets them all (people sign in again; nothing to store,
nothing to leak from the data dir). Each session carries its own CSRF token,
which every state-changing form and request must send back.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from runyard.domain.ratelimit import RollingWindow

COOKIE = "runyard_session"
LOGIN_COOKIE = "runyard_login"  # double-submit token of the sign-in form (no session yet)
IDLE_SECONDS = 12 * 3600  # a session unused this long is forgotten
MAX_AGE_SECONDS = 7 * 24 * 3600  # and any session after a week
MAX_SESSIONS = 10_000  # oldest forgotten first beyond this
FAILED_SIGN_INS = 5  # per address ...
FAILED_WINDOW_SECONDS = 300.0  # ... in any 5 minutes, then 429


@dataclass
class Session:
    id: str
    csrf: str
    created: float
    seen: float
    # One-shot messages for the next page (post/redirect/get): (kind, text).
    flashes: list[tuple[str, str]] = field(default_factory=list)
    # A key created on the Accounts page, shown on the next page only.
    new_key: tuple[str, str] | None = None


class Sessions:
    """The signed-in browsers of this daemon."""

    def __init__(self) -> None:
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._failures = RollingWindow(FAILED_WINDOW_SECONDS)

    @staticmethod
    def _now() -> float:
        return time.monotonic()

    def create(self) -> Session:
        now = self._now()
        session = Session(
            id=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32), created=now, seen=now
        )
        self._sessions[session.id] = session
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = self._now()
        if now - session.seen > IDLE_SECONDS or now - session.created > MAX_AGE_SECONDS:
            del self._sessions[session_id]
            return None
        session.seen = now
        self._sessions.move_to_end(session_id)
        return session

    def end(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(session_id, None)

    # ----- the sign-in limit ---------------------------------------------------

    def sign_in_retry_after(self, address: str) -> float:
        """Return the seconds until `address` may try again (0: it may now)."""
        return self._failures.retry_after(address, FAILED_SIGN_INS, self._now())

    def count_failure(self, address: str) -> None:
        now = self._now()
        if self._failures.size() > MAX_SESSIONS:
            self._failures.forget_idle(now)
        self._failures.allow(address, FAILED_SIGN_INS, now)


def tokens_match(given: str, expected: str) -> bool:
    """Compare two secrets in constant time (bytes: compare_digest refuses non-ASCII str)."""
    return secrets.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def safe_next(value: str | None) -> str:
    """Return `value` if it is a path on this site, else "/" (no open redirect)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or any(ord(char) < 32 for char in value):
        return "/"
    return value
