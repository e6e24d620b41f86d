"""The timer factory the engine schedules with: the running loop's, or a test's fake."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol


class Timer(Protocol):
    def cancel(self) -> None: ...


class CallLater(Protocol):
    """Call `callback(*args)` in `delay` seconds; the returned timer cancels it."""

    def __call__(self, delay: float, callback: Callable[..., object], *args: Any) -> Timer: ...


def loop_call_later(delay: float, callback: Callable[..., object], *args: Any) -> Timer:
    """The real factory: the running event loop's call_later."""
    return asyncio.get_running_loop().call_later(delay, callback, *args)
