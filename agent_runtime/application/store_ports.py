"""What the use cases need of storage: units of work (one database session each, holding
the repositories of repositories.py) and the factory that makes them. Protocols that
infrastructure implements."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol

from agent_runtime.application.repositories import (
    ApprovalRepository,
    EventRepository,
    MessageRepository,
    SessionRepository,
    TurnRepository,
    UsageRepository,
)


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
