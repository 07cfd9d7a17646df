"""Replica mode (`--postgres URL`): turns/s with 1, 2, 3 runtime replicas on one PostgreSQL.

Each level gets a fresh database on that server (created, migrated, dropped afterwards) and
fresh replicas with their own AGENT_RUNTIME_INSTANCE_ID. The load generator spreads its
workers over the replicas round-robin, each worker on sessions of its own, so the replicas
share the database and nothing else. One replica is the PostgreSQL mode: compare it with
the SQLite runtime at the same concurrency in the throughput phase.

What replicas cost each other shows with `--replica-tenants T` (the workers spread over T
tenants, each its own API key), `--replica-watchers W` (W idle WatchEvents streams per
replica, each on a session nobody writes to: a commit that woke every watcher would make
each of them read for nothing) and `--replica-lease-seconds` (a short lease makes lease
upkeep frequent). Each level reports the database's transactions per turn
(pg_stat_database: commits and rollbacks, reads included, over the replicas' whole life,
start-up and warm-up turns included) beside the replicas' CPU per turn.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc
from sqlalchemy.engine import make_url

from agent_runtime.v1 import event_pb2 as ev
from agent_runtime.v1 import event_pb2_grpc as ev_grpc
from benchmarks.load import GrpcClient, PhaseRun, model_name, run_sessions, summarize_phase
from benchmarks.processes import Child, CpuMeter

if TYPE_CHECKING:
    from benchmarks.runner import Bench


def asyncpg_dsn(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


@asynccontextmanager
async def scratch_database(server_url: str) -> AsyncIterator[str]:
    """A new, empty database on the server `server_url` points at; dropped on exit."""
    name = f"bench_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(asyncpg_dsn(server_url), timeout=10)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        try:
            url = make_url(server_url).set(drivername="postgresql+asyncpg", database=name)
            yield url.render_as_string(hide_password=False)
        finally:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


async def replica_scaling(bench: Bench) -> dict[str, Any]:
    config = bench.config
    concurrency = config.replica_concurrency
    per_worker = max(2, math.ceil(config.turns / concurrency))
    results: dict[str, Any] = {
        "database": "postgresql",
        "concurrency": concurrency,
        "turns_per_worker": per_worker,
        "pool_size": config.replica_pool_size,
        "tenants": config.replica_tenants,
        "watchers_per_replica": config.replica_watchers,
        "lease_seconds": config.replica_lease_seconds or None,
        "levels": {},
    }
    for count in config.replicas:
        async with scratch_database(config.postgres) as url:
            await bench.migrate(url)
            # Counted over the replicas' whole life, from before their start to after their
            # stop: a backend publishes its counters when it exits, but an idle one may hold
            # them back for seconds, which would blur a count taken while they run.
            transactions = await _transactions(url)
            replicas = await asyncio.gather(
                *(_start_replica(bench, url, count, i) for i in range(count))
            )
            try:
                summary = await _measure(bench, replicas, concurrency, per_worker)
            finally:
                for child in replicas:
                    bench.group.stop(child)
            transactions = await _transactions(url) - transactions
        turns = summary["ok_turns"] + summary["warm_turns"]
        summary["db_transactions"] = transactions
        summary["db_transactions_per_turn"] = transactions / turns if turns else math.nan
        summary["replicas"] = count
        results["levels"][str(count)] = summary
        bench.log(
            f"  {count} replica(s), c={concurrency:<4} {summary['turns_per_s']:8.1f} turns/s  "
            f"e2e p50 {summary['e2e_ms']['p50']:7.2f} ms  p99 {summary['e2e_ms']['p99']:7.2f} ms  "
            f"cpu {summary['server_cpu_ms_per_turn']:5.2f} ms/turn  "
            f"db {summary['db_transactions_per_turn']:5.2f} transactions/turn  "
            f"errors {summary['errors']}"
        )
    return results


def api_key(tenant: int) -> str:
    return f"bench-key-{tenant}"


def _api_keys(tenants: int) -> str:
    return ",".join(f"{api_key(t)}=bench-tenant-{t}" for t in range(tenants))


async def _start_replica(bench: Bench, url: str, count: int, index: int) -> Child:
    return await bench.group.start(
        f"replica-{count}-{index}",
        [sys.executable, "-m", "agent_runtime", "serve"],
        env={
            "AGENT_RUNTIME_LISTEN": "127.0.0.1:0",
            "AGENT_RUNTIME_DATABASE_URL": url,
            "AGENT_RUNTIME_DATABASE_POOL_SIZE": str(bench.config.replica_pool_size),
            "AGENT_RUNTIME_INSTANCE_ID": f"bench-replica-{index}",
            "AGENT_RUNTIME_LLM_BASE_URL": bench.model_url,
            "AGENT_RUNTIME_API_KEYS": _api_keys(bench.config.replica_tenants),
            **(
                {"AGENT_RUNTIME_LEASE_SECONDS": f"{bench.config.replica_lease_seconds:g}"}
                if bench.config.replica_lease_seconds
                else {}
            ),
        },
        cwd=bench.runtime_src,
    )


async def _measure(
    bench: Bench, replicas: list[Child], concurrency: int, per_worker: int
) -> dict[str, Any]:
    config = bench.config
    assert bench.model is not None
    tenants = config.replica_tenants
    workers = [f"bench-replicas{len(replicas)}-c{concurrency}-{i}" for i in range(concurrency)]
    # Worker i talks to replica i mod n, as a per-call balancer would spread them, for
    # tenant i mod T: one client per (replica, tenant) that has workers.
    groups: dict[tuple[int, int], list[str]] = {}
    for index, worker in enumerate(workers):
        groups.setdefault((index % len(replicas), index % tenants), []).append(worker)
    clients = {
        key: GrpcClient(
            replicas[key[0]].address, max(1, math.ceil(len(group) / 64)), api_key=api_key(key[1])
        )
        for key, group in groups.items()
    }
    model = model_name(config.tokens, 0)

    async def everywhere(suffix: str, turns: int) -> PhaseRun:
        runs = await asyncio.gather(
            *(
                run_sessions(
                    clients[key],
                    [f"{worker}{suffix}" for worker in group],
                    turns,
                    model,
                    call_timeout=config.call_timeout,
                    max_seconds=config.phase_seconds,
                    new_session_every=config.turns_per_session,
                )
                for key, group in groups.items()
            )
        )
        return PhaseRun(
            [record for run in runs for record in run.records],
            max(run.wall_s for run in runs),
            any(run.timed_out for run in runs),
        )

    watching = _Watchers(replicas, config.replica_watchers)
    try:
        await asyncio.gather(*(client.wait_ready() for client in clients.values()))
        warm = await everywhere(".warm", 1)
        await watching.start()
        bench.check_alive()
        cpu = CpuMeter({"model": bench.model.pid, **{child.name: child.pid for child in replicas}})
        cpu.start()
        run = await everywhere("", per_worker)
        cpu_used = cpu.stop()
    finally:
        await watching.stop()
        await asyncio.gather(*(client.close() for client in clients.values()))
    for child in replicas:
        if not child.alive():
            raise RuntimeError(f"{child.name} died:\n{child.log_tail()}")
    summary = summarize_phase(run, config.tokens)
    servers = sum(cpu_used[child.name] for child in replicas)
    ok = summary["ok_turns"]
    summary["cpu_s"] = cpu_used
    summary["server_cpu_ms_per_turn"] = servers * 1000 / ok if ok else math.nan
    summary["warm_turns"] = summarize_phase(warm, config.tokens)["ok_turns"]
    summary["watchers_open_at_end"] = watching.open_at_end
    return summary


class _Watchers:
    """`per_replica` idle WatchEvents streams on each replica, each on a session of tenant 0
    that no turn writes to: they receive nothing, and cost only what waking them costs."""

    def __init__(self, replicas: list[Child], per_replica: int) -> None:
        self._replicas = replicas
        self._per_replica = per_replica
        self._channels: list[grpc.aio.Channel] = []
        self._calls: list[Any] = []
        self.open_at_end = 0

    async def start(self) -> None:
        metadata = (("authorization", f"Bearer {api_key(0)}"),)
        for index, child in enumerate(self._replicas):
            if not self._per_replica:
                break
            channel = grpc.aio.insecure_channel(child.address)
            self._channels.append(channel)
            stub = ev_grpc.EventServiceStub(channel)
            for n in range(self._per_replica):
                request = ev.WatchEventsRequest(session_id=f"bench-idle-{index}-{n}")
                self._calls.append(stub.WatchEvents(request, metadata=metadata))
        await asyncio.gather(*(call.wait_for_connection() for call in self._calls))

    async def stop(self) -> None:
        self.open_at_end = sum(1 for call in self._calls if not call.done())
        for call in self._calls:
            call.cancel()
        await asyncio.gather(*(channel.close() for channel in self._channels))


async def _transactions(url: str) -> int:
    await asyncio.sleep(1.0)  # the stopped replicas' backends exit
    return await transactions_ended(url)


async def transactions_ended(url: str) -> int:
    """Transactions the database has ended (committed or rolled back) so far, as published
    by the backends that have exited (and those that have flushed their counters)."""
    connection = await asyncpg.connect(asyncpg_dsn(url), timeout=10)
    try:
        value = await connection.fetchval(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database "
            "WHERE datname = current_database()"
        )
    finally:
        await connection.close()
    return int(value or 0)
