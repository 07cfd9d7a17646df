"""The bound on what a client can put in one session, as GetSession shows it.

GetSession (and CreateSession, UpdateSession, and ListSessions for each session) answers with
the whole session in one gRPC message, and a client's default limit for one is 4 MiB. What
a client sets adds up: a title, instructions, declared tools (as protobuf, every number of a
schema is a double and every description's character may be 4 bytes: up to 4 times the
JSON their own limit counts), generation settings, and APPROVE_ALWAYS grants, which have no
limit on their number. Together they are at most MAX_SESSION_BYTES, measured as the API
encodes them (`measure`, from the api layer): CreateSession, UpdateSession and the
APPROVE_ALWAYS decision that would make a session larger are refused, and nothing of them
is stored. The rest of a session is the server's and bounded on its own: its most recent
agent switches (RECENT_AGENT_SWITCHES, each reason at most 1024 characters), ids, counts and
times.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from agent_runtime.domain.approval import ApprovalGrant
from agent_runtime.domain.errors import FieldViolation, InvalidInput, PreconditionFailed
from agent_runtime.domain.model import Session

# With the most recent agent switches (at most about 70 KiB), a session stays well inside
# the 3 MiB a page of ListSessions holds, and so inside one message of 4 MiB.
MAX_SESSION_BYTES = 2 * 1024 * 1024

# What a session with these grants in force takes in a GetSession answer, without its agent
# switches (bytes).
SessionBytes = Callable[[Session, Sequence[ApprovalGrant]], int]

_WHAT = "its title, instructions, declared tools, generation settings and approval grants"


class SessionBound:
    def __init__(self, measure: SessionBytes, max_bytes: int = MAX_SESSION_BYTES) -> None:
        self._measure = measure
        self._max = max_bytes

    def check_new(self, session: Session) -> None:
        """CreateSession: refuse a session larger than the bound (INVALID_ARGUMENT, a field
        violation on each field the request sets)."""
        size = self._measure(session, ())
        if size > self._max:
            set_fields = {
                "title": session.title,
                "instructions": session.instructions,
                "tools": session.tools,
                "generation": not session.generation.is_empty,
            }
            self._refuse_settings(size, [name for name, value in set_fields.items() if value])

    def check_update(
        self,
        before: Session,
        after: Session,
        grants: Sequence[ApprovalGrant],
        paths: frozenset[str],
    ) -> None:
        """UpdateSession: refuse settings that make the session (with the grants it keeps)
        larger than the bound, and larger than it was (INVALID_ARGUMENT, a field violation
        on each path of the update mask that sets something)."""
        size = self._measure(after, grants)
        if size > self._max and size > self._measure(before, grants):
            setting = sorted(f"session.{path}" for path in paths if path != "approval_grants")
            self._refuse_settings(size, setting or ["session"])

    def check_grant(self, session: Session, grants: Sequence[ApprovalGrant]) -> None:
        """APPROVE_ALWAYS: refuse the grant (the last of `grants`, those in force with it)
        that makes the session larger than the bound (FAILED_PRECONDITION: the session must
        change first, or the call be approved once)."""
        size = self._measure(session, grants)
        if size > self._max:
            raise PreconditionFailed(
                f"an APPROVE_ALWAYS grant would make session {session.session_id} "
                f"{size} bytes ({_WHAT}); at most {self._max}: revoke grants "
                "(RevokeApprovalGrant), make its instructions or tools smaller, or approve "
                "this call once (DECISION_APPROVE)",
                reason="SESSION_TOO_LARGE",
                metadata={
                    "session_id": session.session_id,
                    "session_bytes": str(size),
                    "max_session_bytes": str(self._max),
                },
            )

    def _refuse_settings(self, size: int, fields: list[str]) -> None:
        description = (
            f"the session would be {size} bytes ({_WHAT}, as GetSession sends them); "
            f"at most {self._max}"
        )
        raise InvalidInput(
            description,
            violations=[FieldViolation(field, description) for field in fields],
            reason="SESSION_TOO_LARGE",
        )
