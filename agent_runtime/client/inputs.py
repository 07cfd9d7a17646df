"""The inputs a turn starts from (StreamMessageRequest.input), and reading tool arguments."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import json_format

from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import model_controls_pb2 as mc
from agent_runtime.v1 import session_pb2 as ses

TurnInput = (
    rt.UserMessage
    | rt.ToolResult
    | rt.ApprovalDecision
    | rt.SwitchAgent
    | rt.Regenerate
    | rt.EditMessage
)


def user_message(content: str) -> rt.UserMessage:
    return rt.UserMessage(content=content)


def tool_result(call_id: str, content: str, *, is_error: bool = False) -> rt.ToolResult:
    return rt.ToolResult(call_id=call_id, content=content, is_error=is_error)


def approve(call_id: str, *, feedback: str = "") -> rt.ApprovalDecision:
    return rt.ApprovalDecision(call_id=call_id, decision=rt.DECISION_APPROVE, feedback=feedback)


def edit(call_id: str, arguments: Mapping[str, Any], *, feedback: str = "") -> rt.ApprovalDecision:
    """Approve the call with these arguments instead of the model's."""
    decision = rt.ApprovalDecision(call_id=call_id, decision=rt.DECISION_EDIT, feedback=feedback)
    decision.edited_arguments.update(dict(arguments))
    return decision


def approve_always(
    call_id: str, *, when: Mapping[str, str] | None = None, feedback: str = ""
) -> rt.ApprovalDecision:
    """Approve the call, and for the rest of the session every call to the same tool whose
    string arguments match the globs of `when` (every call to the tool without it)."""
    decision = rt.ApprovalDecision(
        call_id=call_id, decision=rt.DECISION_APPROVE_ALWAYS, feedback=feedback
    )
    decision.always_when.update(dict(when or {}))
    return decision


def regenerate() -> rt.Regenerate:
    """Answer the session's last user message again."""
    return rt.Regenerate()


def edit_message(message_id: str, content: str) -> rt.EditMessage:
    """Replace an earlier user message and continue from it."""
    return rt.EditMessage(message_id=message_id, content=content)


def reject(call_id: str, *, feedback: str = "") -> rt.ApprovalDecision:
    return rt.ApprovalDecision(call_id=call_id, decision=rt.DECISION_REJECT, feedback=feedback)


def switch_agent(agent: str, *, reason: str = "") -> rt.SwitchAgent:
    return rt.SwitchAgent(agent=agent, reason=reason)


def declared_tool(
    name: str,
    description: str,
    parameters: Mapping[str, Any] | None = None,
    *,
    requires_approval: bool | None = None,
) -> mc.ToolDefinition:
    """A tool the client declares and runs itself; `parameters` is its arguments' JSON Schema
    (an object schema). `requires_approval=True`: every call waits for a human's approval."""
    tool = mc.ToolDefinition(name=name, description=description)
    if parameters is not None:
        tool.parameters.update(dict(parameters))
    if requires_approval is not None:
        tool.requires_approval = requires_approval
    return tool


def stream_request(
    session_id: str,
    turn_input: TurnInput | str,
    *,
    client_message_id: str,
    agent: str = "",
    model: str = "",
    generation: mc.GenerationConfig | None = None,
    tools: Sequence[mc.ToolDefinition] = (),
) -> rt.StreamMessageRequest:
    """A StreamMessageRequest; a str input is a user message."""
    request = rt.StreamMessageRequest(
        session_id=session_id,
        client_message_id=client_message_id,
        agent=agent,
        model=model,
        generation=generation,
        tools=list(tools),
    )
    match turn_input:
        case str():
            request.user_message.content = turn_input
        case rt.UserMessage():
            request.user_message.CopyFrom(turn_input)
        case rt.ToolResult():
            request.tool_result.CopyFrom(turn_input)
        case rt.ApprovalDecision():
            request.approval_decision.CopyFrom(turn_input)
        case rt.SwitchAgent():
            request.switch_agent.CopyFrom(turn_input)
        case rt.Regenerate():
            request.regenerate.CopyFrom(turn_input)
        case rt.EditMessage():
            request.edit_message.CopyFrom(turn_input)
        case _:
            raise TypeError(f"not a turn input: {type(turn_input).__name__}")
    return request


def arguments_of(call: rt.ToolCall | ses.MessageToolCall | ses.PendingApproval) -> dict[str, Any]:
    """A tool call's arguments as plain JSON values. protobuf's Struct holds every number as a
    double; whole numbers come back as int, as the model wrote them."""
    return {
        k: _whole_numbers_as_int(v) for k, v in json_format.MessageToDict(call.arguments).items()
    }


def _whole_numbers_as_int(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_whole_numbers_as_int(v) for v in value]
    if isinstance(value, dict):
        return {k: _whole_numbers_as_int(v) for k, v in value.items()}
    return value
