"""Proto <-> domain translation. No rules here: only shapes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from google.protobuf import duration_pb2, json_format, struct_pb2, timestamp_pb2

from agent_runtime.api.errors import code_name
from agent_runtime.application.session_queries import SessionDetails
from agent_runtime.domain import chunks
from agent_runtime.domain.agents import AgentProfile
from agent_runtime.domain.approval import ApprovalGrant, ApprovalRule, RuleAction
from agent_runtime.domain.errors import InvalidInput
from agent_runtime.domain.events import EventType, StoredEvent
from agent_runtime.domain.generation import GenerationConfig, ToolChoice, ToolChoiceMode
from agent_runtime.domain.model import (
    AgentSwitch,
    Approval,
    Message,
    Role,
    Session,
    StopReason,
    Turn,
    TurnStatus,
    Usage,
    UsageTotals,
)
from agent_runtime.domain.tool_schemas import EMPTY_OBJECT_SCHEMA
from agent_runtime.domain.tools import ToolDefinition, declared_tool
from agent_runtime.domain.usage import UsageGroup, UsageGroupBy
from agent_runtime.v1 import agent_pb2 as ag
from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import event_pb2 as ev
from agent_runtime.v1 import model_controls_pb2 as mc
from agent_runtime.v1 import session_pb2 as ses
from agent_runtime.v1 import usage_pb2 as us

_STOP_REASONS = {
    StopReason.END_TURN: rt.STOP_REASON_END_TURN,
    StopReason.TOOL_CALL: rt.STOP_REASON_TOOL_CALL,
    StopReason.AWAITING_APPROVAL: rt.STOP_REASON_AWAITING_APPROVAL,
    StopReason.ERROR: rt.STOP_REASON_ERROR,
    StopReason.CANCELLED: rt.STOP_REASON_CANCELLED,
    StopReason.MAX_ITERATIONS: rt.STOP_REASON_MAX_ITERATIONS,
}

EVENT_TYPES: dict[EventType, ev.EventType.ValueType] = {
    EventType.TURN_STARTED: ev.EVENT_TYPE_TURN_STARTED,
    EventType.TURN_COMPLETED: ev.EVENT_TYPE_TURN_COMPLETED,
    EventType.TURN_FAILED: ev.EVENT_TYPE_TURN_FAILED,
    EventType.TURN_CANCELLED: ev.EVENT_TYPE_TURN_CANCELLED,
    EventType.MESSAGE_PERSISTED: ev.EVENT_TYPE_MESSAGE_PERSISTED,
    EventType.MODEL_REQUEST_STARTED: ev.EVENT_TYPE_MODEL_REQUEST_STARTED,
    EventType.MODEL_REQUEST_COMPLETED: ev.EVENT_TYPE_MODEL_REQUEST_COMPLETED,
    EventType.MODEL_REQUEST_FAILED: ev.EVENT_TYPE_MODEL_REQUEST_FAILED,
    EventType.TOOL_EXECUTION_REQUESTED: ev.EVENT_TYPE_TOOL_EXECUTION_REQUESTED,
    EventType.APPROVAL_REQUIRED: ev.EVENT_TYPE_APPROVAL_REQUIRED,
    EventType.APPROVAL_DECIDED: ev.EVENT_TYPE_APPROVAL_DECIDED,
    EventType.AGENT_SWITCHED: ev.EVENT_TYPE_AGENT_SWITCHED,
}
EVENT_TYPES_FROM_PROTO = {value: key for key, value in EVENT_TYPES.items()}

_TOOL_CHOICE_MODES = {
    mc.TOOL_CHOICE_MODE_AUTO: ToolChoiceMode.AUTO,
    mc.TOOL_CHOICE_MODE_NONE: ToolChoiceMode.NONE,
    mc.TOOL_CHOICE_MODE_REQUIRED: ToolChoiceMode.REQUIRED,
}
_TOOL_CHOICE_MODES_TO_PROTO = {value: key for key, value in _TOOL_CHOICE_MODES.items()}
_EXACT_INTEGERS = 2**53  # beyond, a double is no longer an exact whole number anyway

_TURN_STATES = {
    TurnStatus.RUNNING: ses.TURN_STATE_RUNNING,
    TurnStatus.COMPLETED: ses.TURN_STATE_COMPLETED,
    TurnStatus.FAILED: ses.TURN_STATE_FAILED,
    TurnStatus.CANCELLED: ses.TURN_STATE_CANCELLED,
    TurnStatus.INTERRUPTED: ses.TURN_STATE_INTERRUPTED,
}

_RULE_ACTIONS = {
    RuleAction.ALLOW: ag.RULE_ACTION_ALLOW,
    RuleAction.ASK: ag.RULE_ACTION_ASK,
    RuleAction.DENY: ag.RULE_ACTION_DENY,
}

USAGE_GROUPS_FROM_PROTO = {
    us.USAGE_GROUP_BY_UNSPECIFIED: UsageGroupBy.NONE,
    us.USAGE_GROUP_BY_MODEL: UsageGroupBy.MODEL,
    us.USAGE_GROUP_BY_DAY: UsageGroupBy.DAY,
    us.USAGE_GROUP_BY_SESSION: UsageGroupBy.SESSION,
}

_ROLES = {
    Role.SYSTEM: ses.ROLE_SYSTEM,
    Role.USER: ses.ROLE_USER,
    Role.ASSISTANT: ses.ROLE_ASSISTANT,
    Role.TOOL: ses.ROLE_TOOL,
}


def to_struct(values: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


def to_timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _usage(usage: Usage) -> rt.Usage:
    return rt.Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
    )


def usage_totals(totals: UsageTotals) -> us.UsageTotals:
    return us.UsageTotals(
        prompt_tokens=totals.prompt_tokens,
        completion_tokens=totals.completion_tokens,
        total_tokens=totals.total_tokens,
        turns=totals.turns,
    )


def chunk_to_proto(chunk: chunks.Chunk) -> rt.StreamChunk:
    out = rt.StreamChunk(session_id=chunk.session_id, turn_id=chunk.turn_id, seq=chunk.seq)
    body = chunk.body
    match body:
        case chunks.AssistantDelta(text=text):
            out.assistant_delta.text = text
        case chunks.ToolCallDelta():
            delta = out.tool_call_delta
            delta.call_id = body.call_id
            delta.tool_name = body.tool_name
            delta.arguments_fragment = body.arguments_fragment
        case chunks.ReasoningDelta(text=text):
            out.reasoning_delta.text = text
        case chunks.TurnStarted():
            out.turn_started.CopyFrom(
                rt.TurnStarted(
                    turn_id=chunk.turn_id, agent=body.agent, input_message_id=body.input_message_id
                )
            )
        case chunks.AssistantMessage():
            out.assistant_message.CopyFrom(
                rt.AssistantMessage(message_id=body.message_id, content=body.content)
            )
        case chunks.ToolCall():
            out.tool_call.CopyFrom(
                rt.ToolCall(
                    message_id=body.message_id,
                    call_id=body.call_id,
                    tool_name=body.tool_name,
                    arguments=to_struct(body.arguments),
                    requires_approval=body.requires_approval,
                    approval_reason=body.approval_reason,
                )
            )
        case chunks.AgentSwitched():
            out.agent_switched.CopyFrom(
                rt.AgentSwitched(
                    from_agent=body.from_agent, to_agent=body.to_agent, reason=body.reason
                )
            )
        case chunks.TurnError(error=error):
            out.error.CopyFrom(
                rt.Error(
                    code=code_name(error),
                    reason=error.reason,
                    message=error.message,
                    retryable=error.retryable,
                )
            )
        case chunks.TurnCompleted():
            out.turn_completed.CopyFrom(
                rt.TurnCompleted(
                    stop_reason=_STOP_REASONS[body.stop_reason], usage=_usage(body.usage)
                )
            )
    return out


def session_to_proto(details: SessionDetails, *, with_tools: bool = True) -> ses.Session:
    """`with_tools`: False leaves the declared tools out (a page of sessions would otherwise
    carry every session's schemas)."""
    session = details.session
    return ses.Session(
        session_id=session.session_id,
        title=session.title,
        agent=session.agent,
        message_count=session.message_count,
        running_turn_id=session.running_turn_id or "",
        created_at=to_timestamp(session.created_at),
        last_activity_at=to_timestamp(session.last_activity_at),
        agent_history=[switch_to_proto(s) for s in details.agent_history],
        agent_switch_count=details.agent_switch_count,
        pending_approvals_count=details.pending_approvals,
        instructions=session.instructions,
        tools=[tool_to_proto(tool) for tool in session.tools] if with_tools else [],
        generation=None if session.generation.is_empty else generation_to_proto(session.generation),
        usage=usage_totals(session.usage),
        approval_grants=[grant_to_proto(g) for g in details.grants],
    )


def shown_session_bytes(session: Session, grants: Sequence[ApprovalGrant]) -> int:
    """What the session, with these grants in force, takes in a GetSession answer without
    its agent switches (application/session_bound.py)."""
    return session_to_proto(SessionDetails(session, [], 0, list(grants))).ByteSize()


def switch_to_proto(switch: AgentSwitch) -> ses.AgentSwitch:
    return ses.AgentSwitch(
        from_agent=switch.from_agent,
        to_agent=switch.to_agent,
        reason=switch.reason,
        switched_at=to_timestamp(switch.switched_at),
        turn_id=switch.turn_id or "",
    )


def grant_to_proto(grant: ApprovalGrant) -> ses.ApprovalGrant:
    return ses.ApprovalGrant(
        grant_id=grant.grant_id,
        tool_name=grant.tool_name,
        when=dict(grant.when),
        call_id=grant.call_id,
        turn_id=grant.turn_id,
        granted_at=to_timestamp(grant.granted_at),
    )


def rule_to_proto(rule: ApprovalRule) -> ag.ApprovalRule:
    return ag.ApprovalRule(tool=rule.tool, when=dict(rule.when), action=_RULE_ACTIONS[rule.action])


def turn_to_proto(turn: Turn) -> ses.Turn:
    out = ses.Turn(
        turn_id=turn.turn_id,
        session_id=turn.session_id,
        agent=turn.agent,
        model=turn.model,
        input_message_id=turn.input_message_id or "",
        state=_TURN_STATES[turn.status],
        error_reason=turn.error.reason if turn.error else "",
        error_message=turn.error.message if turn.error else "",
        usage=_usage(turn.usage),
        started_at=to_timestamp(turn.started_at),
        model_calls=turn.model_calls,
        tool_calls=turn.tool_calls,
        client_message_id=turn.client_message_id or "",
    )
    if turn.stop_reason is not None:
        out.stop_reason = _STOP_REASONS[turn.stop_reason]
    if turn.finished_at is not None:
        out.ended_at.CopyFrom(to_timestamp(turn.finished_at))
    if turn.first_token_ms is not None:
        out.time_to_first_token.CopyFrom(
            duration_pb2.Duration(
                seconds=turn.first_token_ms // 1000, nanos=turn.first_token_ms % 1000 * 1_000_000
            )
        )
    return out


def usage_group_to_proto(group: UsageGroup) -> us.UsageGroup:
    return us.UsageGroup(key=group.key, usage=usage_totals(group.usage))


def approval_to_proto(approval: Approval) -> ses.PendingApproval:
    return ses.PendingApproval(
        call_id=approval.call_id,
        message_id=approval.message_id,
        tool_name=approval.tool_name,
        arguments=to_struct(approval.arguments),
        reason=approval.reason,
        turn_id=approval.turn_id,
        created_at=to_timestamp(approval.created_at),
        expires_at=to_timestamp(approval.expires_at),
        rule=None if approval.rule is None else rule_to_proto(approval.rule),
        rule_index=approval.rule_index,
    )


def agent_to_proto(profile: AgentProfile, *, is_default: bool) -> ag.Agent:
    return ag.Agent(
        name=profile.name,
        description=profile.description,
        allowed_tools=list(profile.allowed_tools),
        approval_rules=list(profile.approval_policy.require_approval),
        path_restrictions=[
            ag.PathRestriction(
                tools=list(r.tools),
                allowed_path_regex=r.allowed_path_regex,
                description=r.description,
            )
            for r in profile.path_restrictions
        ],
        model=profile.model,
        is_default=is_default,
        rules=[rule_to_proto(r) for r in profile.approval_policy.rules],
        generation=generation_to_proto(profile.generation),
        client_tools=list(profile.client_tools),
        context_window_tokens=profile.context_window_tokens or 0,
        stream_reasoning=profile.stream_reasoning,
        store_reasoning=profile.store_reasoning,
    )


def event_to_proto(stored: StoredEvent) -> ev.Event:
    event = stored.event
    return ev.Event(
        event_id=stored.event_id,
        type=EVENT_TYPES[event.type],
        session_id=event.session_id,
        turn_id=event.turn_id or "",
        occurred_at=to_timestamp(event.occurred_at),
        data=to_struct(event.data),
    )


def message_to_proto(message: Message) -> ses.Message:
    return ses.Message(
        message_id=message.message_id,
        role=_ROLES[message.role],
        content=message.content,
        tool_calls=[
            ses.MessageToolCall(
                call_id=c.call_id, tool_name=c.tool_name, arguments=to_struct(c.arguments)
            )
            for c in message.tool_calls
        ],
        tool_call_id=message.tool_call_id or "",
        created_at=to_timestamp(message.created_at),
        turn_id=message.turn_id or "",
        position=message.position,
        incomplete=message.incomplete,
        is_error=message.is_error,
        reasoning=message.reasoning,
        superseded_by_turn_id=message.superseded_by_turn_id or "",
    )


# -- model controls -----------------------------------------------------------------------


def generation_from_proto(config: mc.GenerationConfig) -> GenerationConfig:
    choice: ToolChoice | None = None
    match config.tool_choice.WhichOneof("choice"):
        case "tool_name":
            choice = ToolChoice.named(config.tool_choice.tool_name)
        case "mode" if config.tool_choice.mode in _TOOL_CHOICE_MODES:
            choice = ToolChoice(_TOOL_CHOICE_MODES[config.tool_choice.mode])
    return GenerationConfig(
        temperature=config.temperature if config.HasField("temperature") else None,
        top_p=config.top_p if config.HasField("top_p") else None,
        max_output_tokens=(
            config.max_output_tokens if config.HasField("max_output_tokens") else None
        ),
        stop=tuple(config.stop),
        seed=config.seed if config.HasField("seed") else None,
        reasoning_effort=config.reasoning_effort,
        tool_choice=choice,
    )


def generation_to_proto(config: GenerationConfig) -> mc.GenerationConfig:
    out = mc.GenerationConfig(
        temperature=config.temperature,
        top_p=config.top_p,
        max_output_tokens=config.max_output_tokens,
        stop=list(config.stop),
        seed=config.seed,
        reasoning_effort=config.reasoning_effort,
    )
    choice = config.tool_choice
    if choice is not None:
        if choice.mode is ToolChoiceMode.TOOL:
            out.tool_choice.tool_name = choice.tool_name
        else:
            out.tool_choice.mode = _TOOL_CHOICE_MODES_TO_PROTO[choice.mode]
    return out


def tools_from_proto(tools: Iterable[mc.ToolDefinition], field: str) -> tuple[ToolDefinition, ...]:
    """Declared tools as received (their checks are the use cases'); parameters as JSON, a
    whole-number double as an integer (a schema's "maxLength": 10 stays 10)."""
    declared = []
    for index, tool in enumerate(tools):
        if tool.HasField("parameters"):
            try:
                parameters = _whole_numbers(json_format.MessageToDict(tool.parameters))
            except ValueError as exc:  # NaN or Infinity: not JSON, so not a JSON Schema
                raise InvalidInput.field(f"{field}[{index}].parameters", str(exc)) from None
        else:
            parameters = dict(EMPTY_OBJECT_SCHEMA)
        declared.append(
            declared_tool(
                tool.name,
                tool.description,
                parameters,
                requires_approval=tool.requires_approval,
            )
        )
    return tuple(declared)


def tool_to_proto(tool: ToolDefinition) -> mc.ToolDefinition:
    out = mc.ToolDefinition(
        name=tool.name,
        description=tool.description,
        parameters=to_struct(tool.parameters),
    )
    if tool.requires_approval:
        out.requires_approval = True
    return out


def _whole_numbers(value: Any) -> Any:
    """google.protobuf.Struct holds every number as a double: give whole ones back as ints."""
    if isinstance(value, float) and value.is_integer() and abs(value) < _EXACT_INTEGERS:
        return int(value)
    if isinstance(value, dict):
        return {key: _whole_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(item) for item in value]
    return value
