"""What the use cases need from the outside world, as Protocols infrastructure implements."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from agent_runtime.domain.approval import ApprovalGrant
from agent_runtime.domain.chunks import Chunk
from agent_runtime.domain.events import Event, EventType, StoredEvent
from agent_runtime.domain.generation import GenerationConfig
from agent_runtime.domain.model import (
    AgentSwitch,
    Approval,
    Message,
    Session,
    ToolCallRecord,
    Turn,
    Usage,
)
from agent_runtime.domain.model_output import ModelEvent
from agent_runtime.domain.tools import ToolDefinition
from agent_runtime.domain.usage import UsageGroupBy, UsageReport


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: str
    system_prompt: str
    history: Sequence[Message]
    tools: Sequence[ToolDefinition]
    # Only the fields set here reach the model. A tool_choice only goes with tools, and a
    # named one only when that tool is among them (ModelStep makes sure).
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    # The runtime's own estimate of the prompt's tokens (uncalibrated; 0: not estimated),
    # compared with what the model reports to calibrate the next estimates.
    prompt_estimate: int = 0


class LLMClient(Protocol):
    """A chat model. Yields TextDelta events as tokens arrive (ReasoningText while it
    reasons, ToolCallFragment while it writes a tool call's arguments) and one ModelResponse
    last.

    Failures raise a domain ModelError subclass; nothing else escapes.
    """

    def stream_chat(self, request: ChatRequest) -> AsyncGenerator[ModelEvent, None]: ...


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

    async def agent_history(self, session_id: str) -> list[AgentSwitch]: ...

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

    async def add_grant(self, grant: ApprovalGrant) -> None: ...

    async def grants(self, session_id: str) -> list[ApprovalGrant]:
        """The session's grants in force (not revoked), oldest first."""
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
        self, start: datetime | None, end: datetime | None, group_by: UsageGroupBy
    ) -> UsageReport:
        """Totals of the turns that ended in [start, end), grouped (groups by key)."""
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


class ReadUnitOfWork(Protocol):
    """One read-only look at the database for one tenant: every statement of it sees one
    snapshot of committed rows, and it cannot commit (nothing it runs is kept). `async with`
    closes it on every exit path.

    For use cases that only read: on SQLite it does not wait for, nor hold up, the
    transactions that write.
    """

    sessions: SessionRepository
    turns: TurnRepository
    messages: MessageRepository
    approvals: ApprovalRepository
    events: EventRepository
    usage: UsageRepository

    async def __aenter__(self) -> ReadUnitOfWork: ...

    async def __aexit__(self, *exc_info: object) -> None: ...


class UnitOfWork(Protocol):
    """One database session and its transactions, for one tenant; `async with` closes it on
    every exit path.

    Leaving the block without commit() rolls back whatever is uncommitted.
    """

    sessions: SessionRepository
    turns: TurnRepository
    messages: MessageRepository
    approvals: ApprovalRepository
    events: EventRepository
    usage: UsageRepository

    async def __aenter__(self) -> UnitOfWork: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    async def commit(self, on_committed: Callable[[], None] | None = None) -> None:
        """Commit. A COMMIT that has started runs to its end even if the caller is cancelled
        meanwhile (the CancelledError comes after it), so whether it landed is always known:
        `on_committed` is called once it has landed, caller or not, and never otherwise."""
        ...

    async def rollback(self) -> None: ...


class UnitOfWorkFactory(Protocol):
    def __call__(self, tenant_id: str) -> UnitOfWork:
        """A unit of work that sees and writes only `tenant_id`'s rows: every repository of it
        is scoped to that tenant, so no use case can reach another tenant's data."""
        ...

    def reader(self, tenant_id: str) -> ReadUnitOfWork:
        """A read-only unit of work that sees only `tenant_id`'s rows, scoped exactly as
        the writing one is. Use it wherever a unit of work would never commit."""
        ...

    async def abandoned_turn_candidates(self, now: datetime, owner: str) -> list[tuple[str, str]]:
        """A read across tenants, for recovery: (tenant_id, turn_id) of the running turns
        whose lease expired at `now` or that `owner` runs (or ran before a restart), as
        TurnRepository.abandoned_candidates finds them within one tenant."""
        ...

    async def renew_leases(
        self, running: Sequence[tuple[str, str]], owner: str, until: datetime
    ) -> list[tuple[str, str]]:
        """The one write across tenants, for lease upkeep: extends to `until` the leases of
        these (tenant_id, turn_id) turns that still run and that `owner` runs, in one
        transaction (one statement per few hundred turns), whatever their tenants; returns
        those of them asked to cancel, as (tenant_id, turn_id). Only the process running
        the turns calls it, with the turns it runs: no client reaches it."""
        ...

    async def count_pending_approvals(self, now: datetime) -> int:
        """Another read across tenants, for monitoring only: unexpired pending approvals
        in the whole database."""
        ...


@dataclass(frozen=True, slots=True)
class CommitScope:
    """What a commit with events touched, or what a waiter waits for.

    None at a level means every one of it: CommitScope(tenant) is every session of the
    tenant, CommitScope() everything. Two scopes overlap when they agree down to the first
    level either leaves open: a commit of turn X wakes the followers of X, the watchers of
    its session and of its tenant, and nobody of another turn, session or tenant.
    """

    tenant_id: str | None = None
    session_id: str | None = None  # only with a tenant
    turn_id: str | None = None  # only with a session

    def overlaps(self, other: CommitScope) -> bool:
        for mine, theirs in (
            (self.tenant_id, other.tenant_id),
            (self.session_id, other.session_id),
            (self.turn_id, other.turn_id),
        ):
            if mine is None or theirs is None:
                return True
            if mine != theirs:
                return False
        return True


EVERYTHING = CommitScope()


class EventSignal(Protocol):
    """Wakes event watchers and turn followers when events in their scope may have been
    committed.

    Read generation() before querying, then wait(generation, ..., scope): a notification
    for the scope that arrives between the query and the wait is not missed.
    """

    def generation(self) -> int: ...

    async def wait(self, after_generation: int, max_wait: float, scope: CommitScope) -> None:
        """Return once a notification overlapping `scope` came after `after_generation`
        (or possibly did: the signal may wake a waiter for nothing, never miss one), or
        after `max_wait`."""
        ...
