"""SessionService: translates session RPCs to the SessionHandler and back."""

from __future__ import annotations

import grpc

from agent_runtime.api.errors import unary_errors
from agent_runtime.api.mapping import message_to_proto, session_to_proto
from agent_runtime.application.commands import CreateSession, ListMessages
from agent_runtime.application.session_handler import SessionHandler
from agent_runtime.v1 import session_pb2 as ses
from agent_runtime.v1 import session_pb2_grpc as ses_grpc


class SessionServicer(ses_grpc.SessionServiceServicer):
    def __init__(self, sessions: SessionHandler) -> None:
        self._sessions = sessions

    @unary_errors
    async def CreateSession(
        self,
        request: ses.CreateSessionRequest,
        context: grpc.aio.ServicerContext[ses.CreateSessionRequest, ses.CreateSessionResponse],
    ) -> ses.CreateSessionResponse:
        session = await self._sessions.create(
            CreateSession(request.session_id, request.title, request.agent)
        )
        return ses.CreateSessionResponse(session=session_to_proto(session))

    @unary_errors
    async def GetSession(
        self,
        request: ses.GetSessionRequest,
        context: grpc.aio.ServicerContext[ses.GetSessionRequest, ses.GetSessionResponse],
    ) -> ses.GetSessionResponse:
        session = await self._sessions.get(request.session_id)
        return ses.GetSessionResponse(session=session_to_proto(session))

    @unary_errors
    async def ListMessages(
        self,
        request: ses.ListMessagesRequest,
        context: grpc.aio.ServicerContext[ses.ListMessagesRequest, ses.ListMessagesResponse],
    ) -> ses.ListMessagesResponse:
        page = await self._sessions.list_messages(
            ListMessages(request.session_id, request.page_size, request.page_token)
        )
        return ses.ListMessagesResponse(
            messages=[message_to_proto(m) for m in page.messages],
            next_page_token=page.next_page_token,
        )
