"""Use cases that only read open read-only units of work (uow_factory.reader): on SQLite
they then neither wait for nor hold up the transactions that write."""

from __future__ import annotations

from agent_runtime.application.commands import (
    ListMessages,
    ListPendingApprovals,
    ListSessions,
    SendUserMessage,
    WatchEvents,
)
from agent_runtime.application.event_watcher import EventWatcher
from agent_runtime.application.session_queries import SessionQueries
from agent_runtime.application.turn_settings import TurnSettings
from agent_runtime.domain.agents import default_agents
from agent_runtime.domain.chunks import TurnStarted
from agent_runtime.domain.tenants import DEFAULT_TENANT as TENANT
from agent_runtime.infrastructure.event_signal import LocalEventSignal
from agent_runtime.object_graph import build_turns
from tests.fakes import FakeUnitOfWorkFactory, ScriptedModel, text_answer


async def _finished_turn(uows: FakeUnitOfWorkFactory) -> tuple[str, str]:
    handler = build_turns(
        uows,
        ScriptedModel(text_answer("hi")),
        default_agents(),
        TurnSettings(),
        default_model="m",
    ).handler
    stream = [c async for c in handler.handle(SendUserMessage("s1", "hello", tenant_id=TENANT))]
    assert any(isinstance(c.body, TurnStarted) for c in stream)
    return "s1", stream[0].turn_id


async def test_reading_use_cases_open_only_readers_scoped_to_the_tenant() -> None:
    uows = FakeUnitOfWorkFactory()
    session_id, turn_id = await _finished_turn(uows)
    turns = build_turns(uows, ScriptedModel(), default_agents(), TurnSettings(), default_model="m")
    sessions = SessionQueries(uows)
    watcher = EventWatcher(uows, LocalEventSignal())
    writers_before = len(uows.opened) - len(uows.readers_for)
    readers_before = len(uows.readers_for)

    await sessions.get(session_id, tenant_id=TENANT)
    await sessions.list(ListSessions(tenant_id=TENANT))
    await sessions.list_messages(ListMessages(session_id, tenant_id=TENANT))
    await sessions.list_pending_approvals(ListPendingApprovals(session_id, tenant_id=TENANT))
    assert await watcher.start_cursor(WatchEvents(tenant_id=TENANT)) > 0
    replayed = [c async for c in turns.streams.follow(session_id, turn_id, 0, tenant_id=TENANT)]
    assert replayed

    assert len(uows.opened) - len(uows.readers_for) == writers_before  # no writer opened
    assert uows.readers_for[readers_before:] == [TENANT] * 6
    assert all(u.closed for u in uows.opened)
