"""Turn runs into rows and rows back into runs."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.engine import RowMapping

from runyard.domain.input_data import input_json
from runyard.domain.models import EndReason, Run, RunStatus, TriggeredBy
from runyard.exceptions import StoreError
from runyard.store.schema import runs

# The columns of a run without its data (input_data, output_data): what every
# list and report query selects. Those two may hold megabytes per run, and a
# page of runs must cost the same whatever its runs were given or wrote.
SUMMARY_COLUMNS = tuple(
    column for column in runs.c if column.name not in ("input_data", "output_data")
)

# What RunStore.apply may change on an existing run: its lifecycle. params,
# input data and the external id are fixed at insert, so an update never
# re-serialises a (possibly large) input table.
MUTABLE_COLUMNS = (
    "status",
    "end_reason",
    "exit_code",
    "start_at",
    "end_at",
    "duration_ms",
    "description",
    "not_before",
    "output_data",
)


def update_values(run: Run) -> dict[str, Any]:
    """Return the values of the mutable columns of a run."""
    return {
        "status": run.status.value,
        "end_reason": None if run.end_reason is None else run.end_reason.value,
        "exit_code": run.exit_code,
        "start_at": run.start_at,
        "end_at": run.end_at,
        "duration_ms": run.duration_ms,
        "description": run.description,
        "not_before": run.not_before,
        "output_data": None if run.output_data is None else _dump(run.output_data),
    }


def run_to_row(run: Run) -> dict[str, Any]:
    """Return the column values of a run."""
    return {
        "id": run.id,
        "task_name": run.task_name,
        "status": run.status.value,
        "end_reason": None if run.end_reason is None else run.end_reason.value,
        "exit_code": run.exit_code,
        "created_at": run.created_at,
        "start_at": run.start_at,
        "end_at": run.end_at,
        "duration_ms": run.duration_ms,
        "replica_index": run.replica_index,
        "retry_attempt": run.retry_attempt,
        "retry_of_run_id": run.retry_of_run_id,
        "triggered_by": run.triggered_by.value,
        "external_execution_id": run.external_execution_id,
        "params": _dump(run.params),
        "description": run.description,
        "not_before": run.not_before,
        "input_data": None if run.input_data is None else _dump(run.input_data),
        "output_data": None if run.output_data is None else _dump(run.output_data),
        "account": run.account,
        "secret_hash": run.secret_hash,
        "input_size": run.input_size,
        "node": run.node,
    }


def row_to_run(row: RowMapping) -> Run:
    """Return the run a row holds; StoreError if the row is not a valid run.

    A row of SUMMARY_COLUMNS gives a run without input_data and output_data.
    """
    try:
        end_reason = row["end_reason"]
        input_data = row.get("input_data")
        output_data = row.get("output_data")
        return Run(
            id=row["id"],
            task_name=row["task_name"],
            status=RunStatus(row["status"]),
            end_reason=None if end_reason is None else EndReason(end_reason),
            exit_code=row["exit_code"],
            created_at=row["created_at"],
            start_at=row["start_at"],
            end_at=row["end_at"],
            replica_index=row["replica_index"],
            retry_attempt=row["retry_attempt"],
            retry_of_run_id=row["retry_of_run_id"],
            triggered_by=TriggeredBy(row["triggered_by"]),
            external_execution_id=row["external_execution_id"],
            params=json.loads(row["params"]),
            description=row["description"],
            not_before=row["not_before"],
            input_data=None if input_data is None else json.loads(input_data),
            output_data=None if output_data is None else json.loads(output_data),
            account=row["account"],
            secret_hash=row["secret_hash"],
            input_size=row["input_size"],
            node=row.get("node"),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise StoreError(f"run {row.get('id')!r}: unreadable row: {exc}") from exc


def dump_input(tables: list[list[list[str]]]) -> str:
    """Return input data as the JSON text runyard stores and hands to runs."""
    return input_json(tables)


def _dump(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
