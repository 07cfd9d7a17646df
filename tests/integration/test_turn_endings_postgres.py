"""A turn's endings and retries on PostgreSQL, where statements of concurrent transactions
wait for each other: a client gone while COMMIT #2's statements wait, a client gone while a
routing commit's statement waits, and an idempotent retry racing its original."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from agent_runtime.application.commands import SendUserMessage
from agent_runtime.application.turn_settings import TurnSettings
from agent_runtime.domain.agents import default_agents
from agent_runtime.domain.model import Usage
from agent_runtime.domain.model_output import ModelResponse, TextDelta
from agent_runtime.domain.tenants import DEFAULT_TENANT
from agent_runtime.infrastructure.db.engine import create_engine
from agent_runtime.infrastructure.db.event_repository import OUTBOX_LOCK_NAMESPACE
from agent_runtime.infrastructure.db.uow_factory import SqlAlchemyUnitOfWorkFactory
from agent_runtime.object_graph import build_turns
from tests.support.databases import query
from tests.support.migrated_databases import migrated_database_for
from tests.support.waiting import eventually


class AnswersWhenTold:
    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.delta_sent = asyncio.Event()

    async def stream_chat(self, request: Any) -> Any:
        yield TextDelta("the answer ")
        self.delta_sent.set()
        await self.go.wait()
        yield ModelResponse("the answer is 42", usage=Usage(3, 4), finish_reason="stop")


@pytest.fixture
async def pg(tmp_path: Path) -> AsyncIterator[tuple[str, SqlAlchemyUnitOfWorkFactory]]:
    async with migrated_database_for("postgresql", str(tmp_path / "x.db")) as url:
        engine = create_engine(url)
        factory = SqlAlchemyUnitOfWorkFactory(engine)
        yield url, factory
        await factory.close()
        await engine.dispose()


async def test_a_client_gone_while_commit_2_statements_wait_ends_the_turn_cancelled(
    pg: tuple[str, SqlAlchemyUnitOfWorkFactory],
) -> None:
    url, uows = pg
    model = AnswersWhenTold()
    turns = build_turns(uows, model, default_agents(), TurnSettings(), default_model="m")

    async def consume() -> None:
        async for _ in turns.handler.handle(
            SendUserMessage("s1", "question", tenant_id=DEFAULT_TENANT)
        ):
            pass

    task = asyncio.create_task(consume())
    await model.delta_sent.wait()  # COMMIT #1 landed, TurnStarted sent
    other = create_engine(url)
    async with other.connect() as connection:
        tx = await connection.begin()
        # Another writer of this tenant's events is between its outbox insert and its commit.
        await connection.execute(
            text("SELECT pg_advisory_xact_lock(:ns, hashtext(:tenant))"),
            {"ns": OUTBOX_LOCK_NAMESPACE, "tenant": DEFAULT_TENANT},
        )
        model.go.set()  # the answer comes; COMMIT #2's statements start, and wait
        await _wait_for_lock_waiters(url, 1)
        task.cancel()  # the client goes away
        await let_the_cancellation_land()
        await tx.rollback()
        with pytest.raises(asyncio.CancelledError):
            await task
    await other.dispose()
    turns_rows = await query(url, "SELECT status, stop_reason FROM turns")
    sessions_rows = await query(url, "SELECT running_turn_id FROM sessions")
    messages = await query(url, "SELECT role, content, incomplete FROM messages")
    assert sessions_rows == [(None,)]  # not claimed until the lease keeper's next round
    assert turns_rows == [("cancelled", "cancelled")]
    assert messages == [("user", "question", False), ("assistant", "the answer ", True)]


async def _wait_for_lock_waiters(url: str, n: int) -> None:
    async def waiting() -> bool:
        rows = await query(url, "SELECT count(*) FROM pg_locks WHERE NOT granted")
        return bool(rows[0][0] >= n)

    await eventually(waiting, what=f"{n} transactions waiting for a lock")


async def let_the_cancellation_land() -> None:
    """A few turns of the event loop: a task.cancel() reaches the task in the next one."""
    for _ in range(3):
        await asyncio.sleep(0)


async def test_a_retried_switch_agent_racing_its_original_replays_it(
    pg: tuple[str, SqlAlchemyUnitOfWorkFactory],
) -> None:
    """Two StreamMessage calls with the same client_message_id and the same switch_agent
    input on an existing idle session (a client retrying after a lost response). The
    original finishes in COMMIT #1, so the retry's claim (which waited for it) succeeds: the
    retry then finds the original's turn and replays it."""
    from agent_runtime.application.commands import SwitchAgent
    from agent_runtime.domain import chunks as ch

    url, uows = pg
    turns = build_turns(
        uows, AnswersWhenTold(), default_agents(), TurnSettings(), default_model="m"
    )
    # An existing idle session.
    t0 = AnswersWhenTold()
    t0.go.set()
    turns0 = build_turns(uows, t0, default_agents(), TurnSettings(), default_model="m")
    async for _ in turns0.handler.handle(SendUserMessage("s1", "hi", tenant_id=DEFAULT_TENANT)):
        pass
    cmd = SwitchAgent(
        "s1", "architect", "plan first", client_message_id="k1", tenant_id=DEFAULT_TENANT
    )

    async def run() -> list[Any]:
        return [c async for c in turns.handler.handle(cmd)]

    other = create_engine(url)
    async with other.connect() as connection:
        tx = await connection.begin()
        await connection.execute(
            text("SELECT pg_advisory_xact_lock(:ns, hashtext(:tenant))"),
            {"ns": OUTBOX_LOCK_NAMESPACE, "tenant": DEFAULT_TENANT},
        )
        first = asyncio.create_task(run())
        await _wait_for_lock_waiters(url, 1)  # the original waits in its COMMIT #1
        second = asyncio.create_task(run())
        await _wait_for_lock_waiters(url, 2)  # the retry waits in its claim
        await tx.rollback()
    await other.dispose()
    original = await first
    retried = await asyncio.gather(second, return_exceptions=True)
    assert not isinstance(retried[0], BaseException), retried[0]
    assert [c.body for c in retried[0]] == [c.body for c in original]
    assert isinstance(original[-1].body, ch.TurnCompleted)


class RoutesWhenTold:
    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.asked = asyncio.Event()

    async def stream_chat(self, request: Any) -> Any:
        self.asked.set()
        await self.go.wait()
        yield ModelResponse("coder", finish_reason="stop")


async def test_client_gone_mid_statement_of_a_routing_commit_records_the_ending(
    pg: tuple[str, SqlAlchemyUnitOfWorkFactory],
) -> None:
    """The turn is not finished in memory here, so the CANCELLED ending is attempted, on the
    same AsyncSession whose statement was just cancelled mid-flight."""
    url, uows = pg
    model = RoutesWhenTold()
    turns = build_turns(uows, model, default_agents(), TurnSettings(), default_model="m")

    async def consume() -> None:
        async for _ in turns.handler.handle(
            SendUserMessage("s1", "plan it", agent="orchestrator", tenant_id=DEFAULT_TENANT)
        ):
            pass

    task = asyncio.create_task(consume())
    await model.asked.wait()  # COMMIT #1 landed; the routing call is out
    other = create_engine(url)
    async with other.connect() as connection:
        tx = await connection.begin()
        await connection.execute(
            text("SELECT pg_advisory_xact_lock(:ns, hashtext(:tenant))"),
            {"ns": OUTBOX_LOCK_NAMESPACE, "tenant": DEFAULT_TENANT},
        )
        model.go.set()
        await _wait_for_lock_waiters(url, 1)  # the routing commit's outbox flush waits
        task.cancel()
        await let_the_cancellation_land()
        await tx.rollback()
        with pytest.raises(asyncio.CancelledError):
            await task
    await other.dispose()
    turns_rows = await query(url, "SELECT status, stop_reason FROM turns")
    sessions_rows = await query(url, "SELECT running_turn_id FROM sessions")
    assert turns_rows == [("cancelled", "cancelled")]
    assert sessions_rows == [(None,)]
