"""The jobs a running runtime keeps beside its server: the readiness monitor, the lease
keeper and the database's own. Each runs as a task that is cancelled, and awaited, when the
start-up exit stack unwinds (bootstrap.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack
from typing import Any

from agent_runtime.api.server import GrpcServer
from agent_runtime.application.approval_gauge import PendingApprovalsGauge
from agent_runtime.application.live_turns import LiveTurnRegistry
from agent_runtime.application.periodic import Bounded, every
from agent_runtime.application.readiness import ReadinessMonitor
from agent_runtime.application.turn_recovery import TurnRecovery
from agent_runtime.application.turn_settings import DEFAULT_INSTANCE_ID
from agent_runtime.config import Settings
from agent_runtime.infrastructure.db.commit_notifications import CommitListener
from agent_runtime.infrastructure.db.readiness import DatabaseReadinessProbe
from agent_runtime.infrastructure.db.sqlite_writer import WAL_CHECK_SECONDS
from agent_runtime.infrastructure.db.uow_factory import SqlAlchemyUnitOfWorkFactory
from agent_runtime.infrastructure.observability.prometheus import PrometheusMetrics

log = logging.getLogger("agent_runtime")

# At shutdown: how long a check in flight gets to end before what it reads closes.
FINISH_SECONDS = 5.0


def in_background(stack: AsyncExitStack, job: Coroutine[Any, Any, None], name: str) -> None:
    """A background task, cancelled (and awaited) when the stack unwinds."""
    task = asyncio.create_task(job, name=name)

    async def cancel() -> None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    stack.push_async_callback(cancel)


async def own_turns(
    settings: Settings,
    uows: SqlAlchemyUnitOfWorkFactory,
    live: LiveTurnRegistry,
    stack: AsyncExitStack,
) -> None:
    """Ends the turns this instance left running in an earlier life, and those whose owner
    stopped renewing their lease; then renews this process's leases every third of one."""
    turns = settings.turns
    recovery = TurnRecovery(uows, live, owner=turns.instance_id, lease=turns.lease)
    await recovery.recover()
    in_background(stack, recovery.run(turns.lease_seconds / 3), "lease-keeper")


def database_jobs(
    settings: Settings,
    dialect: str,
    uows: SqlAlchemyUnitOfWorkFactory,
    stack: AsyncExitStack,
) -> None:
    warn_if_unnamed_replica(settings.turns.instance_id, dialect)
    if dialect == "sqlite":
        # Readers that always overlap could otherwise keep SQLite's WAL growing.
        in_background(stack, every(WAL_CHECK_SECONDS, uows.limit_wal), "wal-limit")
    if dialect == "postgresql":
        # Other replicas' commits wake this one's followers (LISTEN/NOTIFY); docs/deployment.md.
        listener = CommitListener(
            settings.database.url, uows.signal, instance_id=settings.turns.instance_id
        )
        in_background(stack, listener.run(), "commit-listener")


def warn_if_unnamed_replica(instance_id: str, dialect: str) -> None:
    """On PostgreSQL several replicas may share the database; each needs its own name."""
    if dialect == "postgresql" and instance_id == DEFAULT_INSTANCE_ID:
        log.warning(
            "AGENT_RUNTIME_INSTANCE_ID is not set: this process runs as %r. Every replica on "
            "one database needs its own id (turn leases and commit notifications are per "
            "instance; replicas sharing one ignore each other's notifications)",
            DEFAULT_INSTANCE_ID,
        )


async def monitor_readiness(
    settings: Settings,
    grpc_server: GrpcServer,
    uows: SqlAlchemyUnitOfWorkFactory,
    prometheus: PrometheusMetrics | None,
    stack: AsyncExitStack,
) -> None:
    """Health says SERVING only once the database answers at the right schema version; the
    monitor stops first at shutdown, so no check reports SERVING while draining."""
    timeout = settings.observability.health_check_timeout_seconds
    probe = DatabaseReadinessProbe(uows)
    stack.callback(probe.close)  # after the monitor's last check
    readiness = ReadinessMonitor(probe, grpc_server, timeout=timeout)
    await readiness.check()
    bounded: list[Bounded[Any]] = [readiness.probe]
    jobs: list[Callable[[], Awaitable[object]]] = [readiness.check]
    if prometheus is not None:
        gauge = PendingApprovalsGauge(uows, prometheus)
        bounded.append(Bounded(gauge.sample, timeout))
        jobs.append(bounded[-1])

    async def finish_runs() -> None:  # a run in flight ends before what it reads closes
        for job in bounded:
            await job.finish(FINISH_SECONDS)

    stack.push_async_callback(finish_runs)
    interval = settings.observability.health_check_interval_seconds
    in_background(stack, every(interval, *jobs), "readiness-monitor")
