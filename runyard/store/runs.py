"""RunStore: every read and write of run history."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql.elements import ColumnElement

from runyard.clock import Clock, utc_now
from runyard.domain.models import Run, RunStatus
from runyard.domain.notifications import Notification
from runyard.domain.queries import RunQuery
from runyard.exceptions import LeaseLost, StoreError
from runyard.store import database, search, task_state
from runyard.store import notifications as notification_rows
from runyard.store._bulk import insert_runs, write_runs
from runyard.store._rows import (
    MUTABLE_COLUMNS,
    SUMMARY_COLUMNS,
    row_to_run,
    run_to_row,
    update_values,
)
from runyard.store._upsert import conflict_insert
from runyard.store.claims import (
    AdmitTrigger,
    Claim,
    StartLimits,
    admit_triggers,
    admitted_before,
    adopt_pending,
    claim_starts,
    lock_lanes,
)
from runyard.store.notices import LaneListener, notify_stop, notify_tasks
from runyard.store.run_list import counted_total, list_statements, should_walk_sort_index
from runyard.store.schema import nodes, run_counts, runs
from runyard.store.task_state import TaskState

# Runs deleted per retention transaction: SQLite holds its one write lock that long.
_DELETE_BATCH = 1000
_IDS_PER_QUERY = 500  # ids bound in one IN list (SQLite allows 32766 parameters)

_ACTIVE_STATUSES = (RunStatus.PENDING.value, RunStatus.RUNNING.value)

_UPDATE = (
    sa.update(runs)
    .where(runs.c.id == sa.bindparam("run_id"))
    # bindparam names may not be column names in an UPDATE's SET clause.
    .values({column: sa.bindparam(f"new_{column}") for column in MUTABLE_COLUMNS})
)


# With RETURNING, SQLAlchemy sends many rows as one multi-row INSERT per page
# ("insertmanyvalues") instead of one statement per row: a third less work per
# run. Used on PostgreSQL, and on SQLite when a batch also updates runs (new
# runs alone go in through store/_bulk.py). Databases without INSERT ...
# RETURNING (SQLite before 3.35) get the plain executemany.
_INSERT_MANY = sa.insert(runs).returning(runs.c.id, sort_by_parameter_order=False)


def _insert(connection: Connection, rows: list[dict[str, Any]]) -> None:
    if connection.dialect.insert_executemany_returning:
        connection.execute(_INSERT_MANY, rows)
    else:
        connection.execute(sa.insert(runs), rows)


def _hold_lease(connection: Connection, node: str, instance: str) -> None:
    """Go on only while this node's lease is its own: LeaseLost once another node took it over.

    FOR KEY SHARE on the node's row conflicts with the take-over (FOR UPDATE,
    then DELETE) and not with a renewal: a write and a take-over of the same
    node never interleave. Either the write commits first and the take-over
    sees what it wrote, or the take-over commits first and the write finds no
    row and stores nothing.
    """
    held = connection.execute(
        sa.select(nodes.c.name)
        .where(nodes.c.name == node, nodes.c.instance == instance)
        .with_for_update(read=True, key_share=True)
    ).first()
    if held is None:
        raise LeaseLost(
            f"node {node!r} lost its lease: another node took its runs over, "
            "so what it had still to write about them is dropped"
        )


def _insert_missing(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert the rows whose id is not stored yet; leave stored ones untouched."""
    connection.execute(
        conflict_insert(connection, runs).on_conflict_do_nothing(index_elements=[runs.c.id]),
        rows,
    )


def insert_rows(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert runs (as run_to_row gives them) in the caller's transaction."""
    _insert(connection, rows)


def apply_updates(connection: Connection, updated: Sequence[Run]) -> None:
    """Write the lifecycle columns of stored runs in the caller's transaction."""
    connection.execute(_UPDATE, [_update_params(run) for run in updated])


class RunStore:
    """Run history in SQLite or PostgreSQL; safe to call from any thread."""

    def __init__(self, engine: Engine, clock: Clock = utc_now) -> None:
        """Wrap an engine whose database is migrated; use RunStore.open instead.

        `clock` stamps the rows whose time the caller does not give (a task
        state's updated_at when a commit records cron ticks).
        """
        self._engine = engine
        self._clock = clock
        # In-memory SQLite has one connection for everyone: take turns.
        self._lock: AbstractContextManager[object] = (
            threading.Lock() if database.is_shared_connection(engine) else nullcontext()
        )
        self._sqlite = engine.dialect.name == "sqlite"  # the writer's batches: store/_bulk.py
        self._search_index: bool | None = None  # migration 0009's index is there (asked once)
        # (node name, instance) of the daemon writing here, several sharing a
        # PostgreSQL: apply() stores nothing once its lease was taken over.
        self.fence: tuple[str, str] | None = None

    @classmethod
    def open(cls, url: str, clock: Clock = utc_now) -> RunStore:
        """Connect to url, migrate the database to the latest schema and return the store."""
        engine = database.create_engine(url)
        try:
            database.migrate(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, clock)

    @property
    def shared(self) -> bool:
        """Whether several daemons may share this database (PostgreSQL; SQLite never)."""
        return self._engine.dialect.name == "postgresql"

    def close(self) -> None:
        """Close every pooled connection."""
        self._engine.dispose()

    def apply(
        self,
        inserts: Sequence[Run],
        updates: Sequence[Run],
        ticks: Mapping[str, datetime] | None = None,
        *,
        replay: bool = False,
        claims: Mapping[str, datetime] | None = None,
        starts: Sequence[Run] = (),
        start_limits: StartLimits | None = None,
        admissions: Sequence[AdmitTrigger] = (),
    ) -> dict[str, Claim]:
        """Insert new runs, update existing ones by id and record cron ticks, in one transaction.

        `claims` are ticks this node fires where other nodes fire the same
        schedule (PostgreSQL): each must be later than the stored last_tick,
        else the whole transaction fails with TickTaken and nothing is stored
        (the writer then fails only the change that held that claim).

        An update writes the lifecycle columns (MUTABLE_COLUMNS); on SQLite
        an update to a `running` run writes only what starting changes
        (status, start_at, description: the one such update is a pending run
        starting, see store/_bulk.py). Updates of ids that are not
        stored change nothing. ticks (task name -> tick)
        advance each task's last_tick, never backwards: a cron run and its
        tick are recorded together or not at all. `replay`: these changes may
        have been committed already (a commit whose answer was lost), so runs
        already stored are not inserted again; updates and ticks are
        idempotent anyway.

        With `fence` set (a node of several), nothing is stored once another
        node took this node's lease over: LeaseLost. `starts` are that node's
        runs to start, claimed under `start_limits` after everything else
        (store/claims.py); the answer says each one's fate. `admissions`: the
        triggers among `inserts` whose runs are admitted under their tasks'
        counts across the cluster (claims.admit_triggers); the answer says the
        fate of each of their runs too.

        Raises StoreUnavailable (or DiskFull) when a later try can succeed,
        StoreError when these changes can never be stored.
        """
        if not inserts and not updates and not ticks and not claims and not starts:
            return {}
        if admissions and self.fence is None:
            raise StoreError("triggers are admitted across the cluster only by a node of several")
        if self._sqlite and not ticks and not replay and not claims:
            if updates:
                self._write_sqlite(
                    [run_to_row(run) for run in inserts],
                    [(run.id, update_values(run)) for run in updates],
                )
            else:
                self._insert_sqlite([run_to_row(run) for run in inserts])
            return {}
        with self.transaction(write=True) as connection:
            if self.fence is not None:
                _hold_lease(connection, *self.fence)
            # The runs a trigger's node has a slot for are claimed with their insert.
            starts = [
                *starts,
                *(run.running for trigger in admissions for run in trigger.runs if run.running),
            ]
            if starts or admissions:
                lock_lanes(connection, starts, (trigger.task for trigger in admissions))
            before: dict[str, Claim] = {}
            if admissions and replay and self.fence is not None:
                before = admitted_before(connection, self.fence[0], admissions)
                starts = [run for run in starts if run.id not in before]
            landed: set[str] = set()
            if claims and replay and inserts:
                stored = connection.execute(
                    sa.select(runs.c.task_name).where(runs.c.id.in_([run.id for run in inserts]))
                )
                landed = set(stored.scalars())
            if claims:
                # Before the inserts: a taken tick fails at its first statement.
                task_state.claim_ticks(connection, claims, self._clock(), landed)
            if inserts:
                rows = [run_to_row(run) for run in inserts]
                if replay:
                    _insert_missing(connection, rows)
                else:
                    _insert(connection, rows)
            if updates:
                connection.execute(_UPDATE, [_update_params(run) for run in updates])
            if ticks:
                # updated_at is when the row was written.
                task_state.set_last_ticks(connection, ticks, self._clock())
            claimed: dict[str, Claim] = {}
            if starts:
                # After the updates: runs this batch ends no longer count as running.
                if self.fence is None:
                    raise StoreError("runs are claimed only by a node of several")
                claimed = claim_starts(
                    connection,
                    self.fence[0],
                    starts,
                    start_limits or StartLimits(),
                    replay=replay,
                )
            if admissions:
                admitted = admit_triggers(connection, admissions, claimed, before)
                claimed.update(admitted.fates)
                if admitted.refused:
                    connection.execute(_UPDATE, [_update_params(run) for run in admitted.refused])
                notify_stop(connection, admitted.stop)
            if self.fence is not None:
                # Nodes waiting to claim runs of these tasks try again now.
                ended = [run.task_name for run in updates if run.status is RunStatus.ENDED]
                granted = [run.task_name for run in starts if claimed.get(run.id) is Claim.GRANTED]
                notify_tasks(connection, [*ended, *granted])
        return claimed

    def end_pending(self, ended: Sequence[Run]) -> set[str]:
        """Store these runs' ends only where each is still pending and this node's; return those.

        Several nodes: a run waiting in this node's queue may have been taken
        by another node (and started there) meanwhile; its end is not stored.
        """
        if not ended:
            return set()
        if self.fence is None:
            raise StoreError("end_pending is for a node of several")
        node, _instance = self.fence
        stored: set[str] = set()
        with self.transaction(write=True) as connection:
            _hold_lease(connection, *self.fence)
            for run in ended:
                values = update_values(run)
                done = connection.execute(
                    sa.update(runs)
                    .where(
                        runs.c.id == run.id,
                        runs.c.status == RunStatus.PENDING.value,
                        runs.c.node == node,
                    )
                    .values(**values)
                    .returning(runs.c.id)
                ).first()
                if done is not None:
                    stored.add(run.id)
        return stored

    def adopt_pending(self, room: int, limits: StartLimits, waited_seconds: float) -> list[Run]:
        """Take runs waiting on other nodes for this node (store/claims.py, adopt_pending)."""
        if self.fence is None:
            raise StoreError("adopt_pending is for a node of several")
        with self.transaction(write=True) as connection:
            _hold_lease(connection, *self.fence)
            return adopt_pending(connection, self.fence[0], room, limits, waited_seconds)

    def listen_for_lanes(
        self,
        on_tasks: Callable[[set[str] | None], None],
        on_stop: Callable[[set[str]], None] | None = None,
    ) -> LaneListener:
        """Listen for other nodes' ends, starts and stop requests (store/notices.py)."""
        listener = LaneListener(self._engine, on_tasks, on_stop)
        listener.start()
        return listener

    def ping(self) -> None:
        """Ask the database for a trivial answer; raise StoreUnavailable when it gives none."""
        with self.transaction() as connection:
            connection.execute(sa.text("SELECT 1"))

    def task_states(self) -> dict[str, TaskState]:
        """Return the scheduler state of every task that has one, by task name."""
        with self.transaction() as connection:
            return task_state.load_all(connection)

    def set_paused(self, task_name: str, paused: bool, now: datetime) -> TaskState:
        """Pause or resume a task and return its state.

        Resuming a paused task sets its last_tick to now, so the ticks that
        fell in the pause do not count as missed.
        """
        with self.transaction(write=True) as connection:
            return task_state.set_paused(connection, task_name, paused, now)

    def set_last_ticks(self, ticks: Mapping[str, datetime], now: datetime) -> None:
        """Advance each task's last_tick to its tick; a stored later tick is kept."""
        if not ticks:
            return
        with self.transaction(write=True) as connection:
            task_state.set_last_ticks(connection, ticks, now)

    def get_run(self, run_id: str) -> Run | None:
        """Return the run with this id, or None."""
        with self.transaction() as connection:
            row = connection.execute(sa.select(runs).where(runs.c.id == run_id)).mappings().first()
        return None if row is None else row_to_run(row)

    def existing_run_ids(self, run_ids: Collection[str]) -> set[str]:
        """Return those of `run_ids` that have a row (by primary key, 500 at a time)."""
        wanted = sorted(run_ids)
        found: set[str] = set()
        with self.transaction() as connection:
            for start in range(0, len(wanted), _IDS_PER_QUERY):
                chunk = wanted[start : start + _IDS_PER_QUERY]
                found.update(
                    connection.execute(sa.select(runs.c.id).where(runs.c.id.in_(chunk))).scalars()
                )
        return found

    def list_runs(self, query: RunQuery) -> tuple[list[Run], int]:
        """Return one page of the runs the query selects, and how many it selects in all."""
        dialect = self._engine.dialect.name
        # One snapshot for the page and its total, so they agree while runs come in.
        with self.transaction(snapshot=True) as connection:
            if self._indexed_search(connection, query):
                return search.list_runs(connection, query)
            total: int | None = None
            walk = False
            if not query.search:
                total = int(connection.execute(counted_total(query)).scalar_one())
                walk = dialect == "sqlite" and should_walk_sort_index(connection, query, total)
            page, total_statement = list_statements(query, dialect, walk_sort_index=walk)
            rows = connection.execute(page).mappings().all()
            if total is None:
                if len(rows) < query.limit and (rows or query.offset == 0):
                    # A short page is the last one: the total is known without
                    # counting (a search would read every row a second time).
                    total = query.offset + len(rows)
                else:
                    total = int(connection.execute(total_statement).scalar_one())
        return [row_to_run(row) for row in rows], total

    def list_statements(self, query: RunQuery) -> tuple[sa.Select[Any], sa.Select[Any]]:
        """Return the statements list_runs would run for `query` now (to check their plans)."""
        dialect = self._engine.dialect.name
        walk = False
        if query.search:
            with self.transaction() as connection:
                if self._indexed_search(connection, query):
                    return search.statements(connection, query)
        if dialect == "sqlite" and not query.search:
            with self.transaction() as connection:
                total = int(connection.execute(counted_total(query)).scalar_one())
                walk = should_walk_sort_index(connection, query, total)
        return list_statements(query, dialect, walk_sort_index=walk)

    def active_runs(self) -> list[Run]:
        """Return the pending and running runs, oldest first.

        With their inline input data (small by construction, see
        INLINE_INPUT_BYTES), never their input files, nor any output data.
        """
        statement = (
            sa.select(*SUMMARY_COLUMNS, runs.c.input_data)
            .where(runs.c.status.in_(_ACTIVE_STATUSES))
            .order_by(runs.c.created_at, runs.c.id)
        )
        with self.transaction() as connection:
            rows = connection.execute(statement).mappings().all()
        return [row_to_run(row) for row in rows]

    def delete_expired(
        self, task_name: str, keep_runs: int | None, ended_before: datetime | None
    ) -> list[str]:
        """Delete the task's ended runs past its newest keep_runs, or ended before a time.

        "Newest" is by creation time. Deletes in batches, each its own
        transaction, so writers never wait long; returns the ids deleted,
        oldest first.
        """
        if keep_runs is not None and keep_runs < 0:
            raise ValueError(f"keep_runs must not be negative, got {keep_runs}")
        if keep_runs is None and ended_before is None:
            return []
        deleted: list[str] = []
        while True:
            with self.transaction(write=True) as connection:
                batch = _delete_expired_batch(connection, task_name, keep_runs, ended_before)
            deleted += batch
            if len(batch) < _DELETE_BATCH:
                return deleted

    def account_runs(self, account: str, limit: int) -> list[Run]:
        """Return the newest `limit` runs a v3 account triggered, newest first, without data."""
        statement = (
            sa.select(*SUMMARY_COLUMNS)
            .where(runs.c.account == account)
            .order_by(runs.c.created_at.desc(), runs.c.id.desc())
            .limit(limit)
        )
        with self.transaction() as connection:
            rows = connection.execute(statement).mappings().all()
        return [row_to_run(row) for row in rows]

    def latest_account_run(self, account: str, task_name: str) -> Run | None:
        """Return the newest run of a task that a v3 account triggered, or None.

        With its output data (the /run-data answer), without its input data.
        """
        statement = (
            sa.select(*SUMMARY_COLUMNS, runs.c.output_data)
            .where(runs.c.account == account, runs.c.task_name == task_name)
            .order_by(runs.c.created_at.desc(), runs.c.id.desc())
            .limit(1)
        )
        with self.transaction() as connection:
            row = connection.execute(statement).mappings().first()
        return None if row is None else row_to_run(row)

    def runtime_intervals(
        self, account: str, since: datetime
    ) -> list[tuple[datetime, datetime | None]]:
        """Return (start, end) of the account's runs that ran at or after `since`.

        That is the runs that ended at or after it, and the runs running now
        (end None). Runs that never started are left out: they used no time.
        """
        ended = sa.select(runs.c.start_at, runs.c.end_at).where(
            runs.c.account == account, runs.c.end_at >= since, runs.c.start_at.is_not(None)
        )
        running = sa.select(runs.c.start_at, runs.c.end_at).where(
            runs.c.account == account, runs.c.status == RunStatus.RUNNING.value
        )
        with self.transaction() as connection:
            rows = [*connection.execute(ended).tuples(), *connection.execute(running).tuples()]
        return [(start, end) for start, end in rows if start is not None]

    def active_run_by_secret(self, secret_hash: str) -> Run | None:
        """Return the pending or running run whose viewer password has this hash, or None.

        Only links issued before passwords named their run (migration 0004)
        need it. secret_hash has no index: the status index bounds the search
        to the runs not yet ended.
        """
        statement = (
            sa.select(*SUMMARY_COLUMNS)
            .where(runs.c.status.in_(_ACTIVE_STATUSES), runs.c.secret_hash == secret_hash)
            .order_by(runs.c.created_at.desc(), runs.c.id.desc())
            .limit(1)
        )
        with self.transaction() as connection:
            row = connection.execute(statement).mappings().first()
        return None if row is None else row_to_run(row)

    def task_names_with_runs(self) -> list[str]:
        """Return the names of the tasks that have runs stored, sorted."""
        statement = (
            sa.select(run_counts.c.task_name)
            .where(run_counts.c.count > 0)
            .group_by(run_counts.c.task_name)
            .order_by(run_counts.c.task_name)
        )
        with self.transaction() as connection:
            return list(connection.execute(statement).scalars())

    def last_judged_end(self, task_name: str, reasons: Sequence[str]) -> str | None:
        """Return the end reason of the task's newest run that ended with one of `reasons`."""
        with self.transaction() as connection:
            return connection.execute(
                sa.select(runs.c.end_reason)
                .where(runs.c.task_name == task_name, runs.c.end_reason.in_(list(reasons)))
                .order_by(runs.c.created_at.desc(), runs.c.id.desc())
                .limit(1)
            ).scalar_one_or_none()

    # ----- notifications ---------------------------------------------------

    def insert_notification(self, notification: Notification) -> None:
        """Store a new notification."""
        with self.transaction(write=True) as connection:
            notification_rows.insert(connection, notification)

    def update_notification(self, notification: Notification) -> None:
        """Store a notification's status and deliveries."""
        with self.transaction(write=True) as connection:
            notification_rows.update(connection, notification)

    def list_notifications(
        self, status: str | None, limit: int, offset: int
    ) -> tuple[list[Notification], int]:
        """Return one page of notifications, newest first, and the total that match."""
        with self.transaction() as connection:
            return notification_rows.page(connection, status, limit, offset)

    def trim_notifications(self, keep: int = notification_rows.KEEP_NOTIFICATIONS) -> int:
        """Delete all but the newest `keep` notifications; return how many went."""
        with self.transaction(write=True) as connection:
            return notification_rows.trim(connection, keep)

    def _indexed_search(self, connection: Connection, query: RunQuery) -> bool:
        """Tell whether the query's search goes through the search index (store/search.py)."""
        if not query.search or not search.indexable(query.search):
            return False
        if self._search_index is None:
            self._search_index = search.has_index(connection)
        return self._search_index

    def _insert_sqlite(self, rows: list[dict[str, Any]]) -> None:
        # A batch of new runs only (a burst of triggers): one statement through
        # the driver, see store/_bulk.py.
        with self._lock, database.store_errors("database error"):
            connection = self._engine.raw_connection()
            try:
                driver = connection.driver_connection
                assert isinstance(driver, sqlite3.Connection)
                insert_runs(driver, rows)
            except ValueError as exc:  # a value SQLite cannot hold (a naive datetime)
                raise StoreError(f"database error: {exc}") from exc
            finally:
                connection.close()

    def _write_sqlite(
        self, rows: list[dict[str, Any]], changes: list[tuple[str, dict[str, Any]]]
    ) -> None:
        # Run starts and ends (and retries): one transaction through the
        # driver, see store/_bulk.py.
        with self._lock, database.store_errors("database error"):
            connection = self._engine.raw_connection()
            try:
                driver = connection.driver_connection
                assert isinstance(driver, sqlite3.Connection)
                write_runs(driver, rows, changes)
            except ValueError as exc:  # a value SQLite cannot hold (a naive datetime)
                raise StoreError(f"database error: {exc}") from exc
            finally:
                connection.close()

    @contextmanager
    def transaction(self, *, write: bool = False, snapshot: bool = False) -> Iterator[Connection]:
        """One transaction on the store's database, committed when the block ends.

        `write=True` for statements that write (SQLite takes its write lock at
        the start). `snapshot=True`: every statement sees the same snapshot
        (PostgreSQL's REPEATABLE READ; a SQLite transaction always does), so
        several reads agree with each other. Database failures come out as
        StoreError (StoreUnavailable when the same request can succeed
        later). The key store and the dashboard's queries share it.
        """
        committing = False
        try:
            with self._lock, self._engine.connect() as connection:
                if write:
                    connection.execution_options(**{database.WRITE_OPTION: True})
                if snapshot and not self._sqlite:
                    connection.execution_options(isolation_level="REPEATABLE READ")
                with connection.begin():
                    yield connection
                    committing = True  # leaving the block commits
        except (SQLAlchemyError, sqlite3.Error, UnicodeError) as exc:
            # UnicodeError: text the driver cannot encode (a lone surrogate),
            # raised by psycopg before SQLAlchemy can wrap it.
            # A commit cut off by a lost connection may still have landed.
            raise database.classify(exc, "database error", maybe_committed=committing) from exc


def _delete_expired_batch(
    connection: Connection, task_name: str, keep_runs: int | None, ended_before: datetime | None
) -> list[str]:
    """Delete the oldest expired runs of a task, at most a batch; return their ids."""
    ended = sa.and_(runs.c.task_name == task_name, runs.c.status == RunStatus.ENDED.value)
    expired: list[ColumnElement[bool]] = []
    if keep_runs == 0:
        expired.append(sa.true())
    elif keep_runs is not None:
        # A bound on (created_at, id) walks the index; an IN (... OFFSET) list
        # would be rebuilt in full for every batch.
        oldest_kept = connection.execute(
            sa.select(runs.c.created_at, runs.c.id)
            .where(ended)
            .order_by(runs.c.created_at.desc(), runs.c.id.desc())
            .offset(keep_runs - 1)
            .limit(1)
        ).first()
        if oldest_kept is not None:
            created_at, run_id = oldest_kept
            expired.append(
                sa.or_(
                    runs.c.created_at < created_at,
                    sa.and_(runs.c.created_at == created_at, runs.c.id < run_id),
                )
            )
    if ended_before is not None:
        expired.append(runs.c.end_at < ended_before)
    if not expired:
        return []
    batch = (
        sa.select(runs.c.id)
        .where(ended, sa.or_(*expired))
        .order_by(runs.c.created_at, runs.c.id)
        .limit(_DELETE_BATCH)
    )
    statement = sa.delete(runs).where(runs.c.id.in_(batch)).returning(runs.c.created_at, runs.c.id)
    # RETURNING has no order on PostgreSQL.
    return [run_id for _, run_id in sorted(connection.execute(statement).tuples())]


def _update_params(run: Run) -> dict[str, Any]:
    values = update_values(run)
    params = {f"new_{column}": values[column] for column in MUTABLE_COLUMNS}
    params["run_id"] = run.id
    return params
