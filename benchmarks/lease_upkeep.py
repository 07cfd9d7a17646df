"""What one tick of lease upkeep costs a replica, with N tenants each running one turn.

    python -m benchmarks.lease_upkeep --postgres postgresql://postgres@127.0.0.1:5432/test
        [--tenants 1,16,64,256] [--ticks 30]

For each count it creates a scratch database on that server, migrates it, writes one
running turn per tenant owned by this process, registers them as live, and times
TurnRecovery.renew() (what the lease keeper runs every third of a lease): wall and CPU time
per tick, and the database's transactions per tick. To measure another version of the
runtime, put its agent_runtime/ first on PYTHONPATH (a folder holding only a link to it,
then this checkout), so that the harness stays this one.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import create_async_engine

from agent_runtime.application.live_turns import LiveTurnRegistry
from agent_runtime.application.turn_recovery import TurnRecovery
from agent_runtime.domain.model import Session, Turn
from agent_runtime.infrastructure.db.uow_factory import SqlAlchemyUnitOfWorkFactory
from benchmarks.replicas import scratch_database, transactions_ended


async def _migrate(url: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent_runtime",
        "migrate",
        "--database-url",
        url,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    if await process.wait() != 0:
        raise RuntimeError("migrate failed")


async def tick_cost(server: str, tenants: int, ticks: int) -> dict[str, float]:
    async with scratch_database(server) as url:
        await _migrate(url)
        now = datetime.now(UTC)
        live = LiveTurnRegistry()
        engine = create_async_engine(url)
        try:
            uows = SqlAlchemyUnitOfWorkFactory(engine, instance_id="me")
            for number in range(tenants):
                tenant, session, turn = f"tenant-{number}", f"s{number}", f"turn-{number}"
                async with uows(tenant) as uow:
                    await uow.sessions.add(
                        Session(session, "coder", now, now, running_turn_id=turn)
                    )
                    await uow.turns.add(
                        Turn(turn, session, "coder", "m", now, owner="me", lease_expires_at=now)
                    )
                    await uow.commit()
                live.open(session, turn, tenant_id=tenant)
            recovery = TurnRecovery(uows, live, owner="me", lease=timedelta(seconds=30))
            await recovery.renew()  # connections opened, statements compiled
        finally:
            await engine.dispose()  # its backends exit and publish their counters
        await asyncio.sleep(1.0)
        before = await transactions_ended(url)
        engine = create_async_engine(url)
        try:
            uows = SqlAlchemyUnitOfWorkFactory(engine, instance_id="me")
            recovery = TurnRecovery(uows, live, owner="me", lease=timedelta(seconds=30))
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(ticks):
                await recovery.renew()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        finally:
            await engine.dispose()
        await asyncio.sleep(1.0)
        transactions = await transactions_ended(url) - before - 1  # less the count's own
    return {
        "tenants": tenants,
        "wall_ms_per_tick": wall * 1000 / ticks,
        "cpu_ms_per_tick": cpu * 1000 / ticks,
        "transactions_per_tick": transactions / ticks,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lease_upkeep")
    parser.add_argument("--postgres", required=True, help="a PostgreSQL server's URL")
    parser.add_argument("--tenants", default="1,16,64,256", help="comma-separated counts")
    parser.add_argument("--ticks", type=int, default=30, help="renewals timed per count")
    args = parser.parse_args(argv)
    for tenants in (int(part) for part in args.tenants.split(",")):
        found = asyncio.run(tick_cost(args.postgres, tenants, args.ticks))
        print(
            f"{tenants:>5} tenants: {found['wall_ms_per_tick']:7.2f} ms wall, "
            f"{found['cpu_ms_per_tick']:7.2f} ms CPU, "
            f"{found['transactions_per_tick']:6.1f} transactions per tick",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
