"""LISTEN/NOTIFY between replicas: a commit with events in one process wakes the others'
waiters of its tenant, session and turn, and only those."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from agent_runtime.application.ports import CommitScope
from agent_runtime.domain.events import Event, EventType
from agent_runtime.domain.tenants import DEFAULT_TENANT
from agent_runtime.infrastructure.db.commit_notifications import CommitListener
from agent_runtime.infrastructure.db.engine import create_engine
from agent_runtime.infrastructure.db.event_repository import COMMIT_CHANNEL
from agent_runtime.infrastructure.db.uow_factory import SqlAlchemyUnitOfWorkFactory
from agent_runtime.infrastructure.event_signal import LocalEventSignal
from tests.support.databases import postgres_admin_url
from tests.support.migrated_databases import migrated_database_for
from tests.support.waiting import FOREVER, eventually

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


@dataclass
class Replica:
    """Another process's view: its own signal, woken only through the listener.

    `writer` commits as another instance; `own_writer` as this replica itself.
    """

    url: str
    writer: SqlAlchemyUnitOfWorkFactory
    own_writer: SqlAlchemyUnitOfWorkFactory
    listener: CommitListener
    signal: LocalEventSignal


@pytest.fixture
async def replica(tmp_path: Path) -> AsyncIterator[Replica]:
    async with migrated_database_for("postgresql", str(tmp_path / "unused.db")) as url:
        engine = create_engine(url)
        signal = LocalEventSignal()
        listener = CommitListener(url, signal, instance_id="replica-b", retry_seconds=0.05)
        task = asyncio.create_task(listener.run())
        try:

            async def listening() -> bool:
                return listener.listening

            await eventually(listening, what="the listener to LISTEN")
            yield Replica(
                url,
                SqlAlchemyUnitOfWorkFactory(engine, instance_id="replica-a"),
                # Its own signal: were the notification not ignored, only the listener
                # could move the replica's.
                SqlAlchemyUnitOfWorkFactory(engine, instance_id="replica-b"),
                listener,
                signal,
            )
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await engine.dispose()


async def _commit_an_event(
    writer: SqlAlchemyUnitOfWorkFactory,
    tenant_id: str = DEFAULT_TENANT,
    *events: tuple[str, str | None],
) -> None:
    """Commits one event per (session, turn), by default one of session s1's turn t1."""
    async with writer(tenant_id) as uow:
        for session_id, turn_id in events or (("s1", "t1"),):
            await uow.events.add(Event(EventType.TURN_STARTED, session_id, NOW, turn_id))
        await uow.commit()


def _waiter(replica: Replica, scope: CommitScope) -> asyncio.Task[None]:
    """A waiter of `scope` that only a notification for it (or a wake of all) ends."""
    return asyncio.create_task(replica.signal.wait(replica.signal.generation(), FOREVER, scope))


async def _done(task: asyncio.Task[None], what: str) -> None:
    async def finished() -> bool:
        return task.done()

    # The waiter waits for ever (no polling): only the notification can end it. The bound
    # only turns a missing notification into a failure, so it is generous for busy machines.
    await eventually(finished, within_seconds=10, what=what)


async def _notify_raw(replica: Replica, payload: str) -> None:
    """A NOTIFY as something else on the database might send it."""
    url = make_url(replica.url).set(drivername="postgresql")
    connection = await asyncpg.connect(url.render_as_string(False))
    try:
        await connection.execute("SELECT pg_notify($1, $2)", COMMIT_CHANNEL, payload)
    finally:
        await connection.close()


@pytest.fixture
async def cancel_later() -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks: list[asyncio.Task[None]] = []
    yield tasks
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _woken(replica: Replica, after: int) -> None:
    async def moved() -> bool:
        return replica.signal.generation() > after

    # Nothing but a notification moves the signal (no polling here); the bound only turns a
    # missing one into a failure, so it is generous for busy machines.
    await eventually(moved, within_seconds=10, what="the other replica to be woken")


async def test_a_commit_with_events_wakes_another_replica(replica: Replica) -> None:
    before = replica.signal.generation()
    await _commit_an_event(replica.writer)
    await _woken(replica, before)


async def test_the_listener_reconnects_after_losing_its_connection(replica: Replica) -> None:
    admin_url = make_url(postgres_admin_url()).set(drivername="postgresql")
    admin = await asyncpg.connect(admin_url.render_as_string(False))
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE usename = $1 AND query LIKE 'LISTEN%'",
            make_url(replica.url).username,
        )
    finally:
        await admin.close()

    async def reconnected() -> bool:
        return replica.listener.connections == 2 and replica.listener.listening

    await eventually(reconnected, what="the listener to reconnect")
    before = replica.signal.generation()
    await _commit_an_event(replica.writer)
    await _woken(replica, before)


async def test_a_commit_wakes_the_followers_of_its_turn_only(
    replica: Replica, cancel_later: list[asyncio.Task[None]]
) -> None:
    follower_x = _waiter(replica, CommitScope("tenant-a", "s1", "turn-x"))
    follower_y = _waiter(replica, CommitScope("tenant-a", "s1", "turn-y"))
    session_watcher = _waiter(replica, CommitScope("tenant-a", "s1"))
    other_session_watcher = _waiter(replica, CommitScope("tenant-a", "s2"))
    tenant_watcher = _waiter(replica, CommitScope("tenant-a"))
    other_tenant_watcher = _waiter(replica, CommitScope("tenant-b"))
    sentinel = _waiter(replica, CommitScope("tenant-c"))
    cancel_later += [follower_y, other_session_watcher, other_tenant_watcher, sentinel]

    await _commit_an_event(replica.writer, "tenant-a", ("s1", "turn-x"))
    await _done(follower_x, "the follower of turn x to be woken")
    await _done(session_watcher, "the watcher of its session to be woken")
    await _done(tenant_watcher, "the watcher of its tenant to be woken")
    # Notifications arrive in commit order: once a later commit's waiter is woken, the
    # first notification has been handled, and woke nobody else.
    await _commit_an_event(replica.writer, "tenant-c")
    await _done(sentinel, "the watcher of tenant c to be woken")
    assert not follower_y.done()
    assert not other_session_watcher.done()
    assert not other_tenant_watcher.done()


async def test_a_commit_of_several_turns_wakes_their_session_or_tenant(
    replica: Replica, cancel_later: list[asyncio.Task[None]]
) -> None:
    """A recovery interrupts several turns in one commit: it names no single turn."""
    follower_x = _waiter(replica, CommitScope("tenant-a", "s1", "turn-x"))
    follower_z = _waiter(replica, CommitScope("tenant-a", "s2", "turn-z"))
    other_tenant_watcher = _waiter(replica, CommitScope("tenant-b"))
    sentinel = _waiter(replica, CommitScope("tenant-c"))
    cancel_later += [other_tenant_watcher, sentinel]

    await _commit_an_event(replica.writer, "tenant-a", ("s1", "turn-x"), ("s2", "turn-y"))
    await _done(follower_x, "the follower of turn x to be woken")
    await _done(follower_z, "the follower of turn z (same tenant) to be woken")
    await _commit_an_event(replica.writer, "tenant-c")
    await _done(sentinel, "the watcher of tenant c to be woken")
    assert not other_tenant_watcher.done()


async def test_a_replica_ignores_its_own_notifications(replica: Replica) -> None:
    before = replica.signal.generation()
    await _commit_an_event(replica.own_writer)  # its own: its signal was woken after it
    await _commit_an_event(replica.writer)  # another replica's, delivered after it
    await _woken(replica, before)
    assert replica.signal.generation() == before + 1


@pytest.mark.parametrize(
    "payload",
    [
        "",  # what replicas sent before payloads
        "not json",
        "[1, 2]",
        '{"v": 2, "tenant": "tenant-a"}',
        '{"v": 1, "tenant": 7}',
        '{"v": 1, "tenant": "tenant-a", "turn": "turn-x"}',
        '{"v": 1, "tenant": "tenant-a", "from": ["replica-b"]}',
        "[" * 5000,
    ],
)
async def test_a_payload_not_understood_wakes_everyone_and_the_listener_carries_on(
    replica: Replica, payload: str
) -> None:
    waiters = [
        _waiter(replica, CommitScope("tenant-a", "s1", "turn-x")),
        _waiter(replica, CommitScope("tenant-b")),
        _waiter(replica, CommitScope()),
    ]
    await _notify_raw(replica, payload)
    for waiter in waiters:
        await _done(waiter, "every waiter to be woken")
    follower = _waiter(replica, CommitScope(DEFAULT_TENANT, "s1", "t1"))
    await _commit_an_event(replica.writer)
    await _done(follower, "the next commit to wake its follower")
    assert replica.listener.connections == 1  # still the first connection
