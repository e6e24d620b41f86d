"""Composition root: one Runyard wires the config, store, engine and token together.

HTTP handlers and the CLI call the methods here; they hold no rules of their own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import secrets
from collections.abc import AsyncGenerator, Mapping
from datetime import datetime
from pathlib import Path
from typing import TypeGuard

from runyard import __version__
from runyard.body_parser import BodyParser, StagedInput
from runyard.clock import Clock, utc_now
from runyard.cluster.client import NodeClient, Peer
from runyard.config.fingerprint import config_hash
from runyard.config.loader import Config, load_config
from runyard.config.locate import TOKEN_FILE as TOKEN_FILE  # re-exported for api/server.py
from runyard.config.locate import token_file, token_from_environ
from runyard.daemon_lock import LOCK_FILE
from runyard.domain.input_data import InputDataError, UnstorableCell, normalise_input
from runyard.domain.models import Run, RunKind, TaskDefinition, TriggeredBy
from runyard.domain.queries import RunQuery
from runyard.domain.reload import (
    RESTART_SETTINGS,
    ReloadOutcome,
    diff_tasks,
    settings_needing_restart,
)
from runyard.engine.core import Engine
from runyard.engine.log_follow import FollowItem, follow_log
from runyard.engine.node_lease import NodeLease
from runyard.engine.scheduler import Scheduler
from runyard.engine.start_log import STARTED_LOG
from runyard.engine.waiting import StopSignal
from runyard.engine.workspace import WORK_DIR
from runyard.exceptions import (
    ConfigError,
    InvalidInput,
    NodeUnreachable,
    NotFound,
    RunAlreadyEnded,
    RunOnAnotherNode,
    ServiceLifetimeStop,
    UnstorableInput,
)
from runyard.metrics import Metrics, TaskLoad
from runyard.notifications.service import NotificationService
from runyard.services.daemon import SERVICES_LOG, DaemonServices
from runyard.store import RunStore, database_url
from runyard.store.cluster import ClusterStore
from runyard.store.files import make_private_directory, prepare_data_dir
from runyard.store.inputs import INPUTS_DIR
from runyard.store.keys import REVOKED_MARKER, KeyStore
from runyard.store.logs import count_lines
from runyard.store.nodes import NodeIdentity, NodeInfo, NodeRegistry
from runyard.v3.service import V3Service

log = logging.getLogger("runyard.daemon")

# What pending notifications get to finish when the daemon stops.
NOTIFICATION_GRACE_SECONDS = 5.0


def load_or_create_token(
    data_dir: Path, environ: Mapping[str, str] = os.environ
) -> tuple[str, bool]:
    """Return the API token and whether it was just created.

    RUNYARD_TOKEN wins; otherwise the token lives in `<data_dir>/token`, made
    once with 256 random bits and readable by its owner only.
    """
    from_env = token_from_environ(environ)
    if from_env:
        return from_env, False
    path = token_file(data_dir)
    if path.exists():
        return path.read_text(encoding="utf-8").strip(), False
    make_private_directory(data_dir)
    token = secrets.token_urlsafe(32)
    # O_EXCL: two daemons starting at once must not both write a token.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")
    return token, True


class Runyard:
    """The running service: what the API and CLI talk to."""

    def __init__(
        self,
        config: Config,
        *,
        environ: Mapping[str, str] = os.environ,
        clock: Clock = utc_now,
        data_dir_override: str | None = None,
        daemon_overrides: Mapping[str, object] | None = None,
    ) -> None:
        self.environ = environ
        self.clock = clock
        self._data_dir_override = data_dir_override  # the CLI's --data-dir, kept for reloads
        # Settings given on the command line (serve --host/--port, the port
        # actually bound): they win over the file at every reload too.
        self._daemon_overrides = dict(daemon_overrides or {})
        config = self._overridden(config)
        self.config = config
        self._reload_lock = asyncio.Lock()
        self.data_dir = config.daemon.data_dir
        # 0700, or tightened (with a warning) if an earlier version left it open.
        prepare_data_dir(
            self.data_dir,
            (TOKEN_FILE, STARTED_LOG, WORK_DIR, REVOKED_MARKER, LOCK_FILE, INPUTS_DIR)
            + (SERVICES_LOG,),
        )
        self.token, self.token_created = load_or_create_token(self.data_dir, environ)
        self.database_url = database_url(self.data_dir, environ)
        self.store = RunStore.open(self.database_url, clock)
        self.started_at = clock()
        self.node_name = config.daemon.node_name or f"{config.daemon.host}:{config.daemon.port}"
        self.config_hash = config_hash(config)
        # On PostgreSQL this daemon is a node (README "Several nodes"): it
        # registers now, before its engine recovers only its own runs.
        registry: NodeRegistry | None = None
        if self.store.shared:
            registry = NodeRegistry(
                self.store,
                NodeIdentity(
                    name=self.node_name,
                    instance=secrets.token_hex(13),
                    url=run_link_base(config),
                    lease_seconds=config.daemon.node_lease.total_seconds(),
                    config_hash=self.config_hash,
                    version=__version__,
                ),
            )
        # What only a run's own node has (its log, live output, process) is
        # asked of that node over HTTP, with the cluster's shared secret.
        self.cluster: ClusterStore | None = None
        self.cluster_secret: str | None = None
        self.peers: NodeClient | None = None
        if registry is not None:
            try:
                registry.register()
                self.cluster = ClusterStore(self.store)
                self.cluster_secret = self.cluster.secret()
            except BaseException:
                self.store.close()
                raise
            self.peers = NodeClient(self.node_name, self.cluster_secret)
        self.engine = Engine(
            tasks=config.tasks,
            store=self.store,
            data_dir=self.data_dir,
            max_concurrent_runs=config.daemon.max_concurrent_runs,
            clock=clock,
            base_environ=environ,
            account_limits=_account_limits(config),
            max_output_size=config.daemon.max_output_size,
            account_input_limits=_account_input_limits(config),
            node=registry.name if registry else None,
            own_runs=registry.own_active_runs if registry else None,
        )
        self.lease = NodeLease(registry, self.engine, clock) if registry else None
        self.bodies = BodyParser(self.data_dir / INPUTS_DIR)
        self.services = DaemonServices(
            config.services,
            data_dir=self.data_dir,
            log_path=self.engine.log_path,
            followers=self.engine.followers,
            recorder=self.engine.recorder,
            events=self.engine.events,
            environ=environ,
        )
        self.scheduler = Scheduler(
            self.engine,
            self.store,
            clock,
            claim_ticks=registry is not None,
            # Several nodes: a pause on any node holds on every node.
            paused_tasks=self.cluster.paused_tasks if self.cluster is not None else None,
        )
        self.metrics = Metrics(__version__, self._task_loads, self._runtime_used)
        self.engine.observer = self.metrics
        self.v3 = V3Service(
            engine=self.engine,
            store=self.store,
            keys=KeyStore(self.store.transaction),
            metrics=self.metrics,
            config=lambda: self.config,
            data_dir=self.data_dir,
            now=clock,
            output_of=self.output_of,
            stop_run=self.stop_run,
        )
        self.notifications = NotificationService(
            config.notifications,
            self.store,
            link_base=run_link_base(config),
            log_path=self.engine.log_path,
            clock=clock,
        )
        # Before the engine starts: runs its recovery ends as crashed are heard.
        self.engine.events.listen(self.notifications.on_event)
        # runyard_notifications_total{notifier, outcome}: delivered, failed or dropped.
        self.notifications.on_delivery = self.metrics.notification

    async def start(self) -> None:
        await self.notifications.start(list(self.engine.tasks))
        await self.engine.start()
        if self.lease is not None:
            self.lease.start()
        await self.services.start()
        await self.scheduler.start()

    async def stop(self) -> None:
        await self.scheduler.stop()
        await self.services.stop()
        await self.engine.shutdown(self.config.daemon.shutdown_timeout.total_seconds())
        if self.lease is not None:
            await self.lease.stop()
        if self.peers is not None:
            await self.peers.aclose()
        await asyncio.to_thread(self.bodies.close)
        await self.notifications.stop(NOTIFICATION_GRACE_SECONDS)
        await asyncio.to_thread(self.store.close)

    # ----- tasks -----------------------------------------------------------

    def tasks(self) -> list[TaskDefinition]:
        return sorted(self.engine.tasks.values(), key=lambda task: task.name)

    def task(self, name: str) -> TaskDefinition:
        task = self.engine.tasks.get(name)
        if task is None:
            raise NotFound("task", name)
        return task

    def _task_loads(self) -> dict[str, TaskLoad]:
        """Runs active and queued for every configured task (the metrics' gauges)."""
        return {name: TaskLoad(*self.engine.counts(name)) for name in self.engine.tasks}

    async def _runtime_used(self) -> dict[str, float]:
        """Runtime each v3 account used in its billing period (the metrics' gauge)."""
        return await self.v3.used_minutes_by_account()

    def task_counts(self, name: str) -> tuple[int, int]:
        """Return (running, queued) for a task."""
        return self.engine.counts(name)

    def schedule_state(self, name: str) -> tuple[bool, datetime | None]:
        """Return (paused, next_run_at); next_run_at is None when paused or unscheduled."""
        self.task(name)
        return self.scheduler.is_paused(name), self.scheduler.next_run_at(name)

    async def set_paused(self, name: str, paused: bool) -> None:
        """Pause or resume a task's schedule (manual triggers still work while paused)."""
        self.task(name)
        await self.scheduler.set_paused(name, paused)

    async def reload(self) -> ReloadOutcome:
        """Re-read the config: validate first, then apply it whole, or not at all.

        Raise ConfigError (nothing changed) when the new file is invalid. Runs in
        flight keep the definition they started with.
        """
        async with self._reload_lock:
            try:
                new = await asyncio.to_thread(
                    load_config, self.config.path, self.environ, self._data_dir_override
                )
            except ConfigError as error:
                for line in refused_report(error):
                    log.warning(line)
                raise
            new = self._overridden(new)
            old = self.config
            changes = diff_tasks(old.tasks, new.tasks)
            restart = settings_needing_restart(vars(old.daemon), vars(new.daemon))
            ended = await self.engine.replace_tasks(new.tasks)
            services = await self.services.reload(new.services)
            # Settings that apply live; host, port and data_dir wait for a restart.
            self.engine.max_output_size = new.daemon.max_output_size
            self.engine.set_limits(
                new.daemon.max_concurrent_runs, _account_limits(new), _account_input_limits(new)
            )
            self.notifications.configure(new.notifications, run_link_base(new))
            await self.notifications.learn_failing(list(new.tasks))
            kept = {key: getattr(old.daemon, key) for key in RESTART_SETTINGS}
            self.config = dataclasses.replace(new, daemon=dataclasses.replace(new.daemon, **kept))
            await self.scheduler.tasks_changed()
            outcome = ReloadOutcome(
                added=changes.added,
                removed=changes.removed,
                changed=changes.changed,
                restart_required=restart,
                warnings=list(new.warnings),
                skipped_runs=[run.id for run in ended],
                accounts_changed=sorted(
                    account
                    for account in old.accounts.keys() | new.accounts.keys()
                    if old.accounts.get(account) != new.accounts.get(account)
                ),
                services_added=services.added,
                services_removed=services.removed,
                services_changed=services.changed,
            )
            for line in outcome.log_lines():
                log.info(line)
            return outcome

    def _overridden(self, config: Config) -> Config:
        if not self._daemon_overrides:
            return config
        daemon = dataclasses.replace(config.daemon, **self._daemon_overrides)  # type: ignore[arg-type]
        return dataclasses.replace(config, daemon=daemon)

    # ----- nodes -----------------------------------------------------------

    async def cluster_nodes(self) -> list[NodeInfo]:
        """Return the nodes on this database; on SQLite, this daemon alone."""
        if self.lease is not None:
            return await asyncio.to_thread(self.lease.registry.list_nodes)
        return [
            NodeInfo(
                name=self.node_name,
                url=run_link_base(self.config),
                started_at=self.started_at,
                lease_age=None,
                lease_seconds=None,
                expired=False,
                running_runs=self.engine.running_here(),
                config_hash=self.config_hash,
                version=__version__,
            )
        ]

    # ----- runs ------------------------------------------------------------

    async def list_runs(self, query: RunQuery) -> tuple[list[Run], int]:
        name = query.task_name
        if name is not None and name not in self.engine.tasks and name not in self.config.services:
            # A removed task's history is still listable; only unknown names are refused.
            # A service's runs are its instances' lifetimes.
            names = await asyncio.to_thread(self.store.task_names_with_runs)
            if name not in names:
                raise NotFound("task", name)
        return await asyncio.to_thread(self.store.list_runs, query)

    async def get_run(self, run_id: str) -> Run:
        live = self.engine.live_run(run_id) or self.services.live_run(run_id)
        if live is not None:
            return live
        run = await asyncio.to_thread(self.store.get_run, run_id)
        if run is None:
            raise NotFound("run", run_id)
        return run

    async def run_detail(self, run_id: str) -> Run:
        """Return a run with its input data, read from its file when it has one."""
        run = await self.get_run(run_id)
        if run.input_in_file:
            run = dataclasses.replace(run, input_data=await self.input_of(run))
        return run

    async def input_of(self, run: Run) -> list[list[list[str]]] | None:
        """Return a run's input data: inline, or read from its file (single-run endpoints only)."""
        if not run.input_in_file:
            return run.input_data
        return await asyncio.to_thread(self.engine.inputs.read_tables, run.id)

    async def trigger(
        self,
        task_name: str,
        params: Mapping[str, object],
        triggered_by: TriggeredBy = TriggeredBy.API,
        data: object = None,
        staged: StagedInput | None = None,
    ) -> list[Run]:
        """Trigger a task by name; `data` is input data as the v3 API takes it (2-D or 3-D).

        `staged`: the input data of a large body, parsed by a worker process
        (body_parser.py), in place of `data`.
        """
        if staged is not None:
            if staged.problem is not None:
                error = staged.problem.exception()
                if isinstance(error, UnstorableCell):
                    raise UnstorableInput(
                        "body.data" + error.location, error.problem, error.shown
                    ) from None
                raise InvalidInput("body.data", error.message) from None
            return await self.engine.trigger(
                task_name,
                params,
                triggered_by,
                staged.tables,
                run_id=staged.run_id,
                input_size=None if staged.tables is not None else staged.size,
            )
        tables = None
        if data is not None:
            try:
                tables = normalise_input(data)
            except UnstorableCell as error:
                raise UnstorableInput(
                    "body.data" + error.location, error.problem, error.shown
                ) from None
            except InputDataError as error:
                raise InvalidInput("body.data", error.message, data) from None
        return await self.engine.trigger(task_name, params, triggered_by, tables)

    async def stop_run(self, run_id: str, *, forward: bool = True) -> Run:
        """Stop a run; one that another node holds is stopped by asking that node.

        `forward` False: a request another node forwarded here is answered
        here alone (a registry URL pointing back must not loop).
        """
        try:
            return await self.engine.stop(run_id)
        except RunOnAnotherNode as error:
            if not forward:
                raise
            return await self._stop_elsewhere(error.run)

    async def _stop_elsewhere(self, run: Run) -> Run:
        peer = await self.run_peer(run)
        if peer is None or self.peers is None:  # its node ended it meanwhile
            raise RunAlreadyEnded(await self.get_run(run.id))
        status, detail = await self.peers.post(peer, run.id, f"/api/runs/{run.id}/stop")
        now = await self.get_run(run.id)
        if status in (200, 202):
            return now
        if status == 404:
            raise NotFound("run", run.id)
        if status == 409 and not now.is_active:
            raise RunAlreadyEnded(now)
        if status == 409 and now.kind is RunKind.SERVICE:
            raise ServiceLifetimeStop(now)
        raise NodeUnreachable(run.id, peer.name, f"it answered the stop {status}: {detail}")

    async def output_of(self, run: Run, *, forward: bool = True) -> dict[str, list[list[str]]]:
        """Return a run's output data: live while it runs (asked of its node), frozen once ended."""
        if not run.is_active:
            return run.output_data or {}
        peer = await self.run_peer(run) if forward else None
        if peer is None or self.peers is None:
            return await self.engine.live_output(run.id) or run.output_data or {}
        body = await self.peers.get_json(peer, run.id, f"/api/runs/{run.id}/output")
        output = body.get("output_data") if isinstance(body, dict) else None
        if not _is_output(output):
            raise NodeUnreachable(run.id, peer.name, "it answered output data of another shape")
        return output

    async def run_peer(self, run: Run) -> Peer | None:
        """Return the node to ask for what only the run's node has; None: this node answers.

        NodeUnreachable when that node is no longer registered or its lease expired.
        """
        if self.cluster is None or run.node is None or run.node == self.node_name:
            return None
        address = await asyncio.to_thread(self.cluster.node_address, run.node)
        if address is None:
            raise NodeUnreachable(
                run.id, run.node, "it is not registered (it stopped, or was taken over)"
            )
        if address.expired:
            raise NodeUnreachable(
                run.id,
                run.node,
                f"its lease expired (last renewed {address.lease_age:.0f} s ago)",
            )
        return Peer(address.name, address.url)

    async def log_peer(self, run: Run) -> Peer | None:
        """Return the node whose disk holds the run's log; None when this node reads it.

        When that node is gone, this node's disk answers if it holds the log
        (a disk the nodes share); otherwise NodeUnreachable names the node.
        """
        try:
            return await self.run_peer(run)
        except NodeUnreachable:
            if await asyncio.to_thread(self.log_path(run.id).exists):
                return None
            raise

    async def log_line_count(self, run: Run) -> int:
        """Return how many lines the run's log has so far (0 when its node cannot say)."""
        try:
            peer = await self.log_peer(run)
            if peer is None or self.peers is None:
                return await asyncio.to_thread(count_lines, self.log_path(run.id))
            body = await self.peers.get_json(
                peer, run.id, f"/api/runs/{run.id}/log", "from=0&limit=1"
            )
            return int(body["total_lines"])
        except (NodeUnreachable, KeyError, TypeError, ValueError):
            return 0

    async def wait_for_end(self, run_id: str, timeout: float) -> Run | None:
        return await self.engine.wait_for_end(run_id, timeout)

    def log_path(self, run_id: str) -> Path:
        return self.engine.log_path(run_id)

    def follow_log(
        self, run: Run, start: int, closing: StopSignal, idle_seconds: float
    ) -> AsyncGenerator[FollowItem, None]:
        """Follow a run's log from line `start`: its lines, None when idle, then the ended run."""
        return follow_log(
            run.id,
            start,
            followers=self.engine.followers,
            path=self.log_path(run.id),
            wait_for_end=self.wait_for_end,
            get_run=self.get_run,
            closing=closing,
            idle_seconds=idle_seconds,
        )


def refused_report(error: ConfigError) -> list[str]:
    """Return the log lines of a reload refused because the new config is invalid."""
    return [
        f"reload refused: {error.path}: {problem}"
        for problem in error.problems or ["invalid config"]
    ]


def _account_input_limits(config: Config) -> dict[str, int | None]:
    return {account.id: account.max_queued_input for account in config.accounts.values()}


def run_link_base(config: Config) -> str:
    """Return the base of run links in notifications: external_url, else the daemon's address."""
    if config.daemon.external_url:
        return config.daemon.external_url.rstrip("/")
    host = config.daemon.host
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    return f"http://{host}:{config.daemon.port}"


def _is_output(value: object) -> TypeGuard[dict[str, list[list[str]]]]:
    """Return whether `value` has the shape of output data: {token: [[str, ...], ...]}."""
    return isinstance(value, dict) and all(
        isinstance(key, str)
        and isinstance(rows, list)
        and all(
            isinstance(row, list) and all(isinstance(cell, str) for cell in row) for row in rows
        )
        for key, rows in value.items()
    )


def _account_limits(config: Config) -> dict[str, int | None]:
    return {account.id: account.max_concurrent_runs for account in config.accounts.values()}
