"""Waiting on several things at once, giving way to a timeout and to shutdown.

Streams (a log followed, run events, a trigger that waits for its run) wait
for whichever comes first: the next item, the end, a quiet spell long enough
for a keepalive, or the server going down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class StopSignal(Protocol):
    """What tells a stream the server is going down (api.deps.Closing)."""

    async def wait(self) -> None:
        """Return once the server is closing."""


class Closed(Exception):
    """The server is shutting down; the stream should end now."""


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def detach(future: asyncio.Future[Any]) -> None:
    """Cancel a task nobody will await, without awaiting it.

    Its outcome is still retrieved, so asyncio never reports "exception was
    never retrieved" for it.
    """
    future.cancel()
    future.add_done_callback(_consume)


async def first_of(
    awaitables: dict[str, Awaitable[T]],
    closing: StopSignal,
    timeout: float,
) -> tuple[str, T] | None:
    """Wait for the first awaitable to finish; return (its key, its result).

    Return None after `timeout` seconds with nothing finished (time for a
    keepalive); raise Closed when the server starts shutting down. Awaitables
    passed as bare coroutines are cancelled when they lose; futures and tasks
    the caller owns are left running. Put the awaitable whose result must not
    be lost first: when several finish together, the first one wins.
    """
    futures: dict[asyncio.Future[Any], str] = {}
    owned: list[asyncio.Future[Any]] = []
    for key, awaitable in awaitables.items():
        started = asyncio.ensure_future(awaitable)
        if started is not awaitable:
            owned.append(started)
        futures[started] = key
    closing_task = asyncio.ensure_future(closing.wait())
    owned.append(closing_task)
    try:
        done, _pending = await asyncio.wait(
            [*futures, closing_task], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        for winner, key in futures.items():
            if winner in done:
                result: T = winner.result()
                return key, result
        if closing_task in done:
            raise Closed
        return None
    finally:
        # No await here: this also runs while the stream is being cancelled. A
        # cancelled Queue.get leaves its item in the queue for the next get.
        for loser in owned:
            detach(loser)
