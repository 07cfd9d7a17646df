"""Replica mode (`--postgres URL`): turns/s with 1, 2, 3 runtime replicas on one PostgreSQL.

Each level gets a fresh database on that server (created, migrated, dropped afterwards) and
fresh replicas with their own AGENT_RUNTIME_INSTANCE_ID. The load generator spreads its
workers over the replicas round-robin, each worker on sessions of its own, so the replicas
share the database and nothing else. One replica is the PostgreSQL mode: compare it with
the SQLite runtime at the same concurrency in the throughput phase.
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
from sqlalchemy.engine import make_url

from benchmarks.load import GrpcClient, PhaseRun, model_name, run_sessions, summarize_phase
from benchmarks.processes import Child, CpuMeter

if TYPE_CHECKING:
    from benchmarks.runner import Bench


def _asyncpg_dsn(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


@asynccontextmanager
async def scratch_database(server_url: str) -> AsyncIterator[str]:
    """A new, empty database on the server `server_url` points at; dropped on exit."""
    name = f"bench_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(_asyncpg_dsn(server_url), timeout=10)
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
        "levels": {},
    }
    for count in config.replicas:
        async with scratch_database(config.postgres) as url:
            await bench.migrate(url)
            replicas = await asyncio.gather(
                *(_start_replica(bench, url, count, i) for i in range(count))
            )
            try:
                summary = await _measure(bench, replicas, concurrency, per_worker)
            finally:
                for child in replicas:
                    bench.group.stop(child)
        summary["replicas"] = count
        results["levels"][str(count)] = summary
        bench.log(
            f"  {count} replica(s), c={concurrency:<4} {summary['turns_per_s']:8.1f} turns/s  "
            f"e2e p50 {summary['e2e_ms']['p50']:7.2f} ms  p99 {summary['e2e_ms']['p99']:7.2f} ms  "
            f"cpu {summary['server_cpu_ms_per_turn']:5.2f} ms/turn  errors {summary['errors']}"
        )
    return results


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
        },
        cwd=bench.runtime_src,
    )


async def _measure(
    bench: Bench, replicas: list[Child], concurrency: int, per_worker: int
) -> dict[str, Any]:
    config = bench.config
    assert bench.model is not None
    workers = [f"bench-replicas{len(replicas)}-c{concurrency}-{i}" for i in range(concurrency)]
    # Worker i talks to replica i mod n, as a per-call balancer would spread them.
    groups = [workers[index :: len(replicas)] for index in range(len(replicas))]
    clients = [
        GrpcClient(child.address, max(1, math.ceil(len(group) / 64)))
        for child, group in zip(replicas, groups, strict=True)
    ]
    model = model_name(config.tokens, 0)

    async def everywhere(sessions_of: list[list[str]], turns: int) -> PhaseRun:
        runs = await asyncio.gather(
            *(
                run_sessions(
                    client,
                    sessions,
                    turns,
                    model,
                    call_timeout=config.call_timeout,
                    max_seconds=config.phase_seconds,
                    new_session_every=config.turns_per_session,
                )
                for client, sessions in zip(clients, sessions_of, strict=True)
                if sessions
            )
        )
        return PhaseRun(
            [record for run in runs for record in run.records],
            max(run.wall_s for run in runs),
            any(run.timed_out for run in runs),
        )

    try:
        await asyncio.gather(*(client.wait_ready() for client in clients))
        await everywhere([[f"{w}.warm" for w in group] for group in groups], 1)
        bench.check_alive()
        cpu = CpuMeter({"model": bench.model.pid, **{child.name: child.pid for child in replicas}})
        cpu.start()
        run = await everywhere(groups, per_worker)
        cpu_used = cpu.stop()
    finally:
        await asyncio.gather(*(client.close() for client in clients))
    for child in replicas:
        if not child.alive():
            raise RuntimeError(f"{child.name} died:\n{child.log_tail()}")
    summary = summarize_phase(run, config.tokens)
    servers = sum(cpu_used[child.name] for child in replicas)
    ok = summary["ok_turns"]
    summary["cpu_s"] = cpu_used
    summary["server_cpu_ms_per_turn"] = servers * 1000 / ok if ok else math.nan
    return summary
