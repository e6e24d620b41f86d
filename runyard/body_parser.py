"""Large trigger bodies parsed in a worker process, their input data written straight to a file.

json.loads of 10 MB of short cells takes ~0.4 s and holds the GIL the whole
time (a thread would block the event loop just the same), and the parsed
tables take ~15 times their JSON size in Python objects. So a trigger body
from STAGE_FROM bytes is handed to a worker process, which parses it,
normalises `data` as the trigger would, and writes the input files of the run
to be (`store/inputs.py`). The daemon gets back the body's other members and
the size of the input data; the tables themselves never enter its heap.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import multiprocessing
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runyard.domain.input_data import (
    InputDataError,
    UnstorableCell,
    normalise_input,
    table_to_csv,
)
from runyard.store.inputs import INLINE_INPUT_BYTES, InputFiles

# Trigger bodies from this size are parsed by a worker process.
STAGE_FROM = 64 * 1024
_WORKERS = max(1, min(2, os.cpu_count() or 1))
WORKER_NICENESS = 10
WORKER_IDLE_SECONDS = 30.0


@dataclass(frozen=True)
class JsonProblem:
    """Why a body is not a JSON value runyard can read."""

    kind: str  # "utf8": not UTF-8; "syntax": malformed JSON; "unreadable": too long or deep
    message: str = ""  # the JSON decoder's message, for "syntax"
    line: int = 0
    column: int = 0


@dataclass(frozen=True)
class DataProblem:
    """Why `data` is not input data: the message of InputDataError, or of an UnstorableCell."""

    message: str
    location: str | None = None  # "[0][1]" for a cell whose text cannot be stored
    problem: str | None = None
    shown: str | None = None

    def exception(self) -> InputDataError:
        """Return the error normalise_input raised in the worker."""
        if self.location is not None and self.problem is not None:
            path = tuple(int(part) for part in self.location.strip("[]").split("]["))
            return UnstorableCell(self.message, path, self.problem, self.shown or "")
        return InputDataError(self.message)


@dataclass
class StagedInput:
    """The input data of a large trigger body, for the run `run_id`.

    `size` bytes of JSON in the run's input files (or inline `tables` when
    they came out small), or the `problem` that keeps them from being input
    data. Kept in the request's ASGI scope, where no client can forge it.
    """

    run_id: str
    size: int | None = None
    tables: list[list[list[str]]] | None = None
    problem: DataProblem | None = None
    wrote_file: bool = False


@dataclass(frozen=True)
class ParsedBody:
    """What the worker made of a body."""

    json_problem: JsonProblem | None = None
    is_object: bool = False
    kind: str = ""  # the JSON type of a body that is not an object
    members: dict[str, Any] = field(default_factory=dict)  # the object without `data`
    staged: StagedInput | None = None  # None: no `data` member (or null)


class BodyJsonError(ValueError):
    """A body that is not JSON runyard can read."""

    def __init__(self, problem: JsonProblem) -> None:
        self.problem = problem
        super().__init__(problem.kind)


def decode_json(raw: bytes) -> object:
    """Return the JSON value of a request body; BodyJsonError says why there is none."""
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise BodyJsonError(JsonProblem("utf8")) from None
    except json.JSONDecodeError as error:
        raise BodyJsonError(JsonProblem("syntax", error.msg, error.lineno, error.colno)) from None
    except (ValueError, RecursionError):
        # Valid JSON Python will not hold: integers over 4,300 digits, or
        # arrays nested deeper than the interpreter's recursion limit.
        raise BodyJsonError(JsonProblem("unreadable")) from None


# The ASGI scope key of a large body's StagedInput (api/uploads.py puts it there).
STAGED_INPUT_KEY = "runyard.staged_input"


def parse_body(raw: bytes, inputs_root: str, run_id: str) -> ParsedBody:
    """Parse a trigger body and stage its `data` as run `run_id`'s input; for a worker process."""
    try:
        value = decode_json(raw)
    except BodyJsonError as error:
        return ParsedBody(json_problem=error.problem)
    if not isinstance(value, dict):
        return ParsedBody(kind=type(value).__name__)
    data = value.pop("data", None)
    if data is None:
        return ParsedBody(is_object=True, members=value)
    staged = StagedInput(run_id)
    try:
        tables = normalise_input(data)
    except UnstorableCell as error:
        staged.problem = DataProblem(error.message, error.location, error.problem, error.shown)
    except InputDataError as error:
        staged.problem = DataProblem(error.message)
    else:
        del data
        text = json.dumps(tables, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        staged.size = len(text)
        if staged.size < INLINE_INPUT_BYTES:
            staged.tables = tables
        else:
            InputFiles(Path(inputs_root)).write_encoded(
                run_id, text, table_to_csv(tables[0]) if tables else ""
            )
            staged.wrote_file = True
    return ParsedBody(is_object=True, members=value, staged=staged)


class BodyParser:
    """A pool of worker processes that parse large trigger bodies.

    Started on first use and stopped after `idle_seconds` without a body: a
    worker that parsed 10 MB keeps ~180 MB of heap it no longer uses, which
    only its exit gives back.
    """

    def __init__(self, inputs_root: Path, idle_seconds: float = WORKER_IDLE_SECONDS) -> None:
        self.inputs_root = inputs_root
        self.idle_seconds = idle_seconds
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._in_flight = 0
        self._idle_timer: asyncio.TimerHandle | None = None

    @property
    def running(self) -> bool:
        """Return whether worker processes are up."""
        return self._pool is not None

    async def parse(self, raw: bytes, run_id: str) -> ParsedBody:
        """Parse `raw` in a worker process; stage its input data for `run_id`."""
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._pool is None:
            # spawn: forking a daemon that runs threads could copy a held lock.
            # nice: on a busy machine the event loop (/health, small triggers)
            # comes before a parse; a parse only delays its own request.
            self._pool = concurrent.futures.ProcessPoolExecutor(
                _WORKERS,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=os.nice,
                initargs=(WORKER_NICENESS,),
            )
        loop = asyncio.get_running_loop()
        self._in_flight += 1
        try:
            return await loop.run_in_executor(
                self._pool, parse_body, raw, str(self.inputs_root), run_id
            )
        except concurrent.futures.process.BrokenProcessPool:
            # A worker died (killed, out of memory): the next body gets a new pool.
            self._pool = None
            raise
        finally:
            self._in_flight -= 1
            if self._in_flight == 0 and self._pool is not None:
                self._idle_timer = loop.call_later(self.idle_seconds, self._retire)

    def _retire(self) -> None:
        self._idle_timer = None
        if self._in_flight == 0 and self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    def discard(self, staged: StagedInput) -> None:
        """Delete the input files a worker wrote for a body whose run was not recorded."""
        if staged.wrote_file:
            InputFiles(self.inputs_root).delete(staged.run_id)

    def close(self) -> None:
        """Stop the worker processes."""
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
