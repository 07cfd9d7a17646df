"""Decides what a finished model answer means for the turn."""

from __future__ import annotations

import json
from dataclasses import dataclass

from agent_runtime.domain.agents import AgentProfile
from agent_runtime.domain.model import ToolCallRecord
from agent_runtime.domain.model_output import ModelResponse
from agent_runtime.domain.tool_filter import ToolFilterService


@dataclass(frozen=True, slots=True)
class FinalAnswer:
    content: str


@dataclass(frozen=True, slots=True)
class ToolCallDecision:
    """The first tool call, validated; the client runs it (after approval if required)."""

    content: str
    call: ToolCallRecord
    requires_approval: bool
    approval_reason: str
    dropped_calls: int


@dataclass(frozen=True, slots=True)
class InvalidAnswer:
    """The answer cannot be used as it is (empty, or a tool call the agent may not make)."""

    reason: str
    message: str


Decision = FinalAnswer | ToolCallDecision | InvalidAnswer


class LLMResponseProcessor:
    def __init__(self, tool_filter: ToolFilterService | None = None) -> None:
        self._tools = tool_filter or ToolFilterService()

    def process(self, response: ModelResponse, agent: AgentProfile) -> Decision:
        if not response.tool_calls:
            if not response.content.strip():
                return InvalidAnswer(
                    "MODEL_EMPTY_ANSWER", "the model returned no text and no tool call"
                )
            return FinalAnswer(response.content)

        # One tool at a time: the rest are dropped and never enter the history.
        first = response.tool_calls[0]
        if not self._tools.is_allowed(agent, first.tool_name):
            return InvalidAnswer(
                "TOOL_NOT_ALLOWED",
                f"agent '{agent.name}' may not call tool '{first.tool_name}'",
            )
        try:
            arguments = json.loads(first.arguments_json or "{}")
        except json.JSONDecodeError as exc:
            return InvalidAnswer(
                "TOOL_ARGUMENTS_INVALID",
                f"arguments of {first.tool_name} are not valid JSON: {exc.msg}",
            )
        if not isinstance(arguments, dict):
            return InvalidAnswer(
                "TOOL_ARGUMENTS_INVALID", f"arguments of {first.tool_name} are not a JSON object"
            )

        approval_reason = agent.approval_policy.reason_for(first.tool_name)
        return ToolCallDecision(
            content=response.content,
            call=ToolCallRecord(first.call_id, first.tool_name, arguments),
            requires_approval=approval_reason is not None,
            approval_reason=approval_reason or "",
            dropped_calls=len(response.tool_calls) - 1,
        )
