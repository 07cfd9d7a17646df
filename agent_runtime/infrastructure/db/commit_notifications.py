"""Cross-replica wake-ups on PostgreSQL: LISTEN/NOTIFY on one channel.

A transaction that writes events also sends NOTIFY (see SqlAlchemyEventRepository);
PostgreSQL delivers it to every listening replica when, and only if, the transaction
commits. Each replica keeps one connection of its own listening and turns a notification
into a local wake-up of its event watchers and turn followers, which then read the
database as usual. It is a hint, not a carrier: a lost notification (listener reconnecting,
half-open connection) costs at most the polling interval, never an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg

from agent_runtime.infrastructure.db.engine import normalise_database_url
from agent_runtime.infrastructure.db.repositories import COMMIT_CHANNEL
from agent_runtime.infrastructure.event_signal import LocalEventSignal

log = logging.getLogger(__name__)


class CommitListener:
    def __init__(
        self, database_url: str, signal: LocalEventSignal, *, retry_seconds: float = 1.0
    ) -> None:
        url = normalise_database_url(database_url).set(drivername="postgresql")
        self._dsn = url.render_as_string(hide_password=False)
        self._signal = signal
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

    def _on_notify(self, *_args: Any) -> None:
        self._signal.notify()
