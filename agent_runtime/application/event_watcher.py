"""WatchEvents: replay committed events after a cursor, then follow live."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from agent_runtime.application.commands import WatchEvents
from agent_runtime.application.ports import CommitScope, EventSignal
from agent_runtime.application.session_lookup import session_deleted
from agent_runtime.application.store_ports import UnitOfWorkFactory
from agent_runtime.domain.errors import InvalidInput
from agent_runtime.domain.events import StoredEvent
from agent_runtime.domain.model import validate_session_id

BATCH = 500
MAX_EVENT_ID = 2**63  # what the database's integers hold


class EventWatcher:
    def __init__(
        self, uow_factory: UnitOfWorkFactory, signal: EventSignal, *, poll_seconds: float = 1.0
    ) -> None:
        self._uow_factory = uow_factory
        self._signal = signal
        # Commits by other processes sharing the database are found by polling this often.
        self._poll_seconds = poll_seconds

    async def start_cursor(self, query: WatchEvents) -> int:
        """The event id the watch starts after: the request's cursor, or the newest event.

        A session that does not exist yet may be watched (its events come once it does); a
        deleted one is NOT_FOUND, as everywhere else.
        """
        if query.session_id:
            validate_session_id(query.session_id)
        if query.after_event_id is not None and not 0 <= query.after_event_id < MAX_EVENT_ID:
            raise InvalidInput.field("after_event_id", f"must be below {MAX_EVENT_ID}")
        async with self._uow_factory.reader(query.tenant_id) as uow:
            if query.session_id:
                session = await uow.sessions.get(query.session_id)
                if session is not None and session.deleted_at is not None:
                    raise session_deleted(session)
            if query.after_event_id is not None:
                return query.after_event_id
            return await uow.events.last_id()

    async def watch(self, query: WatchEvents, cursor: int) -> AsyncGenerator[StoredEvent, None]:
        """Events after `cursor` in commit order, each once, until the caller stops."""
        # Woken by commits of the tenant (of the session, when the watch has one).
        scope = CommitScope(query.tenant_id, query.session_id or None)
        while True:
            generation = self._signal.generation()
            async with self._uow_factory.reader(query.tenant_id) as uow:
                batch = await uow.events.after(
                    cursor, session_id=query.session_id or None, types=query.types, limit=BATCH
                )
            for stored in batch:
                cursor = stored.event_id
                yield stored
            if len(batch) < BATCH:
                await self._signal.wait(generation, self._poll_seconds, scope)
