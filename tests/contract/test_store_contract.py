"""The store contract: the same cases against the fake unit of work (tests/fakes.py), a real
SQLite file and a real PostgreSQL schema, so the fake the handler tests run on cannot drift
from the stores the server runs on.

Only the ports are used (application/ports.py: UnitOfWorkFactory and the repositories it
hands out), never a store's own classes: what is checked here is what a use case can rely on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent_runtime.application.store_ports import ReadUnitOfWork, UnitOfWork, UnitOfWorkFactory
from agent_runtime.domain import chunks as c
from agent_runtime.domain.approval import Approval, ApprovalGrant, ApprovalStatus
from agent_runtime.domain.errors import ModelUnavailable, StorageUnavailable, WriteConflict
from agent_runtime.domain.events import Event, EventType, StoredEvent
from agent_runtime.domain.generation import GenerationConfig, ToolChoice
from agent_runtime.domain.model import (
    AgentSwitch,
    Message,
    Role,
    Session,
    StopReason,
    ToolCallRecord,
    Turn,
    TurnError,
    TurnStatus,
    Usage,
)
from agent_runtime.domain.tools import declared_tool
from agent_runtime.infrastructure.db.engine import create_engine
from agent_runtime.infrastructure.db.uow_factory import SqlAlchemyUnitOfWorkFactory
from tests.fakes import FakeUnitOfWorkFactory
from tests.support.migrated_databases import migrated_database_for

STORES = ("fake", "sqlite", "postgresql")
TENANT = "tenant-a"
OTHER_TENANT = "tenant-b"
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)
EARLIER = NOW - timedelta(minutes=5)


@pytest.fixture(params=STORES)
async def uows(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[UnitOfWorkFactory]:
    """The store, behind its factory: fresh and empty for each test."""
    if request.param == "fake":
        yield FakeUnitOfWorkFactory()
        return
    async with migrated_database_for(request.param, str(tmp_path / "runtime.db")) as url:
        engine = create_engine(url)
        try:
            factory = SqlAlchemyUnitOfWorkFactory(engine)
            try:
                yield factory
            finally:
                await factory.close()
        finally:
            await engine.dispose()


@asynccontextmanager
async def committing(uows: UnitOfWorkFactory, tenant: str = TENANT) -> AsyncIterator[UnitOfWork]:
    """A unit of work that commits when its block ends without an error."""
    async with uows(tenant) as uow:
        yield uow
        await uow.commit()


async def add_sessions(uows: UnitOfWorkFactory, *session_ids: str, tenant: str = TENANT) -> None:
    async with committing(uows, tenant) as uow:
        for session_id in session_ids:
            await uow.sessions.add(Session(session_id, "coder", NOW, NOW))


def a_turn(turn_id: str, session_id: str = "s1", **fields: Any) -> Turn:
    return Turn(turn_id, session_id, "coder", "m", NOW, **fields)


def a_message(message_id: str, position: int, session_id: str = "s1") -> Message:
    return Message(message_id, session_id, position, Role.USER, f"text {message_id}", NOW)


def an_approval(call_id: str, session_id: str = "s1", **fields: Any) -> Approval:
    values: dict[str, Any] = {
        "approval_id": f"ap-{session_id}-{call_id}",
        "session_id": session_id,
        "call_id": call_id,
        "message_id": f"msg-{call_id}",
        "turn_id": "t1",
        "tool_name": "write_file",
        "arguments": {"path": "a.md", "content": "hi", "n": [1, 2]},
        "reason": "write_file matches approval rule 'write_file'",
        "created_at": NOW,
        "expires_at": LATER,
    }
    return Approval(**(values | fields))


def comparable(log: list[c.Chunk]) -> list[tuple[object, ...]]:
    """Chunks as values: an error in a TurnError compares by what it says (category, reason,
    message, retryability, metadata), not by identity."""

    def body(chunk: c.Chunk) -> object:
        if isinstance(chunk.body, c.TurnError):
            e = chunk.body.error
            return (type(e), e.reason, e.message, e.retryable, e.metadata)
        return chunk.body

    return [(chunk.session_id, chunk.turn_id, chunk.seq, body(chunk)) for chunk in log]


def every_kind_of_chunk(turn: Turn, first_seq: int = 1) -> list[c.Chunk]:
    bodies: list[c.ChunkBody] = [
        c.TurnStarted("coder", "msg-in"),
        c.AssistantMessage("msg-out", "Hello ✓"),
        c.ToolCall("msg-call", "call-1", "read_file", {"path": "a.py", "n": [1]}, True, "why"),
        c.AgentSwitched("coder", "architect", "plans first"),
        c.TurnError(ModelUnavailable("the model went away", reason="MODEL_UNREACHABLE")),
        c.TurnCompleted(StopReason.ERROR, Usage(3, 4)),
    ]
    return [
        c.Chunk(turn.session_id, turn.turn_id, seq, body)
        for seq, body in enumerate(bodies, first_seq)
    ]


# -- sessions --------------------------------------------------------------------------------


async def test_a_session_reads_back_as_it_was_added(uows: UnitOfWorkFactory) -> None:
    session = Session("s1", "coder", NOW, LATER, title="a title ✓", message_count=3)
    async with committing(uows) as uow:
        await uow.sessions.add(session)
    async with uows.reader(TENANT) as reader:
        assert await reader.sessions.get("s1") == session
        assert await reader.sessions.get("missing") is None


LINT = declared_tool(
    "lint",
    "Lint a file ✓",
    {"type": "object", "properties": {"path": {"type": "string", "maxLength": 4}}},
    requires_approval=True,
)
GENERATION = GenerationConfig(
    temperature=0.0, max_output_tokens=100, stop=("END",), tool_choice=ToolChoice.named("lint")
)


async def test_what_the_client_sets_on_a_session_reads_back(uows: UnitOfWorkFactory) -> None:
    session = Session(
        "s1",
        "coder",
        NOW,
        NOW,
        instructions="Answer in French.",
        tools=(LINT,),
        generation=GENERATION,
    )
    async with committing(uows) as uow:
        await uow.sessions.add(session)
    async with uows.reader(TENANT) as reader:
        assert await reader.sessions.get("s1") == session


async def test_settings_are_updated_and_cleared(uows: UnitOfWorkFactory) -> None:
    await add_sessions(uows, "s1", "s2")
    changed = Session(
        "s1",
        "coder",
        NOW,
        NOW,
        title="new",
        instructions="Be brief.",
        tools=(LINT,),
        generation=GENERATION,
    )
    async with committing(uows) as uow:
        await uow.sessions.update_settings(changed)
    async with uows.reader(TENANT) as reader:
        assert await reader.sessions.get("s1") == changed
        untouched = await reader.sessions.get("s2")
        assert untouched is not None and untouched.tools == () and untouched.instructions == ""
    cleared = Session("s1", "coder", NOW, NOW)
    async with committing(uows) as uow:
        await uow.sessions.update_settings(cleared)
    async with uows.reader(TENANT) as reader:
        assert await reader.sessions.get("s1") == cleared


async def test_a_session_id_taken_is_a_write_conflict_and_the_first_stays(
    uows: UnitOfWorkFactory,
) -> None:
    async with committing(uows) as uow:
        await uow.sessions.add(Session("s1", "coder", NOW, NOW, title="first"))
    async with uows(TENANT) as uow:
        with pytest.raises(WriteConflict):
            await uow.sessions.add(Session("s1", "coder", NOW, NOW, title="second"))
    async with uows.reader(TENANT) as reader:
        found = await reader.sessions.get("s1")
    assert found is not None and found.title == "first"


async def test_a_claim_takes_a_free_session_only_and_a_release_frees_it_for_its_turn_only(
    uows: UnitOfWorkFactory,
) -> None:
    await add_sessions(uows, "s1")
    async with committing(uows) as uow:
        assert await uow.sessions.claim_turn("s1", "t1") is None
        assert await uow.sessions.claim_turn("s1", "t2") == "t1"
    async with committing(uows) as uow:
        assert await uow.sessions.claim_turn("s1", "t2") == "t1"
        await uow.sessions.release_turn("s1", "t2", LATER)  # not its turn
    async with uows.reader(TENANT) as reader:
        held = await reader.sessions.get("s1")
    assert held is not None
    assert (held.running_turn_id, held.last_activity_at, held.message_count) == ("t1", LATER, 0)

    async with committing(uows) as uow:
        await uow.sessions.release_turn("s1", "t1", LATER, message_count=4)
    async with committing(uows) as uow:
        freed = await uow.sessions.get("s1")
        assert freed is not None and (freed.running_turn_id, freed.message_count) == (None, 4)
        await uow.sessions.record_activity("s1", LATER + timedelta(seconds=1))
        assert await uow.sessions.claim_turn("s1", "t3") is None
    async with uows.reader(TENANT) as reader:
        claimed = await reader.sessions.get("s1")
    assert claimed is not None
    assert (claimed.running_turn_id, claimed.message_count) == ("t3", 4)  # count kept
    assert claimed.last_activity_at == LATER + timedelta(seconds=1)


async def test_a_switch_sets_the_agent_and_is_appended_to_the_sessions_history(
    uows: UnitOfWorkFactory,
) -> None:
    await add_sessions(uows, "s1", "s2")
    first = AgentSwitch("coder", "architect", "plans first", NOW, "t1")
    second = AgentSwitch("architect", "coder", "back to code", LATER)
    async with committing(uows) as uow:
        await uow.sessions.switch_agent("s1", first)
        await uow.sessions.switch_agent("s1", second)
        await uow.sessions.switch_agent("s2", first)
    async with uows.reader(TENANT) as reader:
        assert await reader.sessions.recent_agent_switches("s1", 10) == ([first, second], 2)
        assert await reader.sessions.recent_agent_switches("s1", 1) == ([second], 2)
        assert await reader.sessions.recent_agent_switches("s2", 10) == ([first], 1)
        assert await reader.sessions.recent_agent_switches("missing", 10) == ([], 0)
        s1, s2 = await reader.sessions.get("s1"), await reader.sessions.get("s2")
    assert s1 is not None and s1.agent == "coder"
    assert s2 is not None and s2.agent == "architect"


async def test_the_recent_switches_of_many_sessions_are_read_at_once(
    uows: UnitOfWorkFactory,
) -> None:
    await add_sessions(uows, "s1", "s2", "s3")
    await add_sessions(uows, "s1", tenant=OTHER_TENANT)
    made = [AgentSwitch("coder", "architect", f"reason {n}", NOW, f"t{n}") for n in range(4)]
    async with committing(uows) as uow:
        for switch in made:  # interleaved: each session's keys are not contiguous
            await uow.sessions.switch_agent("s1", switch)
            await uow.sessions.switch_agent("s2", switch)
        await uow.sessions.switch_agent("s3", made[0])
    async with committing(uows, OTHER_TENANT) as uow:
        await uow.sessions.switch_agent("s1", made[0])
    async with uows.reader(TENANT) as reader:
        recent = await reader.sessions.recent_agent_switches_of(["s3", "s1", "none"], 2)
        none_kept = await reader.sessions.recent_agent_switches_of(["s1", "s2"], 0)
        alone = await reader.sessions.recent_agent_switches("s1", 2)
        assert await reader.sessions.recent_agent_switches_of([], 2) == {}
    # The other tenant's switch in its own s1 is not counted.
    assert recent == {"s1": (made[2:], 4), "s3": ([made[0]], 1), "none": ([], 0)}
    assert none_kept == {"s1": ([], 4), "s2": ([], 4)}
    assert alone == recent["s1"]


async def test_agent_switches_are_paged_oldest_first_by_their_keys(
    uows: UnitOfWorkFactory,
) -> None:
    await add_sessions(uows, "s1", "s2")
    made = [AgentSwitch("coder", "architect", f"reason {n}", NOW, f"t{n}") for n in range(5)]
    async with committing(uows) as uow:
        for switch in made:
            await uow.sessions.switch_agent("s1", switch)
            await uow.sessions.switch_agent("s2", switch)  # interleaved keys: s1's are not 1..5
    async with uows.reader(TENANT) as reader:
        first = await reader.sessions.agent_switches("s1", 0, 2)
        rest = await reader.sessions.agent_switches("s1", first[-1].switch_id, 10)
        recent, count = await reader.sessions.recent_agent_switches("s1", 3)
    assert first + rest == made
    assert [s.switch_id for s in first + rest] == sorted({s.switch_id for s in first + rest})
    assert (recent, count) == (made[2:], 5)
    assert [s.switch_id for s in recent] == [s.switch_id for s in rest[-3:]]


async def test_sessions_are_listed_by_latest_activity_after_a_cursor_deleted_ones_never(
    uows: UnitOfWorkFactory,
) -> None:
    at = {"s1": NOW, "s2": NOW + timedelta(1), "s3": NOW + timedelta(1), "s4": NOW + timedelta(2)}
    async with committing(uows) as uow:
        for session_id, activity in at.items():
            await uow.sessions.add(Session(session_id, "coder", NOW, activity))
        await uow.sessions.add(Session("s5", "coder", NOW, NOW + timedelta(3)))
        await uow.sessions.mark_deleted("s5", LATER)
    async with uows.reader(TENANT) as reader:
        first = await reader.sessions.page_by_activity(None, 2)
        second = await reader.sessions.page_by_activity((at["s3"], "s3"), 2)
        past_the_end = await reader.sessions.page_by_activity((NOW, "s1"), 2)
        deleted = await reader.sessions.get("s5")
    assert [s.session_id for s in first] == ["s4", "s3"]
    assert [s.session_id for s in second] == ["s2", "s1"]
    assert past_the_end == []
    assert deleted is not None and deleted.deleted_at == LATER  # still there to be got


# -- turns -----------------------------------------------------------------------------------


async def test_a_turn_reads_back_as_added_and_as_saved(uows: UnitOfWorkFactory) -> None:
    await add_sessions(uows, "s1")
    turn = a_turn(
        "t1",
        input_message_id="msg-in",
        client_message_id="client-1",
        input_hash="hash-1",
        owner="replica-a",
        lease_expires_at=LATER,
    )
    async with committing(uows) as uow:
        await uow.turns.add(turn)
    async with uows.reader(TENANT) as reader:
        assert await reader.turns.get("t1") == turn
        assert await reader.turns.get("missing") is None

    turn.fail(TurnError("MODEL_UNREACHABLE", "the model went away"), Usage(5, 7), LATER)
    async with committing(uows) as uow:
        await uow.turns.save(turn)
    async with uows.reader(TENANT) as reader:
        assert await reader.turns.get("t1") == turn
    turn.status, turn.error, turn.stop_reason = TurnStatus.COMPLETED, None, StopReason.END_TURN
    async with committing(uows) as uow:
        await uow.turns.save(turn)
    async with uows.reader(TENANT) as reader:
        assert await reader.turns.get("t1") == turn


async def test_a_turns_replay_log_is_kept_by_add_and_save(
    uows: UnitOfWorkFactory,
) -> None:
    await add_sessions(uows, "s1")
    turn, quiet = a_turn("t1"), a_turn("t2")
    first, second, third = (every_kind_of_chunk(turn, seq) for seq in (1, 10, 20))
    async with committing(uows) as uow:
        await uow.turns.add(turn, first)
        await uow.turns.add(quiet)
    async with committing(uows) as uow:
        assert comparable(await uow.turns.chunks(turn)) == comparable(first)
        assert await uow.turns.chunks(quiet) == []
        await uow.turns.save(turn)  # no log: the one stored stays
        assert comparable(await uow.turns.chunks(turn)) == comparable(first)
        await uow.turns.save(turn, second)
    async with committing(uows) as uow:
        assert comparable(await uow.turns.chunks(turn)) == comparable(second)
        await uow.turns.save(turn, third)
    async with uows.reader(TENANT) as reader:
        assert comparable(await reader.turns.chunks(turn)) == comparable(third)


async def test_a_client_message_id_finds_its_turn_in_its_session_and_is_taken_once(
    uows: UnitOfWorkFactory,
) -> None:
    await add_sessions(uows, "s1", "s2")
    retried = a_turn("t1", client_message_id="client-1", input_hash="h")
    elsewhere = a_turn("t3", "s2", client_message_id="client-1")
    async with committing(uows) as uow:
        await uow.turns.add(retried)
        await uow.turns.add(a_turn("t2"))  # no client_message_id: never collides
        await uow.turns.add(a_turn("t4"))
        await uow.turns.add(elsewhere)  # the same id in another session
    async with uows(TENANT) as uow:
        assert await uow.turns.find_by_client_message_id("s1", "client-1") == retried
        assert await uow.turns.find_by_client_message_id("s2", "client-1") == elsewhere
        assert await uow.turns.find_by_client_message_id("s1", "client-2") is None
        with pytest.raises(WriteConflict):
            await uow.turns.add(a_turn("t5", client_message_id="client-1"))
    async with uows.reader(TENANT) as reader:
        assert await reader.turns.get("t5") is None


async def test_a_lease_renewal_extends_running_turns_and_reports_the_cancelled_ones(
    uows: UnitOfWorkFactory,
) -> None:
    await add_sessions(uows, "s1")
    done = a_turn("t3", status=TurnStatus.COMPLETED, owner="me", lease_expires_at=NOW)
    async with committing(uows) as uow:
        await uow.turns.add(a_turn("t1", owner="me", lease_expires_at=NOW))
        await uow.turns.add(a_turn("t2", owner="me", lease_expires_at=NOW))
        await uow.turns.add(a_turn("t4", owner="them", lease_expires_at=NOW))
        await uow.turns.add(done)
    everything = [(TENANT, t) for t in ("t1", "t2", "t3", "t4")]
    assert await uows.renew_leases(everything, "me", LATER) == []
    async with committing(uows) as uow:
        await uow.turns.request_cancel("t2")
        await uow.turns.request_cancel("t3")
        await uow.turns.request_cancel("missing")
    assert await uows.renew_leases([], "me", LATER) == []
    renewed = LATER + timedelta(minutes=1)
    assert await uows.renew_leases([*everything, (TENANT, "missing")], "me", renewed) == [
        (TENANT, "t2")
    ]
    assert await uows.renew_leases([(TENANT, "t1")], "me", renewed) == []
    async with uows.reader(TENANT) as reader:
        leases = {t: (await reader.turns.get(t)) for t in ("t1", "t2", "t3", "t4")}
    assert {t: turn and turn.lease_expires_at for t, turn in leases.items()} == {
        "t1": renewed,
        "t2": renewed,
        "t3": NOW,  # finished: no lease to renew
        "t4": NOW,  # another process's
    }


async def test_one_lease_renewal_reaches_every_tenant_and_only_the_turns_it_names(
    uows: UnitOfWorkFactory,
) -> None:
    for tenant in (TENANT, OTHER_TENANT):
        async with committing(uows, tenant) as uow:
            await uow.sessions.add(Session("s1", "coder", NOW, NOW))
            await uow.turns.add(a_turn(f"{tenant}-t", owner="me", lease_expires_at=NOW))
            await uow.turns.request_cancel(f"{tenant}-t")
    # A pair names its tenant: another tenant's turn of that id is not touched.
    assert await uows.renew_leases([(OTHER_TENANT, f"{TENANT}-t")], "me", LATER) == []
    async with uows.reader(TENANT) as reader:
        turn = await reader.turns.get(f"{TENANT}-t")
        assert turn is not None and turn.lease_expires_at == NOW
    both = [(TENANT, f"{TENANT}-t"), (OTHER_TENANT, f"{OTHER_TENANT}-t")]
    assert await uows.renew_leases(both, "me", LATER) == sorted(both)
    for tenant in (TENANT, OTHER_TENANT):
        async with uows.reader(tenant) as reader:
            turn = await reader.turns.get(f"{tenant}-t")
            assert turn is not None and turn.lease_expires_at == LATER


async def test_abandoned_candidates_run_with_an_expired_lease_or_for_the_owner(
    uows: UnitOfWorkFactory,
) -> None:
    def running(turn_id: str, owner: str, lease: datetime | None) -> Turn:
        return a_turn(turn_id, f"s-{turn_id}", owner=owner, lease_expires_at=lease)

    turns = {
        TENANT: [
            running("a-expired", "them", EARLIER),
            running("a-healthy", "them", LATER),
            running("a-unleased", "them", None),
            a_turn("a-done", "s-a-done", status=TurnStatus.FAILED, lease_expires_at=EARLIER),
        ],
        OTHER_TENANT: [running("b-mine", "me", LATER), running("b-healthy", "them", LATER)],
    }
    for tenant, its_turns in turns.items():
        async with committing(uows, tenant) as uow:
            for turn in its_turns:
                await uow.sessions.add(Session(turn.session_id, "coder", NOW, NOW))
                await uow.turns.add(turn)
    async with uows(TENANT) as uow:
        found = await uow.turns.abandoned_candidates(NOW, "me")
        assert found == [turns[TENANT][0]]
        theirs = await uow.turns.abandoned_candidates(NOW, "them")  # by owner, leased or not
        assert sorted(t.turn_id for t in theirs) == ["a-expired", "a-healthy", "a-unleased"]
    async with uows(OTHER_TENANT) as uow:
        assert [t.turn_id for t in await uow.turns.abandoned_candidates(NOW, "me")] == ["b-mine"]
    assert await uows.abandoned_turn_candidates(NOW, "me") == [
        (TENANT, "a-expired"),
        (OTHER_TENANT, "b-mine"),
    ]
    assert await uows.abandoned_turn_candidates(NOW, "nobody") == [(TENANT, "a-expired")]


async def test_only_a_turn_still_running_is_ended_and_only_once(uows: UnitOfWorkFactory) -> None:
    await add_sessions(uows, "s1")
    turn, reclaimed = a_turn("t1"), a_turn("t2")
    async with committing(uows) as uow:
        await uow.turns.add(turn, every_kind_of_chunk(turn)[:1])
        await uow.turns.add(reclaimed)
        assert await uow.turns.interrupt([reclaimed], NOW) == [reclaimed]
    completed = dataclasses.replace(turn)
    completed.complete(StopReason.END_TURN, Usage(3, 4), LATER)
    failed = dataclasses.replace(turn)
    failed.fail(TurnError("STORAGE_UNAVAILABLE", "lost"), Usage(3, 4), LATER)
    async with committing(uows) as uow:
        assert await uow.turns.end(completed, every_kind_of_chunk(turn)) is True
    async with committing(uows) as uow:  # an ending after it: nothing written
        assert await uow.turns.end(failed, []) is False
        reclaimed.complete(StopReason.END_TURN, Usage(1, 1), LATER)
        assert await uow.turns.end(reclaimed, []) is False
        assert await uow.turns.end(a_turn("missing"), []) is False
    async with uows.reader(TENANT) as reader:
        assert await reader.turns.get("t1") == completed
        assert comparable(await reader.turns.chunks(completed)) == comparable(
            every_kind_of_chunk(turn)
        )
        stored = await reader.turns.get("t2")
    assert stored is not None and stored.status is TurnStatus.INTERRUPTED


async def test_an_interrupt_finishes_running_turns_once_and_frees_the_sessions_they_hold(
    uows: UnitOfWorkFactory,
) -> None:
    await add_sessions(uows, "s1", "s2")
    holding, not_holding = a_turn("t1"), a_turn("t2", "s2")
    done = a_turn("t3", status=TurnStatus.COMPLETED)
    async with committing(uows) as uow:
        assert await uow.sessions.claim_turn("s1", "t1") is None
        assert await uow.sessions.claim_turn("s2", "t9") is None  # s2 is another turn's
        for turn in (holding, not_holding, done):
            await uow.turns.add(turn)
    async with committing(uows) as uow:
        interrupted = await uow.turns.interrupt([holding, not_holding, done], LATER)
        assert [t.turn_id for t in interrupted] == ["t1", "t2"]
        assert all(t.status is TurnStatus.INTERRUPTED for t in interrupted)
    async with committing(uows) as uow:
        again = await uow.turns.interrupt([a_turn("t1"), a_turn("missing")], LATER)
        assert again == []  # another process was first
    async with uows.reader(TENANT) as reader:
        stored = {t: await reader.turns.get(t) for t in ("t1", "t2", "t3")}
        s1, s2 = await reader.sessions.get("s1"), await reader.sessions.get("s2")
    assert {t: turn and (turn.status, turn.finished_at) for t, turn in stored.items()} == {
        "t1": (TurnStatus.INTERRUPTED, LATER),
        "t2": (TurnStatus.INTERRUPTED, LATER),
        "t3": (TurnStatus.COMPLETED, None),
    }
    assert s1 is not None and s1.running_turn_id is None
    assert s2 is not None and s2.running_turn_id == "t9"


# -- messages --------------------------------------------------------------------------------


async def test_messages_read_back_by_position_oldest_first(uows: UnitOfWorkFactory) -> None:
    await add_sessions(uows, "s1", "s2")
    call = ToolCallRecord("call-1", "read_file", {"path": "a.py", "start_line": 3})
    history = [
        a_message("m1", 1),
        Message("m2", "s1", 2, Role.ASSISTANT, "", NOW, turn_id="t1", tool_calls=(call,)),
        Message(
            "m3", "s1", 3, Role.TOOL, "no such file", NOW, tool_call_id="call-1", is_error=True
        ),
        Message("m4", "s1", 4, Role.ASSISTANT, "half an ans", LATER, turn_id="t1", incomplete=True),
        Message("m5", "s1", 5, Role.ASSISTANT, "done", LATER, reasoning="first, think ✓"),
    ]
    async with committing(uows) as uow:
        for message in reversed(history):  # the order of the rows is not the order read
            await uow.messages.add(message)
        await uow.messages.add(a_message("other", 1, "s2"))
    async with uows.reader(TENANT) as reader:
        assert await reader.messages.recent("s1", 10) == history
        assert await reader.messages.recent("s1", 2) == history[3:]
        assert await reader.messages.recent("s1", 0) == []
        assert await reader.messages.page("s1", 0, 10) == history
        assert await reader.messages.page("s1", 1, 2) == history[1:3]
        assert await reader.messages.page("s1", 5, 10) == []
        assert await reader.messages.recent("missing", 10) == []


async def test_a_position_taken_is_a_write_conflict(uows: UnitOfWorkFactory) -> None:
    await add_sessions(uows, "s1")
    async with committing(uows) as uow:
        await uow.messages.add(a_message("m1", 1))
    async with uows(TENANT) as uow:
        with pytest.raises(WriteConflict):
            await uow.messages.add(a_message("m2", 1))
    async with uows.reader(TENANT) as reader:
        assert [m.message_id for m in await reader.messages.recent("s1", 10)] == ["m1"]


async def test_a_tool_call_and_its_result_are_found_by_call_id_and_the_call_replaced(
    uows: UnitOfWorkFactory,
) -> None:
    await add_sessions(uows, "s1", "s2")
    call = ToolCallRecord("call-1", "write_file", {"path": "a.md", "content": "hi"})
    asking = Message("m1", "s1", 1, Role.ASSISTANT, "", NOW, turn_id="t1", tool_calls=(call,))
    answer = Message("m2", "s1", 2, Role.TOOL, "written", NOW, tool_call_id="call-1")
    async with committing(uows) as uow:
        await uow.messages.add(asking)
        await uow.messages.add(answer)
    async with committing(uows) as uow:
        assert await uow.messages.find_tool_call("s1", "call-1") == asking
        assert await uow.messages.find_tool_result("s1", "call-1") == answer
        assert await uow.messages.find_tool_call("s1", "call-2") is None
        assert await uow.messages.find_tool_result("s1", "call-2") is None
        assert await uow.messages.find_tool_call("s2", "call-1") is None
        edited = ToolCallRecord("call-1", "write_file", {"path": "b.md", "content": "edited"})
        await uow.messages.replace_tool_call("m1", edited)
    async with uows.reader(TENANT) as reader:
        found = await reader.messages.find_tool_call("s1", "call-1")
    assert found is not None and found.tool_calls == (edited,)


# -- approvals -------------------------------------------------------------------------------


async def test_an_approval_reads_back_as_added_and_as_saved(uows: UnitOfWorkFactory) -> None:
    await add_sessions(uows, "s1")
    approval = an_approval("call-1")
    async with committing(uows) as uow:
        await uow.approvals.add(approval)
    async with uows.reader(TENANT) as reader:
        found = await reader.approvals.get("s1", "call-1")
        assert found == approval
        assert await reader.approvals.get("s1", "call-2") is None
        assert found is not None
        found.arguments["path"] = "changed by the caller"  # a copy: nothing stored changes
        assert await reader.approvals.get("s1", "call-1") == approval
    approval.close(
        ApprovalStatus.EDITED, LATER, feedback="smaller", final_arguments={"path": "b.md"}
    )
    async with committing(uows) as uow:
        await uow.approvals.save(approval)
    async with uows(TENANT) as uow:
        assert await uow.approvals.get("s1", "call-1") == approval
        with pytest.raises(WriteConflict):
            await uow.approvals.add(an_approval("call-1", approval_id="another"))


async def test_pending_approvals_are_listed_paged_and_counted(uows: UnitOfWorkFactory) -> None:
    await add_sessions(uows, "s1", "s2")
    await add_sessions(uows, "s1", tenant=OTHER_TENANT)
    first, second = an_approval("call-a"), an_approval("call-b")
    newest = an_approval("call-0", created_at=NOW + timedelta(seconds=1))
    expired = an_approval("call-x", expires_at=NOW)
    decided = an_approval("call-d")
    decided.close(ApprovalStatus.REJECTED, NOW)
    async with committing(uows) as uow:
        for approval in (newest, second, expired, decided, first, an_approval("c", "s2")):
            await uow.approvals.add(approval)
    async with committing(uows, OTHER_TENANT) as uow:
        await uow.approvals.add(an_approval("call-a", approval_id="theirs"))

    async with uows.reader(TENANT) as reader:
        still_open = await reader.approvals.open_for_session("s1")
        page = await reader.approvals.pending_page("s1", NOW, None, 2)
        rest = await reader.approvals.pending_page("s1", NOW, (NOW, "call-b"), 10)
        count = await reader.approvals.count_pending("s1", NOW)
        counts = await reader.approvals.count_pending_of(["s2", "s1", "none"], NOW)
        assert await reader.approvals.count_pending_of([], NOW) == {}
    assert sorted(a.call_id for a in still_open) == ["call-0", "call-a", "call-b", "call-x"]
    assert page == [first, second]  # oldest first, then by call id
    assert rest == [newest]
    assert count == 3
    assert counts == {"s1": 3, "s2": 1, "none": 0}  # the other tenant's not among them
    assert await uows.count_pending_approvals(NOW) == 5  # 3 + 1 in s2 + 1 of the other tenant


# -- events ----------------------------------------------------------------------------------


def an_event(kind: EventType, session_id: str = "s1", turn_id: str | None = "t1") -> Event:
    return Event(kind, session_id, NOW, turn_id, {"n": 1, "text": "✓", "list": [1, "a"]})


async def test_events_are_seen_once_committed_in_commit_order_and_filtered(
    uows: UnitOfWorkFactory,
) -> None:
    await add_sessions(uows, "s1", "s2")
    e1, e2 = an_event(EventType.TURN_STARTED), an_event(EventType.MESSAGE_PERSISTED, "s2", None)
    e3 = an_event(EventType.TURN_COMPLETED)
    everything: frozenset[EventType] = frozenset()
    async with uows(TENANT) as uow:
        await uow.events.add(e1)
        await uow.events.add(e2)
        # Unseen until the commit, even by the unit of work that wrote them.
        assert await uow.events.after(0, session_id=None, types=everything, limit=10) == []
        assert await uow.events.last_id() == 0
        async with uows.reader(TENANT) as reader:
            assert await reader.events.after(0, session_id=None, types=everything, limit=10) == []
        await uow.commit()
        await uow.events.add(an_event(EventType.TURN_FAILED))
        await uow.rollback()  # never seen
        await uow.events.add(e3)
        await uow.commit()
        await uow.events.add(an_event(EventType.TURN_CANCELLED))  # left without a commit

    async with uows.reader(TENANT) as reader:
        stored = await reader.events.after(0, session_id=None, types=everything, limit=10)
        ids = [s.event_id for s in stored]
        assert [s.event for s in stored] == [e1, e2, e3]
        assert ids == sorted(set(ids))
        assert await reader.events.last_id() == ids[-1]
        assert (
            await reader.events.after(ids[0], session_id=None, types=everything, limit=10)
            == (stored[1:])
        )
        assert await reader.events.after(ids[-1], session_id=None, types=everything, limit=10) == []
        assert await reader.events.after(0, session_id="s1", types=everything, limit=10) == [
            stored[0],
            stored[2],
        ]
        completed = frozenset({EventType.TURN_COMPLETED, EventType.AGENT_SWITCHED})
        assert await reader.events.after(0, session_id=None, types=completed, limit=10) == [
            stored[2]
        ]
        assert await reader.events.after(0, session_id=None, types=everything, limit=1) == [
            stored[0]
        ]
    assert all(isinstance(s, StoredEvent) for s in stored)


# -- text as every store keeps it (domain/text.py) --------------------------------------------

WITH_NUL = "before\x00after ✓"
AS_STORED = "before\ufffdafter ✓"


async def test_u0000_is_stored_as_u_fffd_in_every_text_field_and_kept_in_json(
    uows: UnitOfWorkFactory,
) -> None:
    """PostgreSQL's text cannot hold U+0000: every store keeps it as U+FFFD, and finds a row by
    the text as given. Values kept as JSON (tool arguments, event data, the replay log) read
    back as they were."""
    call = ToolCallRecord("call-\x00", "read_file", {"path": WITH_NUL, WITH_NUL: [WITH_NUL]})
    turn = a_turn("t1", client_message_id=WITH_NUL, input_hash="h")
    turn.model = WITH_NUL
    turn.fail(TurnError("MODEL_ERROR", WITH_NUL), Usage(1, 2), LATER)
    log = [
        c.Chunk("s1", "t1", 1, c.AssistantMessage("m1", WITH_NUL)),
        c.Chunk("s1", "t1", 2, c.AgentSwitched("coder", "architect", WITH_NUL)),
        c.Chunk("s1", "t1", 3, c.TurnError(ModelUnavailable(WITH_NUL, metadata={"k": WITH_NUL}))),
    ]
    history = [
        Message("m1", "s1", 1, Role.USER, WITH_NUL, NOW),
        Message("m2", "s1", 2, Role.ASSISTANT, WITH_NUL, NOW, turn_id="t1", tool_calls=(call,)),
        Message("m3", "s1", 3, Role.TOOL, WITH_NUL, NOW, tool_call_id=call.call_id),
    ]
    approval = an_approval(
        call.call_id, arguments=dict(call.arguments), reason=WITH_NUL, feedback=WITH_NUL
    )
    approval.final_arguments = {"content": WITH_NUL}
    switch = AgentSwitch("coder", "architect", WITH_NUL, NOW, "t1")
    event = Event(EventType.MESSAGE_PERSISTED, "s1", NOW, "t1", {"text": WITH_NUL})
    async with committing(uows) as uow:
        await uow.sessions.add(Session("s1", "coder", NOW, NOW, title=WITH_NUL))
        await uow.turns.add(turn, log)
        for message in history:
            await uow.messages.add(message)
        await uow.approvals.add(approval)
        await uow.sessions.switch_agent("s1", switch)
        await uow.events.add(event)

    async with uows.reader(TENANT) as reader:
        session = await reader.sessions.get("s1")
        assert session is not None and session.title == AS_STORED
        stored = await reader.turns.get("t1")
        assert stored is not None
        assert (stored.model, stored.client_message_id) == (AS_STORED, AS_STORED)
        assert stored.error == TurnError("MODEL_ERROR", AS_STORED)
        assert await reader.turns.find_by_client_message_id("s1", WITH_NUL) == stored
        assert comparable(await reader.turns.chunks(stored)) == comparable(log)

        messages = await reader.messages.recent("s1", 10)
        assert [m.content for m in messages] == [AS_STORED] * 3
        assert messages[1].tool_calls == (call,)  # JSON: as it was
        assert messages[2].tool_call_id == "call-\ufffd"
        found_call = await reader.messages.find_tool_call("s1", call.call_id)
        found_result = await reader.messages.find_tool_result("s1", call.call_id)
        assert found_call is not None and found_call.message_id == "m2"
        assert found_result is not None and found_result.message_id == "m3"

        kept = await reader.approvals.get("s1", call.call_id)
        assert kept is not None
        assert (kept.call_id, kept.reason, kept.feedback) == ("call-\ufffd", AS_STORED, AS_STORED)
        assert (kept.arguments, kept.final_arguments) == (call.arguments, {"content": WITH_NUL})
        switches, _ = await reader.sessions.recent_agent_switches("s1", 10)
        assert [s.reason for s in switches] == [AS_STORED]
        events = await reader.events.after(0, session_id="s1", types=frozenset(), limit=10)
        assert [e.event.data for e in events] == [{"text": WITH_NUL}]


# -- commit and rollback ---------------------------------------------------------------------


async def test_a_commit_makes_writes_seen_and_leaving_without_one_drops_them(
    uows: UnitOfWorkFactory,
) -> None:
    async with uows(TENANT) as uow:
        await uow.sessions.add(Session("s1", "coder", NOW, NOW))
        assert await uow.sessions.get("s1") is not None  # its own writes, before the commit
        async with uows.reader(TENANT) as reader:
            assert await reader.sessions.get("s1") is None  # nobody else's
        await uow.commit()
        await uow.sessions.add(Session("s2", "coder", NOW, NOW))
    async with uows.reader(TENANT) as reader:
        assert await reader.sessions.get("s1") is not None
        assert await reader.sessions.get("s2") is None


async def test_a_rollback_drops_the_writes_since_the_last_commit_and_work_goes_on(
    uows: UnitOfWorkFactory,
) -> None:
    async with uows(TENANT) as uow:
        await uow.sessions.add(Session("s1", "coder", NOW, NOW))
        await uow.commit()
        await uow.sessions.add(Session("s2", "coder", NOW, NOW))
        await uow.sessions.record_activity("s1", LATER, message_count=9)
        await uow.rollback()
        assert await uow.sessions.get("s2") is None
        await uow.sessions.add(Session("s3", "coder", NOW, NOW))
        await uow.commit()
    async with uows.reader(TENANT) as reader:
        kept = await reader.sessions.page_by_activity(None, 10)
    assert sorted(s.session_id for s in kept) == ["s1", "s3"]
    assert [s.message_count for s in kept] == [0, 0]


async def test_two_units_of_work_open_at_once_keep_each_others_commits(
    uows: UnitOfWorkFactory,
) -> None:
    await add_sessions(uows, "s1")
    async with uows(TENANT) as first, uows(TENANT) as second:
        await first.sessions.add(Session("s2", "coder", NOW, NOW))
        assert await first.sessions.claim_turn("s1", "t1") is None
        await first.commit()
        # Opened before that commit, working after it: it sees it and keeps it.
        assert await second.sessions.get("s2") is not None
        assert await second.sessions.claim_turn("s1", "t2") == "t1"
        await second.sessions.add(Session("s3", "coder", NOW, NOW))
        await second.commit()
    async with uows.reader(TENANT) as reader:
        listed = await reader.sessions.page_by_activity(None, 10)
        s1 = await reader.sessions.get("s1")
    assert sorted(s.session_id for s in listed) == ["s1", "s2", "s3"]
    assert s1 is not None and s1.running_turn_id == "t1"


# -- tenants ---------------------------------------------------------------------------------


async def _fill(uows: UnitOfWorkFactory, tenant: str) -> None:
    """One of everything, in session s1, turn t1 (message, approval and call ids too)."""
    call = ToolCallRecord("call-1", "write_file", {"path": "a.md"})
    async with committing(uows, tenant) as uow:
        await uow.sessions.add(Session("s1", "coder", NOW, NOW))
        await uow.sessions.switch_agent("s1", AgentSwitch("coder", "architect", "why", NOW))
        turn = a_turn("t1", client_message_id="client-1", owner="me", lease_expires_at=EARLIER)
        await uow.turns.add(turn, every_kind_of_chunk(turn))
        await uow.messages.add(Message("m1", "s1", 1, Role.ASSISTANT, "", NOW, tool_calls=(call,)))
        await uow.messages.add(Message("m2", "s1", 2, Role.TOOL, "ok", NOW, tool_call_id="call-1"))
        await uow.approvals.add(an_approval("call-1"))
        grant = ApprovalGrant(f"grant-{tenant}", "s1", "write_file", (), NOW, "t1", "call-1")
        await uow.approvals.add_grant(grant)
        await uow.events.add(an_event(EventType.TURN_STARTED))


async def _everything_seen(uow: ReadUnitOfWork | UnitOfWork) -> dict[str, object]:
    """Every read of the ports, for session s1, turn t1, call call-1."""
    t1 = a_turn("t1")
    every_type: frozenset[EventType] = frozenset()
    recent_switches, switch_count = await uow.sessions.recent_agent_switches("s1", 10)
    recent_of, count_of = (await uow.sessions.recent_agent_switches_of(["s1"], 10))["s1"]
    return {
        "sessions.get": await uow.sessions.get("s1"),
        "sessions.recent_agent_switches": recent_switches,
        "sessions.recent_agent_switches (count)": switch_count,
        "sessions.recent_agent_switches_of": recent_of,
        "sessions.recent_agent_switches_of (count)": count_of,
        "sessions.agent_switches": await uow.sessions.agent_switches("s1", 0, 10),
        "sessions.page_by_activity": await uow.sessions.page_by_activity(None, 10),
        "turns.get": await uow.turns.get("t1"),
        "turns.find_by_client_message_id": await uow.turns.find_by_client_message_id(
            "s1", "client-1"
        ),
        "turns.chunks": comparable(await uow.turns.chunks(t1)),
        "turns.abandoned_candidates": await uow.turns.abandoned_candidates(NOW, "me"),
        "messages.recent": await uow.messages.recent("s1", 10),
        "messages.page": await uow.messages.page("s1", 0, 10),
        "messages.find_tool_call": await uow.messages.find_tool_call("s1", "call-1"),
        "messages.find_tool_result": await uow.messages.find_tool_result("s1", "call-1"),
        "approvals.get": await uow.approvals.get("s1", "call-1"),
        "approvals.open_for_session": await uow.approvals.open_for_session("s1"),
        "approvals.pending_page": await uow.approvals.pending_page("s1", NOW, None, 10),
        "approvals.count_pending": await uow.approvals.count_pending("s1", NOW),
        "approvals.count_pending_of": (await uow.approvals.count_pending_of(["s1"], NOW))["s1"],
        "approvals.grants": await uow.approvals.grants("s1"),
        "approvals.grants_of": (await uow.approvals.grants_of(["s1"]))["s1"],
        "events.after": await uow.events.after(0, session_id=None, types=every_type, limit=10),
        "events.last_id": await uow.events.last_id(),
    }


async def test_another_tenant_sees_nothing_of_a_tenants_rows(uows: UnitOfWorkFactory) -> None:
    await _fill(uows, TENANT)
    async with uows.reader(TENANT) as reader:
        theirs = await _everything_seen(reader)
    assert [read for read, found in theirs.items() if not found] == []  # found by the tenant
    async with uows(OTHER_TENANT) as uow:
        seen = await _everything_seen(uow)
    assert {read: found for read, found in seen.items() if found} == {}
    async with uows.reader(OTHER_TENANT) as reader:
        assert await _everything_seen(reader) == seen


async def test_another_tenant_changes_nothing_of_a_tenants_rows(uows: UnitOfWorkFactory) -> None:
    await _fill(uows, TENANT)
    async with uows.reader(TENANT) as reader:
        before = await _everything_seen(reader)
    t1 = a_turn("t1", status=TurnStatus.FAILED)
    approval = an_approval("call-1")
    approval.close(ApprovalStatus.REJECTED, NOW)
    async with committing(uows, OTHER_TENANT) as uow:
        assert await uow.sessions.claim_turn("s1", "theirs") is not None
        await uow.sessions.record_activity("s1", LATER, message_count=7)
        await uow.sessions.mark_deleted("s1", LATER)
        await uow.turns.save(t1, [])
        assert await uow.turns.end(t1, []) is False
        await uow.turns.request_cancel("t1")
        assert await uow.turns.interrupt([a_turn("t1")], LATER) == []
        await uow.messages.replace_tool_call("m1", ToolCallRecord("call-1", "delete_file", {}))
        await uow.approvals.save(approval)
    async with uows.reader(TENANT) as reader:
        assert await _everything_seen(reader) == before
    # And no cancellation was asked of its turn.
    assert await uows.renew_leases([(TENANT, "t1")], "", LATER) == []


# -- the read-only unit of work --------------------------------------------------------------


async def test_a_reader_sees_committed_rows_in_one_snapshot(uows: UnitOfWorkFactory) -> None:
    await add_sessions(uows, "s1")
    async with uows.reader(TENANT) as reader:
        assert not hasattr(reader, "commit")
        assert await reader.sessions.get("s1") is not None
        await add_sessions(uows, "s2")  # committed after the reader's first read
        assert await reader.sessions.get("s2") is None
        assert [s.session_id for s in await reader.sessions.page_by_activity(None, 10)] == ["s1"]
    async with uows.reader(TENANT) as reader:
        assert await reader.sessions.get("s2") is not None


Write = Callable[[ReadUnitOfWork], Awaitable[object]]
WRITES: dict[str, Write] = {
    "sessions.add": lambda u: u.sessions.add(Session("s2", "coder", NOW, NOW)),
    "sessions.claim_turn": lambda u: u.sessions.claim_turn("s1", "t9"),
    "sessions.record_activity": lambda u: u.sessions.record_activity("s1", LATER),
    "sessions.release_turn": lambda u: u.sessions.release_turn("s1", "t1", LATER),
    "sessions.switch_agent": lambda u: u.sessions.switch_agent(
        "s1", AgentSwitch("architect", "coder", "why", LATER)
    ),
    "sessions.mark_deleted": lambda u: u.sessions.mark_deleted("s1", LATER),
    "turns.add": lambda u: u.turns.add(a_turn("t9")),
    "turns.save": lambda u: u.turns.save(a_turn("t1", status=TurnStatus.FAILED)),
    "turns.end": lambda u: u.turns.end(a_turn("t1", status=TurnStatus.FAILED), []),
    "turns.request_cancel": lambda u: u.turns.request_cancel("t1"),
    "turns.interrupt": lambda u: u.turns.interrupt([a_turn("t1")], LATER),
    "messages.add": lambda u: u.messages.add(a_message("m9", 9)),
    "messages.replace_tool_call": lambda u: u.messages.replace_tool_call(
        "m1", ToolCallRecord("call-1", "delete_file", {})
    ),
    "approvals.add": lambda u: u.approvals.add(an_approval("call-9")),
    "approvals.save": lambda u: u.approvals.save(
        an_approval("call-1", status=ApprovalStatus.EXPIRED)
    ),
}


async def test_a_reader_cannot_write_and_what_it_tried_is_not_stored(
    uows: UnitOfWorkFactory,
) -> None:
    await _fill(uows, TENANT)
    async with uows.reader(TENANT) as reader:
        before = await _everything_seen(reader)
    refused = []
    for name, write in WRITES.items():
        async with uows.reader(TENANT) as reader:  # one each: a refused write may end it
            try:
                await write(reader)
            except StorageUnavailable:
                refused.append(name)
    assert refused == list(WRITES)
    async with uows.reader(TENANT) as reader:
        assert await _everything_seen(reader) == before
        assert await reader.sessions.get("s2") is None
        assert await reader.turns.get("t9") is None
