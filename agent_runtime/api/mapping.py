"""Proto <-> domain translation of sessions, turns, messages, approvals, agents, events and
usage. No rules here: only shapes. Chunks are in chunk_mapping.py, model controls in
model_controls_mapping.py."""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf import duration_pb2

from agent_runtime.api.chunk_mapping import STOP_REASONS, usage_to_proto
from agent_runtime.api.model_controls_mapping import generation_to_proto, tool_to_proto
from agent_runtime.api.proto_values import to_struct, to_timestamp
from agent_runtime.application.session_queries import SessionDetails
from agent_runtime.domain.agents import AgentProfile
from agent_runtime.domain.approval import Approval, ApprovalGrant, ApprovalRule, RuleAction
from agent_runtime.domain.events import EventType, StoredEvent
from agent_runtime.domain.model import (
    AgentSwitch,
    Message,
    Role,
    Session,
    Turn,
    TurnStatus,
    UsageTotals,
)
from agent_runtime.domain.usage import UsageGroup, UsageGroupBy
from agent_runtime.v1 import agent_pb2 as ag
from agent_runtime.v1 import event_pb2 as ev
from agent_runtime.v1 import session_pb2 as ses
from agent_runtime.v1 import usage_pb2 as us

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


def usage_totals(totals: UsageTotals) -> us.UsageTotals:
    return us.UsageTotals(
        prompt_tokens=totals.prompt_tokens,
        completion_tokens=totals.completion_tokens,
        total_tokens=totals.total_tokens,
        turns=totals.turns,
    )


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
        usage=usage_to_proto(turn.usage),
        started_at=to_timestamp(turn.started_at),
        model_calls=turn.model_calls,
        tool_calls=turn.tool_calls,
        client_message_id=turn.client_message_id or "",
    )
    if turn.stop_reason is not None:
        out.stop_reason = STOP_REASONS[turn.stop_reason]
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
