"""Session use cases: create, read, and page through the history."""

from __future__ import annotations

from dataclasses import dataclass

from agent_runtime.application import pagination
from agent_runtime.application.commands import CreateSession, ListMessages
from agent_runtime.application.ids import Clock, IdFactory, new_id, utc_now
from agent_runtime.application.ports import UnitOfWorkFactory
from agent_runtime.domain.agents import AgentCatalogue
from agent_runtime.domain.errors import AlreadyExists, NotFound
from agent_runtime.domain.model import Message, Session, validate_session_id


@dataclass(frozen=True, slots=True)
class MessagePage:
    messages: list[Message]
    next_page_token: str


class SessionHandler:
    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        agents: AgentCatalogue,
        *,
        clock: Clock = utc_now,
        ids: IdFactory = new_id,
    ) -> None:
        self._uow_factory = uow_factory
        self._agents = agents
        self._now = clock
        self._ids = ids

    async def create(self, cmd: CreateSession) -> Session:
        if cmd.session_id:
            validate_session_id(cmd.session_id)
        agent = self._agents.get(cmd.agent)
        now = self._now()
        session = Session(
            cmd.session_id or self._ids("ses"),
            agent.name,
            created_at=now,
            last_activity_at=now,
            title=cmd.title,
        )
        async with self._uow_factory() as uow:
            if await uow.sessions.get(session.session_id) is not None:
                raise AlreadyExists(
                    f"session {session.session_id} already exists",
                    reason="SESSION_EXISTS",
                    metadata={"session_id": session.session_id},
                )
            await uow.sessions.add(session)
            await uow.commit()
        return session

    async def get(self, session_id: str) -> Session:
        validate_session_id(session_id)
        async with self._uow_factory() as uow:
            session = await uow.sessions.get(session_id)
        if session is None:
            raise _session_not_found(session_id)
        return session

    async def list_messages(self, query: ListMessages) -> MessagePage:
        validate_session_id(query.session_id)
        limit = pagination.page_size(query.page_size)
        after = pagination.decode_position_token(query.page_token)
        async with self._uow_factory() as uow:
            if await uow.sessions.get(query.session_id) is None:
                raise _session_not_found(query.session_id)
            # One extra row tells whether another page exists without a count query.
            rows = await uow.messages.page(query.session_id, after, limit + 1)
        messages = rows[:limit]
        token = pagination.encode_position_token(messages[-1].position) if len(rows) > limit else ""
        return MessagePage(messages, token)


def _session_not_found(session_id: str) -> NotFound:
    return NotFound(
        f"session {session_id} not found",
        reason="SESSION_NOT_FOUND",
        metadata={"session_id": session_id},
    )
