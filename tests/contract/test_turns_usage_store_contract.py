"""The store contract (test_store_contract.py) for turns as resources, usage, superseded
messages, approval rules and grants: the same cases on the fake, SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import Any

import pytest

from agent_runtime.application.store_ports import UnitOfWorkFactory
from agent_runtime.domain.approval import ApprovalGrant, ApprovalRule, RuleAction
from agent_runtime.domain.errors import WriteConflict
from agent_runtime.domain.model import (
    Message,
    Role,
    Session,
    StopReason,
    Turn,
    TurnError,
    TurnStatus,
    Usage,
    UsageTotals,
)
from agent_runtime.domain.usage import UsageGroup, UsageGroupBy
from tests.contract.test_store_contract import (
    EARLIER,
    LATER,
    NOW,
    OTHER_TENANT,
    TENANT,
    a_message,
    a_turn,
    add_sessions,
    an_approval,
    committing,
    uows,
)

__all__ = ["uows"]  # the store fixture, one per backend


def started(turn_id: str, at: datetime, session_id: str = "s1", **fields: Any) -> Turn:
    return dataclasses.replace(a_turn(turn_id, session_id, **fields), started_at=at)


# -- sessions count the usage of their ended turns ---------------------------------------------


async def test_a_session_adds_up_the_usage_counted_with_its_turns_end(
    uows: UnitOfWorkFactory,
) -> None:
    await add_sessions(uows, "s1", "s2")
    async with committing(uows) as uow:
        assert await uow.sessions.claim_turn("s1", "t1") is None
        await uow.sessions.release_turn("s1", "t1", LATER, count_usage=Usage(3, 4))
    async with committing(uows) as uow:
        await uow.sessions.release_turn("s1", "t-other", LATER, count_usage=Usage(10, 1))
        await uow.sessions.record_activity("s1", LATER, message_count=2)  # counts nothing
    async with uows.reader(TENANT) as reader:
        s1, s2 = await reader.sessions.get("s1"), await reader.sessions.get("s2")
        listed = await reader.sessions.page_by_activity(None, 10)
    assert s1 is not None and s1.usage == UsageTotals(13, 5, 2)
    assert s1.running_turn_id is None and s1.message_count == 2
    assert s2 is not None and s2.usage == UsageTotals()
    assert [s.usage for s in listed] == [UsageTotals(13, 5, 2), UsageTotals()]


# -- turns as resources ----------------------------------------------------------------------


async def test_a_turns_counts_and_timings_read_back_as_saved(uows: UnitOfWorkFactory) -> None:
    await add_sessions(uows, "s1")
    turn = a_turn("t1")
    async with committing(uows) as uow:
        await uow.turns.add(turn)
    turn.model_calls, turn.tool_calls, turn.first_token_ms = 3, 2, 1234
    turn.fail(TurnError("MODEL_UNAVAILABLE", "down"), Usage(7, 8), LATER)
    async with committing(uows) as uow:
        await uow.turns.save(turn)
    async with uows.reader(TENANT) as reader:
        assert await reader.turns.get("t1") == turn


async def test_a_sessions_turns_are_paged_oldest_first_after_a_cursor(
    uows: UnitOfWorkFactory,
) -> None:
    await add_sessions(uows, "s1", "s2")
    async with committing(uows) as uow:
        await uow.turns.add(started("t3", LATER))
        await uow.turns.add(started("t2", NOW))
        await uow.turns.add(started("t1", NOW))
        await uow.turns.add(started("t0", EARLIER))
        await uow.turns.add(started("x", NOW, "s2"))
    async with uows.reader(TENANT) as reader:
        first = await reader.turns.page("s1", None, 2)
        second = await reader.turns.page("s1", (NOW, "t1"), 2)
        done = await reader.turns.page("s1", (LATER, "t3"), 2)
    assert [t.turn_id for t in first] == ["t0", "t1"]
    assert [t.turn_id for t in second] == ["t2", "t3"]
    assert done == []
    async with uows.reader(OTHER_TENANT) as other:
        assert await other.turns.page("s1", None, 10) == []


# -- superseded messages ---------------------------------------------------------------------


async def test_superseded_messages_are_kept_but_hidden_from_the_model(
    uows: UnitOfWorkFactory,
) -> None:
    await add_sessions(uows, "s1")
    history = [
        a_message("m1", 1),
        Message("m2", "s1", 2, Role.ASSISTANT, "first answer", NOW),
        Message("m3", "s1", 3, Role.USER, "again", NOW),
        Message("m4", "s1", 4, Role.ASSISTANT, "second answer", NOW),
    ]
    async with committing(uows) as uow:
        for message in history:
            await uow.messages.add(message)
        assert (await uow.messages.last_user_message("s1")) == history[2]
        assert await uow.messages.supersede_from("s1", 3, "t-edit") == 2
        # What it wrote is what it reads, before the commit (the turn reloads its history).
        assert [m.message_id for m in await uow.messages.recent("s1", 10)] == ["m1", "m2"]
        await uow.messages.add(Message("m5", "s1", 5, Role.USER, "edited", NOW))
    async with committing(uows) as uow:
        assert await uow.messages.supersede_from("s1", 2, "t-regen") == 2  # m2 and m5 only
    async with uows.reader(TENANT) as reader:
        recent = await reader.messages.recent("s1", 10)
        visible = await reader.messages.page("s1", 0, 10)
        everything = await reader.messages.page("s1", 0, 10, include_superseded=True)
        after = await reader.messages.page("s1", 2, 10, include_superseded=True)
        last_user = await reader.messages.last_user_message("s1")
        m3 = await reader.messages.get("s1", "m3")
        missing = await reader.messages.get("s1", "nope")
    assert [m.message_id for m in recent] == ["m1"] == [m.message_id for m in visible]
    assert [(m.message_id, m.superseded_by_turn_id) for m in everything] == [
        ("m1", None),
        ("m2", "t-regen"),
        ("m3", "t-edit"),
        ("m4", "t-edit"),
        ("m5", "t-regen"),
    ]
    assert [m.message_id for m in after] == ["m3", "m4", "m5"]
    assert last_user is not None and last_user.message_id == "m1"
    assert m3 is not None and m3.superseded_by_turn_id == "t-edit"
    assert missing is None


# -- approval rules and grants ---------------------------------------------------------------


async def test_an_approval_keeps_the_rule_that_asked(uows: UnitOfWorkFactory) -> None:
    await add_sessions(uows, "s1")
    rule = ApprovalRule("execute_*", RuleAction.ASK, (("command", "git *"), ("cwd", "src*")))
    asked = an_approval("call-1", rule=rule, rule_index=3)
    legacy = an_approval("call-2")
    async with committing(uows) as uow:
        await uow.approvals.add(asked)
        await uow.approvals.add(legacy)
    async with uows.reader(TENANT) as reader:
        assert await reader.approvals.get("s1", "call-1") == asked
        assert await reader.approvals.get("s1", "call-2") == legacy


async def test_grants_are_listed_oldest_first_until_revoked(uows: UnitOfWorkFactory) -> None:
    await add_sessions(uows, "s1", "s2")
    later = ApprovalGrant("g2", "s1", "write_file", (("path", "docs/*"),), LATER, "t2", "c2")
    first = ApprovalGrant("g1", "s1", "execute_command", (), NOW, "t1", "c1")
    elsewhere = ApprovalGrant("g3", "s2", "execute_command", (), NOW, "t3", "c3")
    async with committing(uows) as uow:
        for grant in (later, first, elsewhere):
            await uow.approvals.add_grant(grant)
    async with uows(TENANT) as uow:
        with pytest.raises(WriteConflict):
            await uow.approvals.add_grant(first)
    async with committing(uows) as uow:
        assert await uow.approvals.grants("s1") == [first, later]
        assert await uow.approvals.revoke_grant("s1", "g1", LATER)
        assert not await uow.approvals.revoke_grant("s1", "g1", LATER)  # once
        assert not await uow.approvals.revoke_grant("s1", "g3", LATER)  # another session's
        assert not await uow.approvals.revoke_grant("s1", "missing", LATER)
    async with uows.reader(TENANT) as reader:
        assert await reader.approvals.grants("s1") == [later]
        assert await reader.approvals.grants("s2") == [elsewhere]
        # Several sessions in one read (a page of ListSessions): each as grants() has it.
        assert await reader.approvals.grants_of(["s2", "s1", "none"]) == {
            "s1": [later],
            "s2": [elsewhere],
            "none": [],
        }
        assert await reader.approvals.grants_of([]) == {}
    async with uows(OTHER_TENANT) as uow:
        assert await uow.approvals.grants("s1") == []
        assert await uow.approvals.grants_of(["s1", "s2"]) == {"s1": [], "s2": []}
        assert not await uow.approvals.revoke_grant("s1", "g2", LATER)


# -- usage and what quotas read ----------------------------------------------------------------


async def test_daily_tokens_add_up_per_tenant_and_day(uows: UnitOfWorkFactory) -> None:
    async with committing(uows) as uow:
        await uow.usage.count_turn("2026-05-01", Usage(10, 5))
        await uow.usage.count_turn("2026-05-01", Usage(1, 2))
        await uow.usage.count_turn("2026-05-02", Usage(100, 0))
    async with committing(uows, OTHER_TENANT) as uow:
        await uow.usage.count_turn("2026-05-01", Usage(1000, 1000))
    async with committing(uows) as uow:
        await uow.usage.count_turn("2026-05-01", Usage(0, 1))  # the row exists: added to
    async with uows.reader(TENANT) as reader:
        assert await reader.usage.tokens_on("2026-05-01") == 19
        assert await reader.usage.tokens_on("2026-05-02") == 100
        assert await reader.usage.tokens_on("2026-05-03") == 0


async def test_running_and_recent_turns_are_counted_per_tenant(uows: UnitOfWorkFactory) -> None:
    await add_sessions(uows, "s1")
    await add_sessions(uows, "s1", tenant=OTHER_TENANT)
    async with committing(uows) as uow:
        await uow.turns.add(started("t1", EARLIER))
        await uow.turns.add(started("t2", NOW))
        await uow.turns.add(started("t3", LATER, status=TurnStatus.COMPLETED))
    async with committing(uows, OTHER_TENANT) as uow:
        await uow.turns.add(started("o1", NOW))
    async with uows(TENANT) as uow:
        await uow.usage.lock_admissions()
        assert await uow.usage.running_turns() == 2
        assert await uow.usage.turns_started_since(NOW) == (2, NOW)
        assert await uow.usage.turns_started_since(LATER + timedelta(seconds=1)) == (0, None)
        assert await uow.usage.turns_started_since(EARLIER) == (3, EARLIER)


async def test_usage_reports_the_ended_turns_in_a_range_grouped(uows: UnitOfWorkFactory) -> None:
    await add_sessions(uows, "s1", "s2")
    day2 = NOW + timedelta(days=1)

    def ended(turn_id: str, session: str, model: str, at: object, usage: Usage) -> object:
        turn = a_turn(turn_id, session)
        turn.model = model
        turn.complete(StopReason.END_TURN, usage, at)  # type: ignore[arg-type]
        return turn

    turns = [
        ended("t1", "s1", "m-a", NOW, Usage(1, 2)),
        ended("t2", "s1", "m-b", NOW + timedelta(hours=1), Usage(10, 20)),
        ended("t3", "s2", "m-a", day2, Usage(100, 200)),
        ended("t4", "s2", "m-a", day2 + timedelta(days=1), Usage(1000, 0)),
    ]
    failed = a_turn("t5", "s2")
    failed.fail(TurnError("X", "x"), Usage(5, 5), day2)
    interrupted = a_turn("t6", "s1", status=TurnStatus.INTERRUPTED, finished_at=day2)
    running = a_turn("t7", "s1")
    async with committing(uows) as uow:
        for turn in (*turns, failed, interrupted, running):
            await uow.turns.add(turn)  # type: ignore[arg-type]
    async with committing(uows, OTHER_TENANT) as uow:
        await uow.sessions.add(Session("s1", "coder", NOW, NOW))
        await uow.turns.add(ended("o1", "s1", "m-a", NOW, Usage(7, 7)))  # type: ignore[arg-type]

    async with uows.reader(TENANT) as reader:
        everything = await reader.usage.report(None, None, UsageGroupBy.NONE)
        by_model = await reader.usage.report(NOW, day2 + timedelta(days=1), UsageGroupBy.MODEL)
        by_day = await reader.usage.report(None, None, UsageGroupBy.DAY)
        by_session = await reader.usage.report(day2, None, UsageGroupBy.SESSION)
        nothing = await reader.usage.report(EARLIER, NOW, UsageGroupBy.MODEL)
    assert everything.total == UsageTotals(1116, 227, 5)
    assert everything.groups == []
    assert by_model.total == UsageTotals(116, 227, 4)
    assert by_model.groups == [
        UsageGroup("m", UsageTotals(5, 5, 1)),  # the failed turn's
        UsageGroup("m-a", UsageTotals(101, 202, 2)),
        UsageGroup("m-b", UsageTotals(10, 20, 1)),
    ]
    assert by_day.groups == [
        UsageGroup("2026-05-01", UsageTotals(11, 22, 2)),
        UsageGroup("2026-05-02", UsageTotals(105, 205, 2)),
        UsageGroup("2026-05-03", UsageTotals(1000, 0, 1)),
    ]
    assert by_session.groups == [UsageGroup("s2", UsageTotals(1105, 205, 3))]
    assert nothing.total == UsageTotals() and nothing.groups == []


async def test_usage_groups_are_paged_by_key(uows: UnitOfWorkFactory) -> None:
    await add_sessions(uows, "s1")
    async with committing(uows) as uow:
        for number, model in enumerate(["m-c", "m-a", "m-d", "m-b"]):
            turn = a_turn(f"t{number}", "s1")
            turn.model = model
            turn.complete(StopReason.END_TURN, Usage(number, 1), NOW)
            await uow.turns.add(turn)
    async with uows.reader(TENANT) as reader:
        first = await reader.usage.report(None, None, UsageGroupBy.MODEL, limit=2)
        rest = await reader.usage.report(None, None, UsageGroupBy.MODEL, after="m-b", limit=2)
        past = await reader.usage.report(None, None, UsageGroupBy.MODEL, after="m-d")
    assert [g.key for g in first.groups] == ["m-a", "m-b"]
    assert [g.key for g in rest.groups] == ["m-c", "m-d"]
    assert past.groups == []
    assert first.total == rest.total == past.total == UsageTotals(6, 4, 4)
