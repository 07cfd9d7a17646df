"""Session reads: a session as GetSession and ListSessions show it, and the pages of its
messages, pending approvals and agent switches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from agent_runtime.application import pagination
from agent_runtime.application.commands import (
    ListAgentSwitches,
    ListMessages,
    ListPendingApprovals,
    ListSessions,
)
from agent_runtime.application.ids import Clock, utc_now
from agent_runtime.application.pagination import Page
from agent_runtime.application.session_lookup import live_session
from agent_runtime.application.store_ports import ReadUnitOfWork, UnitOfWorkFactory
from agent_runtime.domain.approval import Approval, ApprovalGrant
from agent_runtime.domain.model import AgentSwitch, Message, Session, validate_session_id

_SESSIONS_TOKEN = "ses"
_APPROVALS_TOKEN = "apr"
_SWITCHES_TOKEN = "swi"
# A session as GetSession and ListSessions show it has its most recent agent switches only:
# a session may switch agents on every model call, forever, and all of them would outgrow
# one gRPC message. ListAgentSwitches pages through them all.
RECENT_AGENT_SWITCHES = 16
# A switch's key in the store (a 64-bit integer): the largest a page token may carry.
_MAX_SWITCH_ID = 2**63 - 1


@dataclass(frozen=True, slots=True)
class SessionDetails:
    session: Session
    agent_history: list[AgentSwitch]  # the RECENT_AGENT_SWITCHES most recent, oldest first
    pending_approvals: int
    grants: list[ApprovalGrant] = field(default_factory=list)  # APPROVE_ALWAYS, in force
    agent_switch_count: int = 0  # all of them


async def session_details(
    uow: ReadUnitOfWork,
    session: Session,
    now: datetime,
    *,
    grants: Sequence[ApprovalGrant] | None = None,
) -> SessionDetails:
    """What GetSession shows of `session`, read in `uow`; `grants` if the caller has them
    already."""
    switches = await uow.sessions.recent_agent_switches(session.session_id, RECENT_AGENT_SWITCHES)
    pending = await uow.approvals.count_pending(session.session_id, now)
    in_force = (
        list(grants) if grants is not None else await uow.approvals.grants(session.session_id)
    )
    return _shown(session, switches, pending, in_force)


class SessionQueries:
    def __init__(self, uow_factory: UnitOfWorkFactory, *, clock: Clock = utc_now) -> None:
        self._uow_factory = uow_factory
        self._now = clock

    async def get(self, session_id: str, *, tenant_id: str) -> SessionDetails:
        validate_session_id(session_id)
        async with self._uow_factory.reader(tenant_id) as uow:
            session = await live_session(uow, session_id)
            return await session_details(uow, session, self._now())

    async def list(self, query: ListSessions) -> Page[SessionDetails]:
        limit = pagination.page_size(query.page_size)
        after = pagination.decode_time_key_token(query.page_token, _SESSIONS_TOKEN)
        async with self._uow_factory.reader(query.tenant_id) as uow:
            rows = await uow.sessions.page_by_activity(after, limit + 1)
            page = rows[:limit]
            ids = [s.session_id for s in page]
            # One read each for the whole page, not one per session.
            switches = await uow.sessions.recent_agent_switches_of(ids, RECENT_AGENT_SWITCHES)
            grants = await uow.approvals.grants_of(ids)
            pending = await uow.approvals.count_pending_of(ids, self._now())
            details = [
                _shown(s, switches[s.session_id], pending[s.session_id], grants[s.session_id])
                for s in page
            ]
        return Page(details, len(rows) > limit, _after_session)

    async def list_messages(self, query: ListMessages) -> Page[Message]:
        validate_session_id(query.session_id)
        limit = pagination.page_size(query.page_size)
        after = pagination.decode_position_token(query.page_token)
        async with self._uow_factory.reader(query.tenant_id) as uow:
            await live_session(uow, query.session_id)
            # One extra row tells whether another page exists without a count query.
            rows = await uow.messages.page(
                query.session_id, after, limit + 1, include_superseded=query.include_superseded
            )
        return Page.of(rows, limit, _after_message)

    async def list_pending_approvals(self, query: ListPendingApprovals) -> Page[Approval]:
        validate_session_id(query.session_id)
        limit = pagination.page_size(query.page_size)
        after = pagination.decode_time_key_token(query.page_token, _APPROVALS_TOKEN)
        async with self._uow_factory.reader(query.tenant_id) as uow:
            await live_session(uow, query.session_id)
            rows = await uow.approvals.pending_page(query.session_id, self._now(), after, limit + 1)
        return Page.of(rows, limit, _after_approval)

    async def list_agent_switches(self, query: ListAgentSwitches) -> Page[AgentSwitch]:
        """Oldest first; a page token is the key of the page's last switch."""
        validate_session_id(query.session_id)
        limit = pagination.page_size(query.page_size)
        after = pagination.decode_position_token(
            query.page_token, _SWITCHES_TOKEN, maximum=_MAX_SWITCH_ID
        )
        async with self._uow_factory.reader(query.tenant_id) as uow:
            await live_session(uow, query.session_id)
            rows = await uow.sessions.agent_switches(query.session_id, after, limit + 1)
        return Page.of(rows, limit, _after_switch)


def _shown(
    session: Session,
    switches: tuple[list[AgentSwitch], int],
    pending: int,
    grants: list[ApprovalGrant],
) -> SessionDetails:
    """`switches`: the recent ones, and how many there have been."""
    recent, count = switches
    return SessionDetails(session, recent, pending, grants, agent_switch_count=count)


def _after_session(details: SessionDetails) -> str:
    session = details.session
    return pagination.encode_time_key_token(
        _SESSIONS_TOKEN, session.last_activity_at, session.session_id
    )


def _after_message(message: Message) -> str:
    return pagination.encode_position_token(message.position)


def _after_approval(approval: Approval) -> str:
    return pagination.encode_time_key_token(_APPROVALS_TOKEN, approval.created_at, approval.call_id)


def _after_switch(switch: AgentSwitch) -> str:
    return pagination.encode_position_token(switch.switch_id, _SWITCHES_TOKEN)
