"""Session changes: create, update, delete, and revoke an approval grant (the reads are in
session_queries.py)."""

from __future__ import annotations

from agent_runtime.application.commands import CreateSession, UpdateSession
from agent_runtime.application.declared_tools import DeclaredToolChecks
from agent_runtime.application.ids import Clock, IdFactory, new_id, utc_now
from agent_runtime.application.session_bound import SessionBound
from agent_runtime.application.session_lookup import live_session, session_id_retired
from agent_runtime.application.session_queries import SessionDetails, session_details
from agent_runtime.application.session_settings import (
    SessionSettings,
    grants_to_revoke,
    update_paths,
)
from agent_runtime.application.store_ports import UnitOfWorkFactory
from agent_runtime.domain.agents import AgentCatalogue
from agent_runtime.domain.approval import ApprovalGrant
from agent_runtime.domain.errors import AlreadyExists, NotFound, SessionBusy, WriteConflict
from agent_runtime.domain.events import Event, EventType
from agent_runtime.domain.model import (
    AgentSwitch,
    Session,
    validate_id,
    validate_session_id,
    validate_short_text,
)
from agent_runtime.domain.text import storable
from agent_runtime.domain.tool_filter import ToolFilterService

# What UpdateSession records as the reason when it moves a session to another agent.
UPDATE_SWITCH_REASON = "changed by UpdateSession"
DEFAULT_MAX_INSTRUCTIONS_BYTES = 256 * 1024

# A title is a line of text naming the session, not a message.
MAX_TITLE_CHARS = 1024


class SessionHandler:
    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        agents: AgentCatalogue,
        *,
        bound: SessionBound,
        clock: Clock = utc_now,
        ids: IdFactory = new_id,
        tools: ToolFilterService | None = None,
        max_instructions_bytes: int = DEFAULT_MAX_INSTRUCTIONS_BYTES,
        declared_tools: DeclaredToolChecks | None = None,
    ) -> None:
        self._uow_factory = uow_factory
        self._agents = agents
        self._now = clock
        self._ids = ids
        self._settings = SessionSettings(
            agents,
            tools or ToolFilterService(),
            max_instructions_bytes=max_instructions_bytes,
            declared_tools=declared_tools,
        )
        self._bound = bound

    async def create(self, cmd: CreateSession) -> SessionDetails:
        if cmd.session_id:
            validate_session_id(cmd.session_id)
        validate_short_text("title", cmd.title, MAX_TITLE_CHARS)
        agent = self._agents.get(cmd.agent)
        now = self._now()
        session = Session(
            cmd.session_id or self._ids("ses"),
            agent.name,
            created_at=now,
            last_activity_at=now,
            title=cmd.title,
            instructions=cmd.instructions,
            tools=cmd.tools,
            generation=cmd.generation,
        )
        await self._settings.check(session)
        self._bound.check_new(session)
        session.instructions = storable(session.instructions)  # answered as GetSession reads
        exists = AlreadyExists(
            f"session {session.session_id} already exists",
            reason="SESSION_EXISTS",
            metadata={"session_id": session.session_id},
        )
        async with self._uow_factory(cmd.tenant_id) as uow:
            # Scoped to the caller's tenant: another tenant's session with this id is not
            # seen here, and does not stop this one from existing alongside it.
            existing = await uow.sessions.get(session.session_id)
            if existing is not None and existing.deleted_at is not None:
                raise session_id_retired(existing)
            if existing is not None:
                raise exists
            try:
                await uow.sessions.add(session)
            except WriteConflict as conflict:  # created concurrently, after the read above
                raise exists from conflict
            await uow.commit()
        return SessionDetails(session, [], 0)

    async def update(self, cmd: UpdateSession) -> SessionDetails:
        """Change what the mask names; refused while a turn runs (it read the settings at its
        start, and the agent may not change under it)."""
        validate_session_id(cmd.session_id)
        paths = update_paths(cmd.paths)
        if "tools" in paths:  # before the transaction: a schema's check may take a while
            await self._settings.check_tools(cmd.tools, "session.tools")
        async with self._uow_factory(cmd.tenant_id) as uow:
            session = await live_session(uow, cmd.session_id)
            changed = self._settings.updated(session, cmd, paths)
            if session.running_turn_id:
                raise SessionBusy(
                    f"session {cmd.session_id} is running turn {session.running_turn_id}",
                    metadata={"session_id": cmd.session_id, "turn_id": session.running_turn_id},
                )
            revoked: list[ApprovalGrant] = []
            kept: list[ApprovalGrant] | None = None  # None: read with the other details
            if "approval_grants" in paths:
                in_force = await uow.approvals.grants(cmd.session_id)
                revoked = grants_to_revoke(in_force, cmd.approval_grants)
                gone = {grant.grant_id for grant in revoked}
                kept = [grant for grant in in_force if grant.grant_id not in gone]
            now = self._now()
            for grant in revoked:
                await uow.approvals.revoke_grant(cmd.session_id, grant.grant_id, now)
            await uow.sessions.update_settings(changed)
            if changed.agent != session.agent:
                switch = AgentSwitch(session.agent, changed.agent, UPDATE_SWITCH_REASON, now)
                await uow.sessions.switch_agent(cmd.session_id, switch)
                await uow.events.add(
                    Event(
                        EventType.AGENT_SWITCHED,
                        cmd.session_id,
                        now,
                        None,
                        {
                            "from_agent": switch.from_agent,
                            "to_agent": switch.to_agent,
                            "reason": switch.reason,
                        },
                    )
                )
            details = await session_details(uow, changed, now, grants=kept)
            self._bound.check_update(session, changed, details.grants, paths)
            await uow.commit()
        return details

    async def delete(self, session_id: str, *, tenant_id: str) -> None:
        validate_session_id(session_id)
        async with self._uow_factory(tenant_id) as uow:
            session = await live_session(uow, session_id)
            if session.running_turn_id:
                raise SessionBusy(
                    f"session {session_id} is running turn {session.running_turn_id}",
                    metadata={"session_id": session_id, "turn_id": session.running_turn_id},
                )
            await uow.sessions.mark_deleted(session_id, self._now())
            await uow.commit()

    async def revoke_grant(self, session_id: str, grant_id: str, *, tenant_id: str) -> None:
        """End an APPROVE_ALWAYS grant: the calls it allowed are asked about again (from the
        next turn on)."""
        validate_session_id(session_id)
        validate_id("grant_id", grant_id)
        async with self._uow_factory(tenant_id) as uow:
            await live_session(uow, session_id)
            if not await uow.approvals.revoke_grant(session_id, grant_id, self._now()):
                raise NotFound(
                    f"no approval grant {grant_id} in force in session {session_id}",
                    reason="APPROVAL_GRANT_NOT_FOUND",
                    metadata={"session_id": session_id, "grant_id": grant_id},
                )
            await uow.commit()
