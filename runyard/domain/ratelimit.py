"""A rolling-window rate limit: at most `limit` calls in any `window` seconds."""

from __future__ import annotations

from collections import deque

# The v3 API's rate limits count the calls of the last minute.
RATE_WINDOW_SECONDS = 60.0


class RollingWindow:
    """Count calls per key over the last `window` seconds; time is passed in.

    Each key keeps the times of its recent calls, at most `limit` of them, so
    memory is bounded by limit x keys however hard a key is hammered.
    """

    def __init__(self, window: float = 60.0) -> None:
        self.window = window
        self._calls: dict[str, deque[float]] = {}

    def allow(self, key: str, limit: int, now: float) -> bool:
        """Record a call of `key` at `now` and return True, or return False if over `limit`.

        A refused call is not recorded: it had no effect, so it uses no allowance.
        """
        calls = self._calls.setdefault(key, deque())
        horizon = now - self.window
        while calls and calls[0] <= horizon:
            calls.popleft()
        if len(calls) >= limit:
            return False
        calls.append(now)
        return True

    def retry_after(self, key: str, limit: int, now: float) -> float:
        """Return the seconds until `key` may call again under `limit` (0 when it may now)."""
        calls = self._calls.get(key)
        if not calls:
            return 0.0
        horizon = now - self.window
        recent = [at for at in calls if at > horizon]
        if len(recent) < limit:
            return 0.0
        # The call that frees a slot is the one `limit` places from the newest.
        return max(recent[-limit] + self.window - now, 0.0)

    def size(self) -> int:
        """Return how many keys are remembered."""
        return len(self._calls)

    def forget_idle(self, now: float) -> None:
        """Forget keys with no call in the last window (they are allowed in full again anyway)."""
        horizon = now - self.window
        self._calls = {
            key: calls for key, calls in self._calls.items() if calls and calls[-1] > horizon
        }
