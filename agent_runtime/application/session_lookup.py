"""What a request that names a session gets when the session is missing or deleted: the same
answer from every RPC.

A deleted session is kept (soft delete: its history stays for audit), and its id stays its
own: no RPC serves the session again, and the id is never given to a new session, so an id
in a log, an event or a client's memory always means one conversation. Reading or writing
a deleted session is NOT_FOUND (SESSION_DELETED); creating a session with its id is
ALREADY_EXISTS (SESSION_ID_RETIRED). Either way the reason says why.
"""

from __future__ import annotations

from agent_runtime.application.store_ports import ReadUnitOfWork
from agent_runtime.domain.errors import AlreadyExists, NotFound
from agent_runtime.domain.model import Session


def session_not_found(session_id: str) -> NotFound:
    return NotFound(
        f"session {session_id} not found",
        reason="SESSION_NOT_FOUND",
        metadata={"session_id": session_id},
    )


def session_deleted(session: Session) -> NotFound:
    return NotFound(
        f"session {session.session_id} was deleted",
        reason="SESSION_DELETED",
        metadata=_deleted_metadata(session),
    )


def session_id_retired(session: Session) -> AlreadyExists:
    return AlreadyExists(
        f"session id {session.session_id} belongs to a deleted session and is not used "
        "again: choose another id",
        reason="SESSION_ID_RETIRED",
        metadata=_deleted_metadata(session),
    )


def check_live(session: Session | None, session_id: str) -> Session:
    """The session, if it exists and was not deleted; else the error that says which."""
    if session is None:
        raise session_not_found(session_id)
    if session.deleted_at is not None:
        raise session_deleted(session)
    return session


async def live_session(uow: ReadUnitOfWork, session_id: str) -> Session:
    return check_live(await uow.sessions.get(session_id), session_id)


def _deleted_metadata(session: Session) -> dict[str, str]:
    deleted_at = session.deleted_at.isoformat() if session.deleted_at else ""
    return {"session_id": session.session_id, "deleted_at": deleted_at}
