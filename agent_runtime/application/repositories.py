"""The repositories the use cases read and write through: one per aggregate, each scoped to
one tenant by the unit of work that holds it. Protocols that infrastructure implements."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from agent_runtime.domain.approval import Approval, ApprovalGrant
from agent_runtime.domain.chunks import Chunk
from agent_runtime.domain.events import Event, EventType, StoredEvent
from agent_runtime.domain.model import AgentSwitch, Message, Session, ToolCallRecord, Turn, Usage
from agent_runtime.domain.usage import UsageGroupBy, UsageReport


class SessionRepository(Protocol):
    async def get(self, session_id: str) -> Session | None:
        """The session, deleted or not (callers decide what a deleted one means)."""
        ...

    async def add(self, session: Session) -> None: ...

    async def claim_turn(self, session_id: str, turn_id: str) -> str | None:
        """Make `turn_id` the session's running turn if none runs.

        Returns None on success, else the id of the turn already running.
        """
        ...

    async def record_activity(
        self, session_id: str, at: datetime, *, message_count: int | None = None
    ) -> None:
        """Store the session's last activity (and message_count)."""
        ...

    async def release_turn(
        self,
        session_id: str,
        turn_id: str,
        at: datetime,
        *,
        message_count: int | None = None,
        count_usage: Usage | None = None,
    ) -> None:
        """As record_activity, and free the session if `turn_id` still holds it (one
        statement: a turn never frees a session another turn claimed meanwhile); add
        `count_usage` (the turn that ended) to the session's usage totals."""
        ...

    async def switch_agent(self, session_id: str, switch: AgentSwitch) -> None:
        """Set the session's agent and append the switch to its agent history."""
        ...

    async def update_settings(self, session: Session) -> None:
        """Store what the client sets: the session's title, instructions, tools and
        generation settings."""
        ...

    async def recent_agent_switches(
        self, session_id: str, limit: int
    ) -> tuple[list[AgentSwitch], int]:
        """The session's `limit` most recent agent switches, oldest first, and how many
        switches it has had."""
        ...

    async def recent_agent_switches_of(
        self, session_ids: Sequence[str], limit: int
    ) -> dict[str, tuple[list[AgentSwitch], int]]:
        """recent_agent_switches() of each session in one read (a page of ListSessions):
        every id is a key."""
        ...

    async def agent_switches(self, session_id: str, after_id: int, limit: int) -> list[AgentSwitch]:
        """The session's agent switches, oldest first, from the first with a switch_id larger
        than `after_id` (0: from the first)."""
        ...

    async def mark_deleted(self, session_id: str, at: datetime) -> None: ...

    async def page_by_activity(
        self, after: tuple[datetime, str] | None, limit: int
    ) -> list[Session]:
        """Live sessions, most recent activity first, strictly after the (time, id) cursor."""
        ...


class TurnRepository(Protocol):
    async def add(self, turn: Turn, log: list[Chunk] | None = None) -> None:
        """Insert the turn (with its replay log so far)."""
        ...

    async def get(self, turn_id: str) -> Turn | None: ...

    async def save(self, turn: Turn, log: list[Chunk] | None = None) -> None:
        """Store the turn's state (and its replay log, when given)."""
        ...

    async def end(self, turn: Turn, log: list[Chunk]) -> bool:
        """Store the state of a turn that has ended, with its replay log, only if the turn
        still runs in the database: else (a commit that ended it landed though it reported a
        failure, or recovery interrupted it) write nothing and return False."""
        ...

    async def find_by_client_message_id(
        self, session_id: str, client_message_id: str
    ) -> Turn | None: ...

    async def page(
        self, session_id: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[Turn]:
        """The session's turns, oldest first (by start, then id), strictly after the
        (started_at, turn_id) cursor."""
        ...

    async def chunks(self, turn: Turn) -> list[Chunk]: ...

    async def request_cancel(self, turn_id: str) -> None:
        """Ask the process running the turn to cancel it (seen at its next lease renewal)."""
        ...

    async def abandoned_candidates(self, now: datetime, owner: str) -> list[Turn]:
        """Running turns whose lease expired, or that `owner` runs (or ran before a restart)."""
        ...

    async def interrupt(self, turns: list[Turn], now: datetime) -> list[Turn]:
        """Mark these running turns INTERRUPTED and free their sessions.

        Returns those this call interrupted: another process may have been first.
        """
        ...


class MessageRepository(Protocol):
    async def add(self, message: Message) -> None: ...

    async def recent(self, session_id: str, limit: int) -> list[Message]:
        """The last `limit` messages of the session the model sees (none superseded),
        oldest first."""
        ...

    async def page(
        self,
        session_id: str,
        after_position: int,
        limit: int,
        *,
        include_superseded: bool = False,
    ) -> list[Message]:
        """Up to `limit` messages with position > after_position, oldest first."""
        ...

    async def get(self, session_id: str, message_id: str) -> Message | None: ...

    async def last_user_message(self, session_id: str) -> Message | None:
        """The newest user message not superseded."""
        ...

    async def supersede_from(self, session_id: str, position: int, turn_id: str) -> int:
        """Mark the messages at `position` and after, not yet superseded, as superseded by
        `turn_id`; returns how many."""
        ...

    async def find_tool_call(self, session_id: str, call_id: str) -> Message | None:
        """The assistant message that requested tool call `call_id`."""
        ...

    async def find_tool_result(self, session_id: str, call_id: str) -> Message | None:
        """The tool message answering `call_id`, if any."""
        ...

    async def replace_tool_call(self, message_id: str, call: ToolCallRecord) -> None:
        """Record the arguments that will actually run (an approved edit)."""
        ...


class ApprovalRepository(Protocol):
    async def add(self, approval: Approval) -> None: ...

    async def get(self, session_id: str, call_id: str) -> Approval | None: ...

    async def save(self, approval: Approval) -> None: ...

    async def open_for_session(self, session_id: str) -> list[Approval]:
        """Every approval still PENDING (expired or not)."""
        ...

    async def pending_page(
        self, session_id: str, now: datetime, after: tuple[datetime, str] | None, limit: int
    ) -> list[Approval]:
        """Unexpired pending approvals, oldest first, strictly after the (created, call) cursor."""
        ...

    async def count_pending(self, session_id: str, now: datetime) -> int: ...

    async def count_pending_of(self, session_ids: Sequence[str], now: datetime) -> dict[str, int]:
        """count_pending() of each session in one read (a page of ListSessions)."""
        ...

    async def add_grant(self, grant: ApprovalGrant) -> None: ...

    async def grants(self, session_id: str) -> list[ApprovalGrant]:
        """The session's grants in force (not revoked), oldest first."""
        ...

    async def grants_of(self, session_ids: Sequence[str]) -> dict[str, list[ApprovalGrant]]:
        """grants() of each session in one read (a page of ListSessions): every id is a key."""
        ...

    async def revoke_grant(self, session_id: str, grant_id: str, at: datetime) -> bool:
        """End a grant in force; False if the session has no such grant in force."""
        ...


class UsageRepository(Protocol):
    """The tenant's token usage, and what its quotas are checked against."""

    async def lock_admissions(self) -> None:
        """Until this transaction ends, no other transaction of the tenant passes this call:
        what the quota checks read next cannot change under them (across processes)."""
        ...

    async def running_turns(self) -> int: ...

    async def turns_started_since(self, since: datetime) -> tuple[int, datetime | None]:
        """How many turns started at `since` or later, and when the first of them did."""
        ...

    async def tokens_on(self, day: str) -> int:
        """Tokens of the turns that ended on UTC day `day` (YYYY-MM-DD)."""
        ...

    async def count_turn(self, day: str, usage: Usage) -> None:
        """Add a turn that ended on `day` to the tenant's daily totals."""
        ...

    async def report(
        self,
        start: datetime | None,
        end: datetime | None,
        group_by: UsageGroupBy,
        *,
        after: str | None = None,
        limit: int | None = None,
    ) -> UsageReport:
        """Totals of the turns that ended in [start, end), grouped (groups by key): the groups
        whose key comes after `after`, at most `limit` of them (the total is the range's)."""
        ...


class EventRepository(Protocol):
    async def add(self, event: Event) -> None:
        """Write to the outbox; visible to readers only once the transaction commits."""
        ...

    async def after(
        self,
        event_id: int,
        *,
        session_id: str | None,
        types: frozenset[EventType],
        limit: int,
    ) -> list[StoredEvent]:
        """Committed events with a larger id, in id order, matching the filters."""
        ...

    async def last_id(self) -> int: ...
