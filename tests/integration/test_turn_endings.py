"""A turn's endings around its commits, on a real SQLite file: a client gone while a commit
fails, while a failure is being recorded, a second cancellation, a follower of a turn whose
commit landed as its client left, and a failed ending that must not hold the writer."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from agent_runtime.application.commands import SendUserMessage
from agent_runtime.application.turn_settings import TurnSettings
from agent_runtime.domain import chunks
from agent_runtime.domain.agents import default_agents
from agent_runtime.domain.tenants import DEFAULT_TENANT
from agent_runtime.infrastructure.db import sqlite_writer_session
from agent_runtime.infrastructure.db.sqlite_driver import commit_open_transaction, raw_connection
from agent_runtime.infrastructure.db.uow_factory import SqlAlchemyUnitOfWorkFactory
from agent_runtime.object_graph import build_turns
from tests.fakes import ScriptedModel, text_answer
from tests.support.waiting import eventually


async def let_the_cancellation_land() -> None:
    """A few turns of the event loop: a task.cancel() reaches the task in the next one."""
    for _ in range(3):
        await asyncio.sleep(0)


def gate_waited_for(gate: Any) -> Callable[[], Awaitable[bool]]:
    async def waited_for() -> bool:
        return bool(gate.waiting)

    return waited_for


def rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as c:
        return list(c.execute(sql))


class BlockingCommit:
    """The `nth` COMMIT on the writer's thread blocks until released, then fails (an I/O
    error, as a full disk or a yanked volume gives)."""

    def __init__(self, nth: int, fail: bool = True) -> None:
        self.nth = nth
        self.fail = fail
        self.calls = 0
        self.entered = threading.Event()
        self.release = threading.Event()
        self.real: Callable[[Connection], None] = commit_open_transaction

    def __call__(self, connection: Connection) -> None:
        self.calls += 1
        if self.calls != self.nth:
            return self.real(connection)
        self.entered.set()
        self.release.wait(10)
        if self.fail:
            raw = raw_connection(connection)
            raw.rollback()  # what SQLite does on SQLITE_IOERR during COMMIT
            exc = sqlite3.OperationalError("disk I/O error")
            raise DBAPIError.instance("COMMIT", None, exc, sqlite3.Error)
        return self.real(connection)


async def test_a_client_gone_during_a_commit_2_that_fails_ends_the_turn_cancelled(
    uows: SqlAlchemyUnitOfWorkFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocking = BlockingCommit(nth=2)  # COMMIT #2
    monkeypatch.setattr(sqlite_writer_session, "commit_open_transaction", blocking)
    turns = build_turns(
        uows, ScriptedModel(text_answer("hi")), default_agents(), TurnSettings(), default_model="m"
    )
    seen: list[chunks.Chunk] = []

    async def consume() -> None:
        async for c in turns.handler.handle(
            SendUserMessage("s1", "hello", tenant_id=DEFAULT_TENANT)
        ):
            seen.append(c)

    task = asyncio.create_task(consume())
    await asyncio.to_thread(blocking.entered.wait, 10)
    task.cancel()  # the client goes away while COMMIT #2 runs
    await let_the_cancellation_land()
    blocking.release.set()  # ... and the COMMIT fails
    with pytest.raises(asyncio.CancelledError):
        await task
    path = Path(uows.sqlite_path or "")
    # The turn is recorded as ended (CANCELLED) and the session is free, as for any
    # cancellation after TurnStarted.
    assert rows(path, "SELECT running_turn_id FROM sessions") == [(None,)]
    assert rows(path, "SELECT status FROM turns") == [("cancelled",)]


class FailingAfterDelta:
    """Streams one delta, then waits for `go`, then fails as an unreachable endpoint does."""

    def __init__(self, hang: bool = False) -> None:
        self.go = asyncio.Event()
        self.delta_sent = asyncio.Event()
        self.hang = hang

    async def stream_chat(self, request: Any) -> Any:
        from agent_runtime.domain.errors import ModelUnavailable
        from agent_runtime.domain.model_output import TextDelta

        yield TextDelta("partial ")
        self.delta_sent.set()
        await self.go.wait()
        if self.hang:
            await asyncio.Event().wait()
        raise ModelUnavailable("connection refused", reason="MODEL_UNAVAILABLE")


def _writer_gate(uows: SqlAlchemyUnitOfWorkFactory) -> Any:
    """The SQLite writer's gate: taken by a unit of work that writes, and who waits for it."""
    writer = uows._writer
    assert writer is not None
    return writer.gate


async def test_a_client_gone_while_a_model_failure_is_recorded_still_frees_the_session(
    uows: SqlAlchemyUnitOfWorkFactory,
) -> None:
    """The model endpoint fails; while the failure is being recorded (here: waiting for the
    writer behind another unit of work), the client goes away: the ending still lands."""
    model = FailingAfterDelta()
    turns = build_turns(uows, model, default_agents(), TurnSettings(), default_model="m")

    async def consume() -> None:
        async for _ in turns.handler.handle(
            SendUserMessage("s1", "hello", tenant_id=DEFAULT_TENANT)
        ):
            pass

    task = asyncio.create_task(consume())
    await model.delta_sent.wait()
    gate = _writer_gate(uows)
    await gate.acquire()  # another unit of work is writing (e.g. a slow COMMIT's fsync)
    model.go.set()  # the model fails: the turn starts recording the failure
    await eventually(gate_waited_for(gate), what="the ending to wait for the writer")
    task.cancel()  # the client goes away (or its gRPC deadline expires)
    gate.release()
    with pytest.raises(asyncio.CancelledError):
        await task
    path = Path(uows.sqlite_path or "")
    assert rows(path, "SELECT running_turn_id FROM sessions") == [(None,)]


async def test_a_second_cancellation_while_the_cancelled_ending_waits_still_records_it(
    uows: SqlAlchemyUnitOfWorkFactory,
) -> None:
    """The client goes away mid-stream; the CANCELLED ending waits for the writer; a second
    cancellation (shutdown cancelling the RPCs, a gRPC deadline) does not abandon it."""
    model = FailingAfterDelta(hang=True)
    turns = build_turns(uows, model, default_agents(), TurnSettings(), default_model="m")

    async def consume() -> None:
        async for _ in turns.handler.handle(
            SendUserMessage("s1", "hello", tenant_id=DEFAULT_TENANT)
        ):
            pass

    task = asyncio.create_task(consume())
    await model.delta_sent.wait()
    model.go.set()
    await let_the_cancellation_land()  # the model's failure reaches the turn
    gate = _writer_gate(uows)
    await gate.acquire()
    task.cancel()
    await eventually(gate_waited_for(gate), what="the ending to wait for the writer")
    task.cancel()
    gate.release()
    with pytest.raises(asyncio.CancelledError):
        await task
    path = Path(uows.sqlite_path or "")
    assert rows(path, "SELECT running_turn_id FROM sessions") == [(None,)]


class RoutesThenHangs:
    def __init__(self) -> None:
        self.calls = 0

    async def stream_chat(self, request: Any) -> Any:
        from agent_runtime.domain.model_output import ModelResponse

        self.calls += 1
        if self.calls == 1:
            yield ModelResponse("coder", finish_reason="stop")
            return
        await asyncio.Event().wait()
        yield ModelResponse("never")


async def test_a_follower_gets_the_chunk_of_a_commit_that_landed_as_the_client_left(
    uows: SqlAlchemyUnitOfWorkFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Orchestrator turn: the routing commit (AgentSwitched, seq 2) lands while the client
    goes away: a live follower gets it, then TurnCompleted{CANCELLED}, no seq missing."""
    blocking = BlockingCommit(nth=2, fail=False)  # the routing commit: slow but fine
    monkeypatch.setattr(sqlite_writer_session, "commit_open_transaction", blocking)
    turns = build_turns(
        uows, RoutesThenHangs(), default_agents(), TurnSettings(), default_model="m"
    )
    started: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def consume() -> None:
        async for c in turns.handler.handle(
            SendUserMessage("s1", "plan it", agent="orchestrator", tenant_id=DEFAULT_TENANT)
        ):
            if isinstance(c.body, chunks.TurnStarted):
                started.set_result(c.turn_id)

    task = asyncio.create_task(consume())
    turn_id = await started
    followed: list[chunks.Chunk] = []

    async def follow() -> None:
        async for c in turns.streams.follow("s1", turn_id, 0, tenant_id=DEFAULT_TENANT):
            followed.append(c)

    follower = asyncio.create_task(follow())
    await asyncio.to_thread(blocking.entered.wait, 10)
    task.cancel()
    await let_the_cancellation_land()
    blocking.release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    await follower
    kinds = [type(c.body) for c in followed]
    assert kinds == [chunks.TurnStarted, chunks.AgentSwitched, chunks.TurnCompleted]
    assert [c.seq for c in followed] == [1, 2, 3]


async def test_a_failed_ending_does_not_hold_the_writer_while_its_chunks_wait_to_be_read(
    uows: SqlAlchemyUnitOfWorkFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ending's COMMIT fails (disk full, I/O error): the turn still yields Error and
    TurnCompleted, and while they wait to be read the SQLite writer is free for others."""
    from datetime import UTC, datetime

    from agent_runtime.domain.model import Session
    from agent_runtime.domain.tenants import DEFAULT_TENANT as T

    failing = BlockingCommit(nth=2)  # COMMIT #1 passes; the ending's commit fails
    failing.release.set()
    monkeypatch.setattr(sqlite_writer_session, "commit_open_transaction", failing)
    model = FailingAfterDelta()
    model.go.set()
    turns = build_turns(uows, model, default_agents(), TurnSettings(), default_model="m")
    stream = turns.handler.handle(SendUserMessage("s1", "hello", tenant_id=T))
    got = []
    async for c in stream:
        got.append(c)
        if isinstance(c.body, chunks.TurnError):
            break  # the client reads no further (yet)
    gate = _writer_gate(uows)
    held = gate.locked()

    async def other_write() -> None:
        now = datetime.now(UTC)
        async with uows(T) as uow:
            await uow.sessions.add(Session("s2", "coder", now, now))
            await uow.commit()

    try:
        await asyncio.wait_for(other_write(), 1.0)
        blocked = False
    except TimeoutError:
        blocked = True
    await stream.aclose()
    assert not held and not blocked, f"writer gate held: {held}; another write blocked: {blocked}"
