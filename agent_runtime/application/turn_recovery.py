"""Leases on running turns: renewed while this process lives, reclaimed when a process dies.

A running turn's lease is extended every interval by the process running it: one
transaction for all its turns, whatever their tenants (one UPDATE per few hundred turns),
not one per tenant. A turn whose lease ran out belongs to a dead process: any process marks
it INTERRUPTED, ends its replay log as a failed turn's ends (Error{TURN_INTERRUPTED,
retryable} and TurnCompleted{ERROR}, so every replay, follower and retry sees the end) and
frees its session. The same renewal carries CancelTurn requests made through another
process.

Reclaiming runs every interval too, so it costs one read across tenants when nothing is
abandoned: a tenant's transaction is opened only for a tenant that has a candidate turn
(expired lease, or ours with no task here), never for one whose turns are merely running.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from agent_runtime.application.ids import Clock, utc_now
from agent_runtime.application.live_turns import LiveTurnRegistry
from agent_runtime.application.store_ports import UnitOfWork, UnitOfWorkFactory
from agent_runtime.domain import chunks
from agent_runtime.domain.errors import TurnAbandoned
from agent_runtime.domain.events import Event, EventType
from agent_runtime.domain.model import StopReason, Turn, TurnError

log = logging.getLogger(__name__)

# How far after the last persisted chunk an interrupted turn's end comes. Deltas are never
# persisted, so a client may have seen seqs beyond the log's last chunk; this is more than a
# turn streams between two of its commits (the deltas of one model call, each at least one
# character of an answer AGENT_RUNTIME_MAX_ANSWER_BYTES bounds), so a client that resumes
# after the last delta it saw still gets the end. Far below 2**53: JavaScript numbers hold it.
INTERRUPTION_SEQ_GAP = 2**32
INTERRUPTED_MESSAGE = "the process running the turn stopped before the turn ended"


class TurnRecovery:
    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        registry: LiveTurnRegistry,
        *,
        owner: str,
        lease: timedelta,
        clock: Clock = utc_now,
    ) -> None:
        self._uow_factory = uow_factory
        self._registry = registry
        self._owner = owner
        self._lease = lease
        self._now = clock

    async def recover(self) -> list[Turn]:
        """Interrupt abandoned turns: expired leases, and ours that no task here runs (left by
        an earlier life of this instance, or by a turn that could not record its end)."""
        candidates = await self._uow_factory.abandoned_turn_candidates(self._now(), self._owner)
        # Our turns that run here are candidates only by owner: skip those without a
        # transaction. Each tenant left is checked again inside its own transaction.
        tenants = sorted(
            {tenant for tenant, turn_id in candidates if not self._runs_here(tenant, turn_id)}
        )
        interrupted: list[Turn] = []
        for tenant_id in tenants:
            interrupted += await self._recover_tenant(tenant_id)
        return interrupted

    async def _recover_tenant(self, tenant_id: str) -> list[Turn]:
        now = self._now()
        async with self._uow_factory(tenant_id) as uow:
            candidates = await uow.turns.abandoned_candidates(now, self._owner)
            # Asked only now, inside the transaction: a turn that committed its start after
            # a snapshot taken earlier would look abandoned while it runs. (A turn registers
            # itself as live before its first commit.)
            abandoned = [t for t in candidates if not self._runs_here(tenant_id, t.turn_id)]
            turns = [
                await _end_interrupted(uow, turn, now)
                for turn in await uow.turns.interrupt(abandoned, now)
            ]
            await uow.commit()
        for turn in turns:
            log.warning(
                "turn %s of session %s (tenant %s) was left running by %s; marked interrupted",
                turn.turn_id,
                turn.session_id,
                tenant_id,
                turn.owner or "an unknown process",
            )
        return turns

    def _runs_here(self, tenant_id: str, turn_id: str) -> bool:
        live = self._registry.get(turn_id)
        return live is not None and live.tenant_id == tenant_id

    async def renew(self) -> None:
        """Extend our running turns' leases; act on cancel requests made elsewhere."""
        running = [(live.tenant_id, live.turn_id) for live in self._registry.all()]
        to_cancel = await self._uow_factory.renew_leases(
            running, self._owner, self._now() + self._lease
        )
        for tenant_id, turn_id in to_cancel:
            live = self._registry.get(turn_id)
            if live is not None and live.tenant_id == tenant_id and not live.cancel_requested:
                log.info("turn %s: cancel requested through another process", turn_id)
                live.cancel()

    async def run(self, interval: float) -> None:
        """Renew and reclaim every `interval` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.renew()
                await self.recover()
            except Exception:  # keep going: a failed round is retried at the next interval
                log.exception("lease renewal failed; retrying in %.1fs", interval)


async def _end_interrupted(uow: UnitOfWork, claimed: Turn, now: datetime) -> Turn:
    """The turn `interrupt` claimed, recorded as ended: its row says why, and its replay log
    ends as a failed turn's does."""
    turn = await uow.turns.get(claimed.turn_id) or claimed  # as its last commit left it
    replay_log = await uow.turns.chunks(turn)
    error = TurnAbandoned(INTERRUPTED_MESSAGE)
    turn.interrupt(TurnError(error.reason, error.message), now)
    await uow.turns.save(turn, [*replay_log, *interruption_ending(turn, replay_log, error)])
    await uow.events.add(
        Event(
            EventType.TURN_FAILED,
            turn.session_id,
            now,
            turn.turn_id,
            {"reason": error.reason, "message": error.message},
        )
    )
    return turn


def interruption_ending(
    turn: Turn, replay_log: list[chunks.Chunk], error: TurnAbandoned
) -> list[chunks.Chunk]:
    """Error and TurnCompleted{ERROR}, INTERRUPTION_SEQ_GAP after the log's last chunk."""
    seq = (replay_log[-1].seq if replay_log else 0) + INTERRUPTION_SEQ_GAP
    ending: list[chunks.ChunkBody] = [
        chunks.TurnError(error),
        chunks.TurnCompleted(StopReason.ERROR, turn.usage),
    ]
    return [
        chunks.Chunk(turn.session_id, turn.turn_id, at, body) for at, body in enumerate(ending, seq)
    ]
