"""The run list's search through the search index (migration 0009).

A search is a case-insensitive substring match on run id, external execution
id, task name, status, end reason and triggered_by (run_list._search has the
condition itself). Without an index it reads every run when it finds few.
With the index, the runs it finds are the union of:

- the runs whose id or external id holds the text, from the index: on
  SQLite the FTS5 table `runs_search`, whose phrase query finds exactly what
  LIKE finds (see _candidates); on PostgreSQL the pg_trgm GIN indexes, which
  serve the ILIKE itself;
- the runs of the tasks whose name holds it (names from run_counts), and of
  the statuses and end reasons whose value holds it, each by its index;
- the runs of the triggers whose name holds it (cron, api, cloud: a third of
  all runs or so each, never few).

The total is counted in parts that do not overlap: from run_counts, the runs
of a matching task, status or end reason (no run read); the runs of a
matching trigger that none of those took; the runs whose text matched that
no other part took (on SQLite, with no other part and no filter, the index
alone counts them). Then the page: when the matches are few, each part gives
its runs' sort keys from its index, and only the page's runs are read; when
they are many, the sort key's index is walked as before
(runs.list_statements), which stops as soon as the page is full. The walk
reads about (offset + limit) * all / matched runs, the read by key `matched`
index entries: whichever is fewer.

Texts of fewer than three characters have no piece to look up: they are
searched as before.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from runyard.domain.models import EndReason, Run, RunStatus, TriggeredBy
from runyard.domain.queries import RunQuery, SortDirection
from runyard.store import run_list
from runyard.store._rows import SUMMARY_COLUMNS, row_to_run
from runyard.store.schema import run_counts, runs

# The trigram index holds pieces of three characters (code points).
MIN_INDEXED_LENGTH = 3

_SQLITE_TABLE = "runs_search"
_POSTGRESQL_INDEX = "ix_runs_id_trgm"

_search_table = sa.table(_SQLITE_TABLE, sa.column("rowid", sa.Integer))
_match = sa.literal_column(_SQLITE_TABLE).op("MATCH")
_runs_rowid = sa.literal_column("runs.rowid", sa.Integer)


def has_index(connection: Connection) -> bool:
    """Tell whether migration 0009 could make the search index in this database."""
    if connection.dialect.name == "postgresql":
        statement = sa.text("SELECT to_regclass(:name) IS NOT NULL")
        return bool(connection.execute(statement, {"name": _POSTGRESQL_INDEX}).scalar_one())
    statement = sa.text("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = :name")
    return bool(connection.execute(statement, {"name": _SQLITE_TABLE}).scalar_one())


def indexable(text: str) -> bool:
    """Tell whether the index can look `text` up (it has a three-character piece)."""
    return len(text) >= MIN_INDEXED_LENGTH


@dataclass(frozen=True)
class _Terms:
    """What a search text matches, besides ids and external ids."""

    tasks: list[str]
    statuses: list[str]
    end_reasons: list[str]
    triggers: list[str]


def list_runs(connection: Connection, query: RunQuery) -> tuple[list[Run], int]:
    """Return one page of the runs `query` selects (it has a search) and their total."""
    page, total = _page_and_total(connection, query)
    if page is None:
        return [], total
    rows = connection.execute(page).mappings().all()
    return [row_to_run(row) for row in rows], total


def statements(connection: Connection, query: RunQuery) -> tuple[sa.Select[Any], sa.Select[Any]]:
    """Return the page statement list_runs would run now, and the count of the text's matches."""
    page, _ = _page_and_total(connection, query)
    terms = _terms(connection, query.search or "")
    texts = _text_count(connection.dialect.name, query, terms)
    if page is None:
        page = sa.select(*SUMMARY_COLUMNS).where(sa.false())
    return page, texts


def _page_and_total(connection: Connection, query: RunQuery) -> tuple[sa.Select[Any] | None, int]:
    dialect = connection.dialect.name
    text = query.search or ""
    terms = _terms(connection, text)
    total = _counted(connection, query, terms)
    total += int(connection.execute(_text_count(dialect, query, terms)).scalar_one())
    if total <= query.offset:
        return None, total
    unfiltered = replace(query, search=None)
    walked = int(connection.execute(run_list.counted_total(unfiltered)).scalar_one())
    if terms.triggers or (query.offset + query.limit) * walked < total * total:
        page, _ = run_list.list_statements(query, dialect)
        return page, total
    return _page_by_id(dialect, query, terms), total


def _terms(connection: Connection, text: str) -> _Terms:
    pattern = _pattern(text)
    column = run_counts.c.task_name
    like = column.like(pattern, escape="\\") if connection.dialect.name == "sqlite" else None
    matched = like if like is not None else column.ilike(pattern, escape="\\")
    tasks = list(
        connection.execute(sa.select(column).where(matched).group_by(column).order_by(column))
        .scalars()
        .all()
    )
    # The enum values are lowercase ASCII: text that is not ASCII matches none.
    folded = text.lower() if text.isascii() else None

    def hits(values: type[RunStatus] | type[EndReason] | type[TriggeredBy]) -> list[str]:
        return [v.value for v in values if folded is not None and folded in v.value]

    return _Terms(tasks, hits(RunStatus), hits(EndReason), hits(TriggeredBy))


def _pattern(text: str) -> str:
    return "%" + run_list.escape_like(text) + "%"


def _filters(query: RunQuery) -> list[ColumnElement[bool]]:
    """The query's conditions other than its search (task, status, end reason)."""
    return run_list.run_conditions(replace(query, search=None), "")


def _counted(connection: Connection, query: RunQuery, terms: _Terms) -> int:
    """Count the runs of a matching task, status or end reason (run_counts), then trigger."""
    total = 0
    arms: list[ColumnElement[bool]] = []
    if terms.tasks:
        arms.append(run_counts.c.task_name.in_(terms.tasks))
    if terms.statuses:
        arms.append(run_counts.c.status.in_(terms.statuses))
    if terms.end_reasons:
        arms.append(run_counts.c.end_reason.in_(terms.end_reasons))
    if arms:
        statement = run_list.counted_total(replace(query, search=None)).where(sa.or_(*arms))
        total += int(connection.execute(statement).scalar_one())
    if terms.triggers:
        statement = (
            sa.select(sa.func.count())
            .select_from(runs)
            .where(
                *_filters(query),
                runs.c.triggered_by.in_(terms.triggers),
                sa.not_(_covered(terms)),
            )
        )
        total += int(connection.execute(statement).scalar_one())
    return total


def _covered(terms: _Terms) -> ColumnElement[bool]:
    """Whether a run matches by task, status or end reason (never NULL)."""
    arms: list[ColumnElement[bool]] = []
    if terms.tasks:
        arms.append(runs.c.task_name.in_(terms.tasks))
    if terms.statuses:
        arms.append(runs.c.status.in_(terms.statuses))
    if terms.end_reasons:
        arms.append(sa.func.coalesce(runs.c.end_reason, "").in_(terms.end_reasons))
    return sa.or_(*arms) if arms else sa.false()


def _text_matches(dialect: str, text: str) -> ColumnElement[bool]:
    """Whether a run's id or external id holds `text`, through the index."""
    if dialect == "sqlite":
        return _runs_rowid.in_(_candidates(text))
    # The GIN indexes serve ILIKE itself (each candidate rechecked by PostgreSQL).
    pattern = _pattern(text)
    return sa.or_(
        runs.c.id.ilike(pattern, escape="\\"),
        runs.c.external_execution_id.ilike(pattern, escape="\\"),
    )


def _candidates(text: str) -> sa.Select[Any]:
    """The rowids of the runs whose id or external id holds `text` (SQLite's FTS5 table).

    The table holds the text as lower() leaves it (ASCII letters lowered) and
    matches case-sensitively: a phrase of the text lowered alike finds what
    LIKE finds, the case of ASCII letters ignored, any other character as is.
    """
    return sa.select(_search_table.c.rowid).where(_match(sa.literal(_fts_query(text))))


def _fts_query(text: str) -> str:
    lowered = "".join(char.lower() if char.isascii() else char for char in text)
    return '"' + lowered.replace('"', '""') + '"'


def _text_count(dialect: str, query: RunQuery, terms: _Terms) -> sa.Select[Any]:
    """Count the runs whose text matches and that no other part of the total took."""
    filters = _filters(query)
    others = terms.tasks or terms.statuses or terms.end_reasons or terms.triggers
    if dialect == "sqlite" and not filters and not others:
        # Every match counts: the index alone knows how many, no run is read.
        return sa.select(sa.func.count()).select_from(_candidates(query.search or "").subquery())
    conditions = [*filters, _text_matches(dialect, query.search or ""), sa.not_(_covered(terms))]
    if terms.triggers:
        conditions.append(runs.c.triggered_by.not_in(terms.triggers))
    return sa.select(sa.func.count()).select_from(runs).where(*conditions)


def _page_by_id(dialect: str, query: RunQuery, terms: _Terms) -> sa.Select[Any]:
    """Read the matching runs by their indexes and sort them (when they are few).

    Each part selects its runs' key, sort key and id, which the indexes
    (task, status or end reason, then created_at, id) hold without reading
    the run; only the page's runs are read in full.
    """
    text = query.search or ""
    filters = _filters(query)
    sort = run_list.SORT_COLUMNS[query.sort_field]
    key = _runs_rowid if dialect == "sqlite" else runs.c.id
    conditions = [_text_matches(dialect, text)]
    for column, values in (
        (runs.c.task_name, terms.tasks),
        (runs.c.status, terms.statuses),
        (runs.c.end_reason, terms.end_reasons),
    ):
        if values:
            conditions.append(column.in_(values))
    parts = [
        sa.select(key.label("key"), sort.label("sort_key"), runs.c.id.label("run_id"))
        .select_from(runs)
        .where(*filters, condition)
        for condition in conditions
    ]
    matched = (parts[0] if len(parts) == 1 else sa.union(*parts)).subquery()
    page = (
        sa.select(matched.c.key)
        .order_by(*_ordered(query, sort, matched.c.sort_key, matched.c.run_id))
        .limit(query.limit)
        .offset(query.offset)
    )
    return sa.select(*SUMMARY_COLUMNS).where(key.in_(page)).order_by(*run_list.run_order(query))


def _ordered(
    query: RunQuery, sort: sa.Column[Any], value: ColumnElement[Any], run_id: ColumnElement[Any]
) -> list[ColumnElement[Any]]:
    """run_list.run_order on the columns of a subquery: the sort key, then id, NULLs smallest."""
    if query.sort_direction is SortDirection.ASC:
        first = value.asc().nulls_first() if sort.nullable else value.asc()
        return [first, run_id.asc()]
    first = value.desc().nulls_last() if sort.nullable else value.desc()
    return [first, run_id.desc()]
