"""The object graph the servicers call, built from settings and ports without a server."""

from __future__ import annotations

import pytest

from agent_runtime.application.commands import ListSessions, SendUserMessage
from agent_runtime.application.live_turns import LiveTurnRegistry
from agent_runtime.application.turn_settings import TurnSettings
from agent_runtime.config import Settings
from agent_runtime.domain import chunks
from agent_runtime.domain.agents import default_agents
from agent_runtime.domain.errors import InvalidInput
from agent_runtime.domain.tenants import DEFAULT_TENANT
from agent_runtime.infrastructure.event_signal import LocalEventSignal
from agent_runtime.object_graph import Ports, build_use_cases
from tests.fakes import FakeUnitOfWorkFactory, ScriptedModel, text_answer


async def test_the_use_cases_run_on_the_ports_with_the_settings() -> None:
    model = ScriptedModel(text_answer("hello there"))
    uows = FakeUnitOfWorkFactory()
    ports = Ports(
        uows=uows,
        commits=LocalEventSignal(),
        llm=model,
        default_model="the-default",
        agents=default_agents(),
        live=LiveTurnRegistry(),
    )
    use_cases = build_use_cases(Settings(turns=TurnSettings(max_message_bytes=20)), ports)

    said = SendUserMessage("s1", "hi", tenant_id=DEFAULT_TENANT)
    turn = [chunk async for chunk in use_cases.turns.handle(said)]
    answer = turn[-2].body
    assert isinstance(answer, chunks.AssistantMessage) and answer.content == "hello there"
    assert [r.model for r in model.requests] == ["the-default"]
    page = await use_cases.session_queries.list(ListSessions(tenant_id=DEFAULT_TENANT))
    assert [s.session.session_id for s in page.items] == ["s1"]
    assert use_cases.agents is ports.agents

    too_long = SendUserMessage("s1", "x" * 21, tenant_id=DEFAULT_TENANT)
    with pytest.raises(InvalidInput):  # TurnSettings.max_message_bytes reached the validator
        _ = [chunk async for chunk in use_cases.turns.handle(too_long)]
