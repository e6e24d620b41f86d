"""What the v3 service needs of the parts it is handed: the engine, the config, the metrics.

Described here rather than imported: the v3 package depends on the domain,
the store and the engine's events only, and `runyard/app.py` hands it the
real `Engine`, the current `Config` and the `Metrics` (mypy checks they fit).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from runyard.domain.accounts import Account
from runyard.domain.models import Run, TaskDefinition, TriggeredBy
from runyard.engine.events import EventHub


class RunEngine(Protocol):
    """The engine: its tasks, triggers, live runs and stops."""

    @property
    def tasks(self) -> Mapping[str, TaskDefinition]: ...

    @property
    def events(self) -> EventHub: ...

    async def trigger(
        self,
        task_name: str,
        params: Mapping[str, object],
        triggered_by: TriggeredBy,
        input_data: list[list[list[str]]] | None = None,
        *,
        account: str | None = None,
        secret_hash: str | None = None,
        run_id: str | None = None,
        input_size: int | None = None,
    ) -> list[Run]: ...

    def is_started(self, run_id: str) -> bool: ...

    def live_run(self, run_id: str) -> Run | None: ...

    async def live_output(self, run_id: str) -> dict[str, list[list[str]]] | None: ...

    async def stop(self, run_id: str) -> Run: ...


# A run's output data: live while it runs (asked of its node, on several
# nodes), frozen once it ended. NodeUnreachable when its node cannot say.
OutputOf = Callable[[Run], Awaitable[dict[str, list[list[str]]]]]
# Stop a run wherever it runs (RunAlreadyEnded, NotFound, NodeUnreachable).
StopRun = Callable[[str], Awaitable[Run]]


class DaemonSettings(Protocol):
    """The `[daemon]` settings the v3 service reads."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...

    @property
    def external_url(self) -> str | None: ...

    @property
    def max_invalid_keys_per_minute(self) -> int: ...


class Settings(Protocol):
    """The config as the v3 service reads it: asked again at each call (a reload changes it)."""

    @property
    def accounts(self) -> Mapping[str, Account]: ...

    @property
    def daemon(self) -> DaemonSettings: ...


class TriggerCounter(Protocol):
    """Where trigger outcomes are counted (the metrics)."""

    def v3_trigger(self, account: str, outcome: str) -> None: ...

    def v3_outcome_of_status(self, status: int) -> str: ...
