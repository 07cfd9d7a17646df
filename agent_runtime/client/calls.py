"""What each unary call sends, whether it may be repeated, and what its caller gets back.

Shared by the async and the blocking client: each only sends the UnaryCall over its channel.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import grpc
from google.protobuf.message import Message

from agent_runtime.v1 import agent_pb2, agent_pb2_grpc, event_pb2_grpc
from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import agent_runtime_pb2_grpc as rt_grpc
from agent_runtime.v1 import model_controls_pb2 as mc
from agent_runtime.v1 import session_pb2 as ses
from agent_runtime.v1 import session_pb2_grpc as ses_grpc
from agent_runtime.v1 import usage_pb2 as us
from agent_runtime.v1 import usage_pb2_grpc as us_grpc

Metadata = tuple[tuple[str, str], ...]

_Result = TypeVar("_Result")
_Item = TypeVar("_Item")


def new_session_id() -> str:
    return f"ses_{uuid.uuid4().hex}"


def new_client_message_id() -> str:
    return f"cmsg_{uuid.uuid4().hex}"


def bearer(api_key: str | None) -> Metadata:
    """The metadata every call carries: the API key, if any."""
    return (("authorization", f"Bearer {api_key}"),) if api_key else ()


@dataclass(frozen=True, slots=True)
class Stubs:
    """The runtime's services over one channel (generated stubs take either kind)."""

    runtime: rt_grpc.AgentRuntimeServiceStub
    sessions: ses_grpc.SessionServiceStub
    agents: agent_pb2_grpc.AgentServiceStub
    events: event_pb2_grpc.EventServiceStub
    usage: us_grpc.UsageServiceStub

    @classmethod
    def over(cls, channel: grpc.Channel | grpc.aio.Channel) -> Stubs:
        return cls(
            rt_grpc.AgentRuntimeServiceStub(channel),
            ses_grpc.SessionServiceStub(channel),
            agent_pb2_grpc.AgentServiceStub(channel),
            event_pb2_grpc.EventServiceStub(channel),
            us_grpc.UsageServiceStub(channel),
        )


@dataclass(frozen=True, slots=True)
class UnaryCall(Generic[_Result]):
    method: Callable[[Stubs], Any]  # picks the stub's multi-callable
    request: Message
    result: Callable[[Any], _Result]  # from the response, what the caller gets
    # False where a repeat after a lost answer would report a failure for something that worked.
    repeatable: bool = True


@dataclass(frozen=True, slots=True)
class Pages(Generic[_Item]):
    """A listing read a page at a time: the call for the page after a token, and its items."""

    page: Callable[[str], UnaryCall[Any]]  # "": the first page
    items: Callable[[Any], Iterable[_Item]]


def _itself(response: Any) -> Any:
    return response


def _nothing(response: Any) -> None:
    return None


def cancel_turn(session_id: str, turn_id: str) -> UnaryCall[None]:
    """Not repeated: a repeat after a lost answer would fail with TURN_NOT_RUNNING."""
    request = rt.CancelTurnRequest(session_id=session_id, turn_id=turn_id)
    return UnaryCall(lambda s: s.runtime.CancelTurn, request, _nothing, repeatable=False)


def create_session(
    session_id: str,
    title: str,
    agent: str,
    *,
    instructions: str = "",
    tools: Iterable[mc.ToolDefinition] = (),
    generation: mc.GenerationConfig | None = None,
) -> UnaryCall[ses.Session]:
    """Not repeated: a repeat after a lost answer would fail with ALREADY_EXISTS (or create a
    second session when the server picks the id)."""
    request = ses.CreateSessionRequest(
        session_id=session_id,
        title=title,
        agent=agent,
        instructions=instructions,
        tools=list(tools),
        generation=generation,
    )
    return UnaryCall(
        lambda s: s.sessions.CreateSession, request, lambda r: r.session, repeatable=False
    )


def update_session(
    session_id: str,
    *,
    title: str | None = None,
    instructions: str | None = None,
    agent: str | None = None,
    tools: Iterable[mc.ToolDefinition] | None = None,
    generation: mc.GenerationConfig | None = None,
    approval_grants: Iterable[str] | None = None,
) -> UnaryCall[ses.Session]:
    """Sets the fields given (not None; an empty value clears), and only those: the update
    mask names them. `approval_grants`: the ids of the grants to keep; the session's other
    grants are revoked. Repeatable: setting the same values twice leaves the same session."""
    session = ses.Session(session_id=session_id)
    paths = []
    for name, value in (("title", title), ("instructions", instructions), ("agent", agent)):
        if value is not None:
            setattr(session, name, value)
            paths.append(name)
    if tools is not None:
        session.tools.extend(tools)
        paths.append("tools")
    if generation is not None:
        session.generation.CopyFrom(generation)
        paths.append("generation")
    if approval_grants is not None:
        session.approval_grants.extend(ses.ApprovalGrant(grant_id=g) for g in approval_grants)
        paths.append("approval_grants")
    request = ses.UpdateSessionRequest(session=session)
    request.update_mask.paths.extend(paths)
    return UnaryCall(lambda s: s.sessions.UpdateSession, request, lambda r: r.session)


def get_session(session_id: str) -> UnaryCall[ses.Session]:
    request = ses.GetSessionRequest(session_id=session_id)
    return UnaryCall(lambda s: s.sessions.GetSession, request, lambda r: r.session)


def delete_session(session_id: str) -> UnaryCall[None]:
    """Not repeated: a repeat after a lost answer would fail with NOT_FOUND."""
    request = ses.DeleteSessionRequest(session_id=session_id)
    return UnaryCall(lambda s: s.sessions.DeleteSession, request, _nothing, repeatable=False)


def list_sessions_page(page_size: int, page_token: str) -> UnaryCall[ses.ListSessionsResponse]:
    request = ses.ListSessionsRequest(page_size=page_size, page_token=page_token)
    return UnaryCall(lambda s: s.sessions.ListSessions, request, _itself)


def every_session(page_size: int) -> Pages[ses.Session]:
    """Most recently active first."""
    return Pages(lambda token: list_sessions_page(page_size, token), lambda r: r.sessions)


def list_messages_page(
    session_id: str, page_size: int, page_token: str, include_superseded: bool = False
) -> UnaryCall[ses.ListMessagesResponse]:
    request = ses.ListMessagesRequest(
        session_id=session_id,
        page_size=page_size,
        page_token=page_token,
        include_superseded=include_superseded,
    )
    return UnaryCall(lambda s: s.sessions.ListMessages, request, _itself)


def every_message(
    session_id: str, page_size: int, include_superseded: bool = False
) -> Pages[ses.Message]:
    """In conversation order (with include_superseded, the superseded ones in their places)."""
    return Pages(
        lambda token: list_messages_page(session_id, page_size, token, include_superseded),
        lambda r: r.messages,
    )


def get_turn(session_id: str, turn_id: str) -> UnaryCall[ses.Turn]:
    request = ses.GetTurnRequest(session_id=session_id, turn_id=turn_id)
    return UnaryCall(lambda s: s.sessions.GetTurn, request, lambda r: r.turn)


def every_turn(session_id: str, page_size: int) -> Pages[ses.Turn]:
    """Oldest first."""

    def page(token: str) -> UnaryCall[ses.ListTurnsResponse]:
        request = ses.ListTurnsRequest(session_id=session_id, page_size=page_size, page_token=token)
        return UnaryCall(lambda s: s.sessions.ListTurns, request, _itself)

    return Pages(page, lambda r: r.turns)


def revoke_approval_grant(session_id: str, grant_id: str) -> UnaryCall[None]:
    """Not repeated: a repeat after a lost answer would fail with APPROVAL_GRANT_NOT_FOUND."""
    request = ses.RevokeApprovalGrantRequest(session_id=session_id, grant_id=grant_id)
    return UnaryCall(lambda s: s.sessions.RevokeApprovalGrant, request, _nothing, repeatable=False)


def every_agent_switch(session_id: str, page_size: int) -> Pages[ses.AgentSwitch]:
    """Oldest first (GetSession has only the most recent ones)."""

    def page(token: str) -> UnaryCall[ses.ListAgentSwitchesResponse]:
        request = ses.ListAgentSwitchesRequest(
            session_id=session_id, page_size=page_size, page_token=token
        )
        return UnaryCall(lambda s: s.sessions.ListAgentSwitches, request, _itself)

    return Pages(page, lambda r: r.agent_switches)


def get_usage(
    start: datetime | None,
    end: datetime | None,
    group_by: us.UsageGroupBy.ValueType,
    page_token: str = "",
) -> UnaryCall[us.GetUsageResponse]:
    """One page of groups: see with_next_groups."""
    request = us.GetUsageRequest(group_by=group_by, page_token=page_token)
    if start is not None:
        request.start_time.FromDatetime(start)
    if end is not None:
        request.end_time.FromDatetime(end)
    return UnaryCall(lambda s: s.usage.GetUsage, request, _itself)


def with_next_groups(report: us.GetUsageResponse, page: us.GetUsageResponse) -> None:
    """Add the groups of the report's next page to it (and the token of the page after)."""
    report.groups.extend(page.groups)
    report.next_page_token = page.next_page_token


def every_pending_approval(session_id: str, page_size: int) -> Pages[ses.PendingApproval]:
    """Tool calls waiting for a decision (stream_message with approve, edit or reject)."""

    def page(token: str) -> UnaryCall[ses.ListPendingApprovalsResponse]:
        request = ses.ListPendingApprovalsRequest(
            session_id=session_id, page_size=page_size, page_token=token
        )
        return UnaryCall(lambda s: s.sessions.ListPendingApprovals, request, _itself)

    return Pages(page, lambda r: r.approvals)


def list_agents() -> UnaryCall[list[agent_pb2.Agent]]:
    request = agent_pb2.ListAgentsRequest()
    return UnaryCall(lambda s: s.agents.ListAgents, request, lambda r: list(r.agents))
