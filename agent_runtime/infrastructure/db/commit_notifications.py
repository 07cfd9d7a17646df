"""Cross-replica wake-ups on PostgreSQL: LISTEN/NOTIFY on one channel.

A transaction that writes events also sends NOTIFY (see SqlAlchemyEventRepository);
PostgreSQL delivers it to every listening replica when, and only if, the transaction
commits. Each replica keeps one connection of its own listening and turns a notification
into a local wake-up of the event watchers and turn followers the commit concerns: the
payload names the tenant, session and turn (commit_payload.py), so a follower of another
turn or a watcher of another tenant is not woken to read for nothing. A replica ignores its
own notifications: its signal was woken right after its commit. Whatever the payload cannot
be read as (an older replica's empty one, garbage) wakes every waiter, the safe side.
The woken waiters then read the database as usual. It is a hint, not a carrier: a lost
notification (listener reconnecting, half-open connection) costs at most the polling
interval, never an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg

from agent_runtime.infrastructure.db import commit_payload
from agent_runtime.infrastructure.db.commit_payload import origin_of
from agent_runtime.infrastructure.db.engine import normalise_database_url
from agent_runtime.infrastructure.db.event_repository import COMMIT_CHANNEL
from agent_runtime.infrastructure.event_signal import LocalEventSignal

log = logging.getLogger(__name__)


class CommitListener:
    def __init__(
        self,
        database_url: str,
        signal: LocalEventSignal,
        *,
        instance_id: str | None = None,
        retry_seconds: float = 1.0,
    ) -> None:
        url = normalise_database_url(database_url).set(drivername="postgresql")
        self._dsn = url.render_as_string(hide_password=False)
        self._signal = signal
        # Notifications from this origin are this process's own (None: none are).
        self._origin = None if instance_id is None else origin_of(instance_id)
        self._retry_seconds = retry_seconds
        self.listening = False
        self.connections = 0  # LISTEN connections set up so far (reconnects included)

    async def run(self) -> None:
        """Listen until cancelled, reconnecting after a lost connection."""
        while True:
            try:
                await self._listen_until_lost()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("cannot LISTEN for other replicas' commits (%r); polling", exc)
            await asyncio.sleep(self._retry_seconds)

    async def _listen_until_lost(self) -> None:
        connection = await asyncpg.connect(self._dsn, timeout=10)
        lost = asyncio.Event()
        connection.add_termination_listener(lambda _connection: lost.set())
        try:
            await connection.add_listener(COMMIT_CHANNEL, self._on_notify)
            self.listening = True
            self.connections += 1
            self._signal.notify()  # commits made while nobody listened: look once
            await lost.wait()
            log.warning("LISTEN connection lost; reconnecting")
        finally:
            self.listening = False
            with contextlib.suppress(Exception):
                await asyncio.shield(connection.close(timeout=2))

    def _on_notify(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            origin, scope = commit_payload.decode(payload)
        except Exception as exc:  # whatever the payload, the listener carries on
            # Not ours to read (an older replica's empty payload, garbage): wake everyone.
            log.debug("commit notification %.200r not understood (%s); waking all", payload, exc)
            self._signal.notify()
            return
        if origin is not None and origin == self._origin:
            return  # our own commit: the signal was woken after it
        self._signal.notify(scope)
