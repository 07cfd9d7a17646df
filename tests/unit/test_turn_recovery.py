from datetime import UTC, datetime, timedelta

from agent_runtime.application.live_turns import LiveTurns
from agent_runtime.application.turn_recovery import TurnRecovery
from agent_runtime.domain.events import EventType
from agent_runtime.domain.model import Session, Turn, TurnStatus
from tests.fakes import FakeUnitOfWorkFactory

NOW = datetime(2026, 6, 1, tzinfo=UTC)


async def test_recovery_reclaims_abandoned_turns_and_never_a_live_one() -> None:
    uows = FakeUnitOfWorkFactory()
    live = LiveTurns()
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
    live.open("mine_live", "mine_live")

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
