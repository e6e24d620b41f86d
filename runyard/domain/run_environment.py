"""The environment variables runyard gives a run's process: its side of the contract.

A run's process (and every descendant) finds these in its environment; the
`runyard output` helper and `runyard.output` read RUNYARD_OUTPUT_DIR, and the
daemon finds a run's strays by RUNYARD_RUN_ID. The names are defined here
only; the values are set by the engine (engine/environment.py and
engine/workspace.py).
"""

from __future__ import annotations

RUN_ID_ENV = "RUNYARD_RUN_ID"  # the run's id
TASK_ENV = "RUNYARD_TASK"  # the task's name
REPLICA_INDEX_ENV = "RUNYARD_REPLICA_INDEX"  # which replica of a replicated trigger, from 0
RETRY_ATTEMPT_ENV = "RUNYARD_RETRY_ATTEMPT"  # 0 for the first try, then 1, 2...
OUTPUT_DIR_ENV = "RUNYARD_OUTPUT_DIR"  # where the run writes its output data files
INPUT_ENV = "RUNYARD_INPUT"  # the run's input data as JSON (runs triggered with data)
INPUT_CSV_ENV = "RUNYARD_INPUT_CSV"  # the first input table as CSV (idem)
BIN_ENV = "RUNYARD_BIN"  # the `runyard` command of the daemon: `"$RUNYARD_BIN" output ...`
SERVICE_ENV = "RUNYARD_SERVICE"  # a service instance's service (with RUN_ID_ENV, REPLICA_INDEX_ENV)

__all__ = [
    "BIN_ENV",
    "INPUT_CSV_ENV",
    "INPUT_ENV",
    "OUTPUT_DIR_ENV",
    "REPLICA_INDEX_ENV",
    "RETRY_ATTEMPT_ENV",
    "RUN_ID_ENV",
    "SERVICE_ENV",
    "TASK_ENV",
]
