from datetime import UTC, datetime, timedelta

from agent_runtime.application.live_turns import LiveTurnRegistry
from agent_runtime.application.turn_recovery import INTERRUPTION_SEQ_GAP, TurnRecovery
from agent_runtime.application.turn_streams import TurnStreams
from agent_runtime.domain.chunks import (
    AgentSwitched,
    Chunk,
    TurnCompleted,
    TurnError,
    TurnStarted,
)
from agent_runtime.domain.errors import TurnAbandoned
from agent_runtime.domain.events import EventType
from agent_runtime.domain.model import Session, StopReason, Turn, TurnStatus, Usage
from agent_runtime.domain.tenants import DEFAULT_TENANT
from tests.fakes import FakeDatabase, FakeUnitOfWorkFactory

NOW = datetime(2026, 6, 1, tzinfo=UTC)


async def test_recovery_reclaims_abandoned_turns_and_never_a_live_one() -> None:
    uows = FakeUnitOfWorkFactory()
    live = LiveTurnRegistry()
    later = NOW + timedelta(seconds=30)
    cases = {
        "mine_live": ("me", later),
        "mine_orphaned": ("me", later),
        "theirs_expired": ("them", NOW - timedelta(seconds=1)),
        "theirs_running": ("them", later),
    }
    for turn_id, (owner, lease) in cases.items():
        uows.db.sessions[turn_id] = Session(turn_id, "coder", NOW, NOW, running_turn_id=turn_id)
        uows.db.turns[turn_id] = Turn(
            turn_id, turn_id, "coder", "m", NOW, owner=owner, lease_expires_at=lease
        )
    live.open("mine_live", "mine_live", tenant_id=DEFAULT_TENANT)

    recovery = TurnRecovery(uows, live, owner="me", lease=timedelta(seconds=30), clock=lambda: NOW)
    interrupted = await recovery.recover()

    assert sorted(t.turn_id for t in interrupted) == ["mine_orphaned", "theirs_expired"]
    status = {t: uows.db.turns[t].status for t in cases}
    assert status == {
        "mine_live": TurnStatus.RUNNING,
        "mine_orphaned": TurnStatus.INTERRUPTED,
        "theirs_expired": TurnStatus.INTERRUPTED,
        "theirs_running": TurnStatus.RUNNING,
    }
    assert uows.db.sessions["mine_live"].running_turn_id == "mine_live"
    assert uows.db.sessions["mine_orphaned"].running_turn_id is None
    assert [e.event.type for e in uows.db.events] == [EventType.TURN_FAILED] * 2


async def test_recovery_and_lease_renewal_reach_every_tenant() -> None:
    uows = FakeUnitOfWorkFactory()
    live = LiveTurnRegistry()
    for tenant in ("tenant-a", "tenant-b"):
        db = uows.databases.setdefault(tenant, FakeDatabase())
        for turn_id, lease in (("gone", NOW - timedelta(seconds=1)), ("alive", NOW)):
            db.sessions[turn_id] = Session(turn_id, "coder", NOW, NOW, running_turn_id=turn_id)
            db.turns[turn_id] = Turn(
                turn_id, turn_id, "coder", "m", NOW, owner="me", lease_expires_at=lease
            )
        # The same ids in both tenants (the server never issues that, but neither tenant's
        # turns may be mistaken for the other's).
    live.open("alive", "alive", tenant_id="tenant-b")
    recovery = TurnRecovery(uows, live, owner="me", lease=timedelta(seconds=30), clock=lambda: NOW)

    await recovery.renew()
    interrupted = await recovery.recover()

    a, b = uows.databases["tenant-a"], uows.databases["tenant-b"]
    assert len(interrupted) == 3  # both "gone" turns, and A's "alive" (no task runs it here)
    assert a.turns["gone"].status is b.turns["gone"].status is TurnStatus.INTERRUPTED
    assert a.turns["alive"].status is TurnStatus.INTERRUPTED
    assert b.turns["alive"].status is TurnStatus.RUNNING
    assert b.turns["alive"].lease_expires_at == NOW + timedelta(seconds=30)
    assert [e.event.type for e in a.events] == [EventType.TURN_FAILED] * 2


async def test_lease_renewal_is_one_transaction_whatever_the_tenants() -> None:
    uows = FakeUnitOfWorkFactory()
    live = LiveTurnRegistry()
    tenants = [f"tenant-{n}" for n in range(5)]
    for tenant in tenants:
        db = uows.databases.setdefault(tenant, FakeDatabase())
        turn_id = f"{tenant}-turn"
        db.sessions[turn_id] = Session(turn_id, "coder", NOW, NOW, running_turn_id=turn_id)
        db.turns[turn_id] = Turn(turn_id, turn_id, "coder", "m", NOW, owner="me")
        live.open(turn_id, turn_id, tenant_id=tenant)
    # CancelTurn through another process, in one tenant.
    uows.databases["tenant-3"].cancel_requested.add("tenant-3-turn")
    recovery = TurnRecovery(uows, live, owner="me", lease=timedelta(seconds=30), clock=lambda: NOW)

    await recovery.renew()

    assert uows.lease_renewals == 1
    assert uows.opened_for == []  # no tenant's unit of work
    for tenant in tenants:
        turn = uows.databases[tenant].turns[f"{tenant}-turn"]
        assert turn.lease_expires_at == NOW + timedelta(seconds=30)
        running = live.get(f"{tenant}-turn")
        assert running is not None
        assert running.cancel_requested is (tenant == "tenant-3")


async def test_a_cancel_request_reaches_only_the_tenant_it_was_made_in() -> None:
    uows = FakeUnitOfWorkFactory()
    live = LiveTurnRegistry()
    db = uows.databases.setdefault("tenant-a", FakeDatabase())
    db.turns["t"] = Turn("t", "s", "coder", "m", NOW, owner="me")
    db.cancel_requested.add("t")
    # A live turn of the same id in another tenant (the server never issues that).
    live.open("s", "t", tenant_id="tenant-b")
    recovery = TurnRecovery(uows, live, owner="me", lease=timedelta(seconds=30), clock=lambda: NOW)

    await recovery.renew()

    running = live.get("t")
    assert running is not None and not running.cancel_requested


async def test_running_but_healthy_turns_open_no_tenant_transaction() -> None:
    uows = FakeUnitOfWorkFactory()
    live = LiveTurnRegistry()
    later = NOW + timedelta(seconds=30)
    for tenant in ("tenant-a", "tenant-b", "tenant-c"):
        db = uows.databases.setdefault(tenant, FakeDatabase())
        # Another process's turn with a good lease, and one of ours that runs here.
        for turn_id, owner in ((f"{tenant}-theirs", "them"), (f"{tenant}-mine", "me")):
            db.sessions[turn_id] = Session(turn_id, "coder", NOW, NOW, running_turn_id=turn_id)
            db.turns[turn_id] = Turn(
                turn_id, turn_id, "coder", "m", NOW, owner=owner, lease_expires_at=later
            )
        live.open(f"{tenant}-mine", f"{tenant}-mine", tenant_id=tenant)
    recovery = TurnRecovery(uows, live, owner="me", lease=timedelta(seconds=30), clock=lambda: NOW)

    assert await recovery.recover() == []
    assert uows.opened_for == []

    # One lease runs out in tenant B: only B's transaction is opened, and it reclaims it.
    uows.databases["tenant-b"].turns["tenant-b-theirs"].lease_expires_at = NOW - timedelta(1)
    interrupted = await recovery.recover()
    assert [t.turn_id for t in interrupted] == ["tenant-b-theirs"]
    assert uows.opened_for == ["tenant-b"]


async def test_an_interrupted_turn_ends_like_a_failed_one_after_every_seq_a_client_saw() -> None:
    uows = FakeUnitOfWorkFactory()
    expired = NOW - timedelta(seconds=1)
    uows.db.sessions["s1"] = Session("s1", "coder", NOW, NOW, running_turn_id="t1")
    uows.db.turns["t1"] = Turn(
        "t1", "s1", "coder", "m", NOW, usage=Usage(3, 4), owner="them", lease_expires_at=expired
    )
    persisted = [
        Chunk("s1", "t1", 1, TurnStarted("coder", "msg-1")),
        Chunk("s1", "t1", 2, AgentSwitched("coder", "architect", "plans first")),
    ]
    uows.db.chunks["t1"] = list(persisted)
    recovery = TurnRecovery(
        uows, LiveTurnRegistry(), owner="me", lease=timedelta(30), clock=lambda: NOW
    )

    [interrupted] = await recovery.recover()

    stored = uows.db.turns["t1"]
    assert interrupted == stored
    assert (stored.status, stored.stop_reason, stored.finished_at) == (
        TurnStatus.INTERRUPTED,
        StopReason.ERROR,
        NOW,
    )
    assert stored.error is not None and stored.error.reason == "TURN_INTERRUPTED"
    log = uows.db.chunks["t1"]
    assert log[:2] == persisted
    error, completed = log[2:]
    assert [error.seq, completed.seq] == [2 + INTERRUPTION_SEQ_GAP, 3 + INTERRUPTION_SEQ_GAP]
    assert isinstance(error.body, TurnError) and isinstance(error.body.error, TurnAbandoned)
    assert (error.body.error.reason, error.body.error.retryable) == ("TURN_INTERRUPTED", True)
    assert completed.body == TurnCompleted(StopReason.ERROR, Usage(3, 4))
    assert await recovery.recover() == []  # ended once
    assert len(uows.db.chunks["t1"]) == 4

    # A client that saw deltas up to seq 1000 (never persisted) still gets the end.
    streams = TurnStreams(uows, LiveTurnRegistry())
    resumed = [c async for c in streams.follow("s1", "t1", 1000, tenant_id=DEFAULT_TENANT)]
    assert [(c.seq, type(c.body)) for c in resumed] == [
        (error.seq, TurnError),
        (completed.seq, TurnCompleted),
    ]
