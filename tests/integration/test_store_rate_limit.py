"""A key's rate limit counted in a real PostgreSQL that two nodes share (store/rate_limit.py).

Two RunStores on one database are two daemons' connections. Time is moved by
writing calls stamped in the past (by the database's clock), not by sleeping.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa

from runyard.store import RunStore
from runyard.store.rate_limit import CallVerdict, SharedRateLimit
from runyard.store.schema import v3_calls

pytestmark = pytest.mark.postgres

KEY = "01JKEY0000000000000000000A"
OTHER_KEY = "01JKEY0000000000000000000B"


@pytest.fixture
def store(fresh_postgres: str) -> Iterator[RunStore]:
    opened = RunStore.open(fresh_postgres)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def second_store(store: RunStore, postgres_database: str) -> Iterator[RunStore]:
    """A second store on the same database, as a second daemon has."""
    other = RunStore.open(postgres_database)
    try:
        yield other
    finally:
        other.close()


@pytest.fixture
def nodes(store: RunStore, second_store: RunStore) -> tuple[SharedRateLimit, SharedRateLimit]:
    return SharedRateLimit(store.transaction), SharedRateLimit(second_store.transaction)


def _add_calls(store: RunStore, key_id: str, seconds_ago: list[float]) -> None:
    """Store calls of `key_id` made these many seconds ago by the database's clock."""
    with store.transaction(write=True) as connection:
        for ago in seconds_ago:
            connection.execute(
                sa.insert(v3_calls).values(
                    key_id=key_id, at=sa.func.clock_timestamp() - timedelta(seconds=ago)
                )
            )


def _stored(store: RunStore, key_id: str | None = None) -> int:
    query = sa.select(sa.func.count()).select_from(v3_calls)
    if key_id is not None:
        query = query.where(v3_calls.c.key_id == key_id)
    with store.transaction() as connection:
        count: int = connection.execute(query).scalar_one()
    return count


def test_two_nodes_share_one_limit(
    store: RunStore, nodes: tuple[SharedRateLimit, SharedRateLimit]
) -> None:
    alpha, bravo = nodes
    answers = [(alpha, bravo)[index % 2].count_call(KEY, 5) for index in range(5)]
    assert answers == [CallVerdict(allowed=True)] * 5
    for node in (alpha, bravo):
        refused = node.count_call(KEY, 5)
        assert not refused.allowed
        # The oldest of the five was made a moment ago: almost the whole minute to wait.
        assert 50 < refused.retry_after <= 60, refused
    # A refused call is not recorded; another key has its own allowance.
    assert _stored(store, KEY) == 5
    assert bravo.count_call(OTHER_KEY, 5) == CallVerdict(allowed=True)


def test_calls_older_than_the_window_stop_counting_and_are_deleted(
    store: RunStore, nodes: tuple[SharedRateLimit, SharedRateLimit]
) -> None:
    alpha, bravo = nodes
    _add_calls(store, KEY, [61, 62, 63, 64, 65])
    answers = [(alpha, bravo)[index % 2].count_call(KEY, 5) for index in range(5)]
    assert answers == [CallVerdict(allowed=True)] * 5
    assert not alpha.count_call(KEY, 5).allowed
    assert _stored(store, KEY) == 5  # the old five were deleted by the first call


def test_retry_after_is_when_the_call_limit_places_from_the_newest_leaves_the_window(
    store: RunStore, nodes: tuple[SharedRateLimit, SharedRateLimit]
) -> None:
    alpha, bravo = nodes
    # Three calls in the window and a limit of 2 (lowered by a reload, say):
    # the second newest, 40 s old, must leave before a call is allowed.
    _add_calls(store, KEY, [50, 40, 30])
    refused = alpha.count_call(KEY, 2)
    assert not refused.allowed
    assert 19 < refused.retry_after <= 20, refused
    # Calls almost a minute old: a call is allowed within two seconds.
    _add_calls(store, OTHER_KEY, [58, 57.5])
    soon = bravo.count_call(OTHER_KEY, 2)
    assert not soon.allowed
    assert 0 < soon.retry_after <= 2, soon


def test_racing_threads_on_two_nodes_get_exactly_the_limit(
    store: RunStore, nodes: tuple[SharedRateLimit, SharedRateLimit]
) -> None:
    answers: list[bool] = []
    record = threading.Lock()
    start = threading.Barrier(8)

    def caller(index: int) -> None:
        node = nodes[index % 2]
        for _ in range(5):
            # All eight at once, five times: the calls that find 8 or 9 stored race for the last.
            start.wait()
            allowed = node.count_call(KEY, 10).allowed
            with record:
                answers.append(allowed)

    threads = [threading.Thread(target=caller, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(answers) == 40
    assert answers.count(True) == 10
    assert _stored(store, KEY) == 10


def test_a_sweep_deletes_every_key_s_old_calls_and_keeps_recent_ones(
    store: RunStore, nodes: tuple[SharedRateLimit, SharedRateLimit]
) -> None:
    alpha, _bravo = nodes
    _add_calls(store, OTHER_KEY, [120, 90, 61, 30])
    alpha.count_call(KEY, 5)
    assert _stored(store, OTHER_KEY) == 4  # no sweep: another key's rows stay
    alpha.count_call(KEY, 5, sweep=True)
    assert _stored(store, OTHER_KEY) == 1
    assert _stored(store, KEY) == 2
    # A refused call sweeps too.
    _add_calls(store, OTHER_KEY, [100])
    assert not alpha.count_call(KEY, 2, sweep=True).allowed
    assert _stored(store, OTHER_KEY) == 1
