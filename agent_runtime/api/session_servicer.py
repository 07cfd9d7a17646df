"""SessionService: translates session RPCs to the SessionHandler and back."""

from __future__ import annotations

from typing import Any

from agent_runtime.api.auth import caller_tenant
from agent_runtime.api.errors import unary_errors
from agent_runtime.api.mapping import (
    approval_to_proto,
    message_to_proto,
    session_to_proto,
    switch_to_proto,
    turn_to_proto,
)
from agent_runtime.api.model_controls_mapping import generation_from_proto, tools_from_proto
from agent_runtime.api.page_bytes import fitted
from agent_runtime.application.commands import (
    CreateSession,
    ListAgentSwitches,
    ListedGrant,
    ListMessages,
    ListPendingApprovals,
    ListSessions,
    ListTurns,
    UpdateSession,
)
from agent_runtime.application.session_handler import SessionHandler
from agent_runtime.application.session_queries import SessionQueries
from agent_runtime.application.turn_queries import TurnQueries
from agent_runtime.v1 import session_pb2 as ses
from agent_runtime.v1 import session_pb2_grpc as ses_grpc


class SessionServicer(ses_grpc.SessionServiceServicer):
    """`max_page_bytes`: a page of any list ends before its items add up to more."""

    def __init__(
        self,
        sessions: SessionHandler,
        queries: SessionQueries,
        turns: TurnQueries,
        *,
        max_page_bytes: int,
    ) -> None:
        self._sessions = sessions
        self._queries = queries
        self._turns = turns
        self._max_page_bytes = max_page_bytes

    @unary_errors
    async def CreateSession(
        self, request: ses.CreateSessionRequest, context: Any
    ) -> ses.CreateSessionResponse:
        details = await self._sessions.create(
            CreateSession(
                request.session_id,
                request.title,
                request.agent,
                instructions=request.instructions,
                tools=tools_from_proto(request.tools, "tools"),
                generation=generation_from_proto(request.generation),
                tenant_id=caller_tenant(),
            )
        )
        return ses.CreateSessionResponse(session=session_to_proto(details))

    @unary_errors
    async def UpdateSession(
        self, request: ses.UpdateSessionRequest, context: Any
    ) -> ses.UpdateSessionResponse:
        session = request.session
        details = await self._sessions.update(
            UpdateSession(
                session.session_id,
                _update_paths(request),
                title=session.title,
                instructions=session.instructions,
                agent=session.agent,
                tools=tools_from_proto(session.tools, "session.tools"),
                generation=generation_from_proto(session.generation),
                approval_grants=tuple(
                    ListedGrant(grant.grant_id, grant.tool_name, dict(grant.when))
                    for grant in session.approval_grants
                ),
                tenant_id=caller_tenant(),
            )
        )
        return ses.UpdateSessionResponse(session=session_to_proto(details))

    @unary_errors
    async def GetSession(
        self, request: ses.GetSessionRequest, context: Any
    ) -> ses.GetSessionResponse:
        details = await self._queries.get(request.session_id, tenant_id=caller_tenant())
        return ses.GetSessionResponse(session=session_to_proto(details))

    @unary_errors
    async def ListSessions(
        self, request: ses.ListSessionsRequest, context: Any
    ) -> ses.ListSessionsResponse:
        page = await self._queries.list(
            ListSessions(request.page_size, request.page_token, tenant_id=caller_tenant())
        )
        sessions, token = fitted(
            page, lambda d: session_to_proto(d, with_tools=False), self._max_page_bytes
        )
        return ses.ListSessionsResponse(sessions=sessions, next_page_token=token)

    @unary_errors
    async def DeleteSession(
        self, request: ses.DeleteSessionRequest, context: Any
    ) -> ses.DeleteSessionResponse:
        await self._sessions.delete(request.session_id, tenant_id=caller_tenant())
        return ses.DeleteSessionResponse()

    @unary_errors
    async def ListMessages(
        self, request: ses.ListMessagesRequest, context: Any
    ) -> ses.ListMessagesResponse:
        page = await self._queries.list_messages(
            ListMessages(
                request.session_id,
                request.page_size,
                request.page_token,
                include_superseded=request.include_superseded,
                tenant_id=caller_tenant(),
            )
        )
        messages, token = fitted(page, message_to_proto, self._max_page_bytes)
        return ses.ListMessagesResponse(messages=messages, next_page_token=token)

    @unary_errors
    async def ListPendingApprovals(
        self, request: ses.ListPendingApprovalsRequest, context: Any
    ) -> ses.ListPendingApprovalsResponse:
        page = await self._queries.list_pending_approvals(
            ListPendingApprovals(
                request.session_id,
                request.page_size,
                request.page_token,
                tenant_id=caller_tenant(),
            )
        )
        approvals, token = fitted(page, approval_to_proto, self._max_page_bytes)
        return ses.ListPendingApprovalsResponse(approvals=approvals, next_page_token=token)

    @unary_errors
    async def GetTurn(self, request: ses.GetTurnRequest, context: Any) -> ses.GetTurnResponse:
        turn = await self._turns.get(request.session_id, request.turn_id, tenant_id=caller_tenant())
        return ses.GetTurnResponse(turn=turn_to_proto(turn))

    @unary_errors
    async def ListTurns(self, request: ses.ListTurnsRequest, context: Any) -> ses.ListTurnsResponse:
        page = await self._turns.list(
            ListTurns(
                request.session_id,
                request.page_size,
                request.page_token,
                tenant_id=caller_tenant(),
            )
        )
        turns, token = fitted(page, turn_to_proto, self._max_page_bytes)
        return ses.ListTurnsResponse(turns=turns, next_page_token=token)

    @unary_errors
    async def ListAgentSwitches(
        self, request: ses.ListAgentSwitchesRequest, context: Any
    ) -> ses.ListAgentSwitchesResponse:
        page = await self._queries.list_agent_switches(
            ListAgentSwitches(
                request.session_id,
                request.page_size,
                request.page_token,
                tenant_id=caller_tenant(),
            )
        )
        switches, token = fitted(page, switch_to_proto, self._max_page_bytes)
        return ses.ListAgentSwitchesResponse(agent_switches=switches, next_page_token=token)

    @unary_errors
    async def RevokeApprovalGrant(
        self, request: ses.RevokeApprovalGrantRequest, context: Any
    ) -> ses.RevokeApprovalGrantResponse:
        await self._sessions.revoke_grant(
            request.session_id, request.grant_id, tenant_id=caller_tenant()
        )
        return ses.RevokeApprovalGrantResponse()


def _update_paths(request: ses.UpdateSessionRequest) -> tuple[str, ...]:
    """The update mask's paths; without a mask, every updatable field that is populated
    (AIP-134)."""
    if request.HasField("update_mask"):
        return tuple(request.update_mask.paths)
    session = request.session
    populated = {
        "title": bool(session.title),
        "instructions": bool(session.instructions),
        "agent": bool(session.agent),
        "tools": bool(session.tools),
        "generation": session.HasField("generation"),
        "approval_grants": bool(session.approval_grants),
    }
    return tuple(path for path, is_set in populated.items() if is_set)
