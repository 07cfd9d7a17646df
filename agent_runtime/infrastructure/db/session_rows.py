"""How a session is kept in its row (its settings as JSON), and an agent switch in its own:
the conversions both ways that SqlAlchemySessionRepository's queries use."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Row

from agent_runtime.domain.generation import GenerationConfig
from agent_runtime.domain.model import AgentSwitch, Session, UsageTotals
from agent_runtime.domain.tools import ToolDefinition, declared_tool
from agent_runtime.infrastructure.db.rows import row
from agent_runtime.infrastructure.db.tables import sessions


def switch_from_row(found: Row[Any]) -> AgentSwitch:
    return AgentSwitch(
        found.from_agent,
        found.to_agent,
        found.reason,
        found.switched_at,
        found.turn_id,
        switch_id=found.switch_id,
    )


def activity_values(at: datetime, message_count: int | None) -> dict[str, Any]:
    if message_count is None:
        return row(sessions, last_activity_at=at)
    return row(sessions, last_activity_at=at, message_count=message_count)


def session_from_row(row: Row[Any]) -> Session:
    return Session(
        session_id=row.session_id,
        agent=row.agent,
        title=row.title,
        message_count=row.message_count,
        running_turn_id=row.running_turn_id,
        created_at=row.created_at,
        last_activity_at=row.last_activity_at,
        deleted_at=row.deleted_at,
        usage=UsageTotals(row.prompt_tokens, row.completion_tokens, row.counted_turns),
        instructions=row.instructions,
        tools=tools_from_json(row.tools),
        generation=(
            GenerationConfig.from_dict(json.loads(row.generation))
            if row.generation
            else GenerationConfig()
        ),
    )


def settings_row(session: Session) -> dict[str, Any]:
    return {
        "instructions": session.instructions,
        "tools": tools_json(session.tools),
        "generation": (
            None
            if session.generation.is_empty
            else json.dumps(session.generation.to_dict(), separators=(",", ":"))
        ),
    }


def tools_json(tools: tuple[ToolDefinition, ...]) -> str | None:
    if not tools:
        return None
    return json.dumps(
        [
            {
                "name": tool.name,
                "description": tool.description,
                "parameters": tool.parameters,
                "requires_approval": tool.requires_approval,
            }
            for tool in tools
        ],
        separators=(",", ":"),
        ensure_ascii=False,
    )


def tools_from_json(raw: str | None) -> tuple[ToolDefinition, ...]:
    if not raw:
        return ()
    return tuple(
        declared_tool(
            item["name"],
            item["description"],
            item["parameters"],
            requires_approval=item["requires_approval"],
        )
        for item in json.loads(raw)
    )
