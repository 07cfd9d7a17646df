"""The benchmark phases, in order, against processes started and stopped here."""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

from benchmarks import peer_litellm, profiling
from benchmarks.capacity import capacity, capacity_block, capacity_model
from benchmarks.load import (
    GrpcClient,
    OpenAIHttpClient,
    PhaseRun,
    TurnClient,
    model_name,
    peak_overlap,
    run_sessions,
    summarize_phase,
)
from benchmarks.load_process import LoadProcesses, Protocol, processes_for
from benchmarks.processes import (
    Child,
    CpuMeter,
    MemorySampler,
    ProcessGroup,
    ThreadStateSampler,
    memory_kib,
    process_tree,
)
from benchmarks.replicas import replica_scaling
from benchmarks.seed import history_session_id, seed_histories
from benchmarks.stats import merge_costs

REPO = Path(__file__).resolve().parent.parent
SYSTEMS = ("floor", "runtime")
PEERS = ("litellm",)
# An interleaved level has fewer rounds rather than blocks shorter than this (turns per
# worker): each block starts all its workers at once and ends with a tail of stragglers.
MIN_TURNS_PER_BLOCK = 10
Log = Callable[[str], None]


@dataclass
class Config:
    out: Path
    quick: bool = False
    concurrency: list[int] = field(default_factory=lambda: [1, 32, 256])
    turns: int = 2000  # measured turns per concurrency level, spread over its workers
    # The throughput phase alternates floor and runtime this many times per level (each
    # system's turns split into as many blocks), so that a drift of the shared host's speed
    # during a level weighs on both alike.
    rounds: int = 3
    turns_per_session: int = 10  # throughput phase: a worker starts a new session after these
    tokens: int = 50  # tokens per answer in the throughput and history phases
    history: list[int] = field(default_factory=lambda: [10, 1_000, 10_000])
    history_turns: int = 60
    history_message_bytes: int = 300
    slow_streams: int = 1_000
    slow_tokens: int = 40
    slow_rate: float = 20.0
    channels: int = 0  # gRPC connections per client; 0: one per 64 concurrent calls
    call_timeout: float = 120.0
    phase_seconds: float = 120.0  # no turn of a phase starts after this
    profile: bool = False
    profile_seconds: float = 15.0
    db_dir: Path | None = None
    keep_tmp: bool = False
    # The capacity phase (benchmarks/capacity.py): a paced model, closed-loop clients.
    # Finer where a Python process saturates on 2 cores (150-300 streams at 50 tokens/s): a
    # capacity ratio rests on the level where a system fails, so steps of a third or more
    # there (150, 200, 300) made it jump between 0.75x and 1.0x from run to run.
    capacity_levels: list[int] = field(
        default_factory=lambda: [25, 50, 100, 150, 175, 200, 250, 300, 400, 800]
    )
    capacity_cpu_level: int = 200  # the level whose CPU per token the targets compare
    capacity_tokens: int = 200
    capacity_rate: float = 50.0
    capacity_ttfb_ms: float = 300.0
    capacity_window_answers: float = 1.0  # the measured window of a block, in answer times
    capacity_rounds: int = 2  # blocks per system per level, the systems alternating
    capacity_delay_limit_ms: float = 50.0
    capacity_profile_level: int = 200  # --profile: the capacity level profiled
    load_processes: int = 0  # load-generator processes of the capacity phase; 0: by level
    peer: str = ""  # "litellm": also measure the LiteLLM proxy (benchmarks/peer_litellm.py)
    runtime_src: Path | None = None  # another checkout of agent-runtime to measure (A/B runs)
    # Replica mode (benchmarks/replicas.py): on when `postgres` names a server.
    postgres: str = ""
    replicas: list[int] = field(default_factory=lambda: [1, 2, 3])
    replica_concurrency: int = 64
    replica_pool_size: int = 10
    replica_tenants: int = 1  # the workers spread over this many tenants (API keys)
    replica_watchers: int = 0  # idle WatchEvents streams per replica
    replica_lease_seconds: float = 0.0  # AGENT_RUNTIME_LEASE_SECONDS of the replicas; 0: default

    @classmethod
    def quick_sizes(cls, out: Path) -> Config:
        return cls(
            out=out,
            quick=True,
            concurrency=[1, 4],
            turns=24,
            tokens=8,
            history=[10, 100],
            history_turns=5,
            slow_streams=20,
            slow_tokens=6,
            slow_rate=20.0,
            call_timeout=30.0,
            phase_seconds=20.0,
            profile_seconds=3.0,
            capacity_levels=[4, 8],
            capacity_cpu_level=8,
            capacity_tokens=10,
            capacity_rate=50.0,
            capacity_ttfb_ms=100.0,
            capacity_rounds=1,
            capacity_profile_level=4,
            replicas=[1, 2],
            replica_concurrency=4,
        )


def channels_for(concurrency: int, configured: int) -> int:
    if configured > 0:
        return configured
    return max(1, min(16, math.ceil(concurrency / 64)))


class Bench:
    def __init__(self, config: Config, log: Log) -> None:
        self.config = config
        self.log = log
        self.tmp = Path(
            tempfile.mkdtemp(
                prefix="agent-runtime-bench-", dir=str(config.db_dir) if config.db_dir else None
            )
        )
        self.group = ProcessGroup(self.tmp)
        self.model: Child | None = None
        self.model_http: httpx.AsyncClient | None = None
        self.servers: dict[str, Child] = {}
        self._runtime_dbs = 0

    # -- processes --------------------------------------------------------------------------

    @property
    def runtime_src(self) -> Path:
        """Where `python -m agent_runtime` runs from (its agent_runtime/ is the one imported)."""
        return (self.config.runtime_src or REPO).resolve()

    @property
    def model_url(self) -> str:
        assert self.model is not None
        return f"http://{self.model.address}/v1"

    async def start_model(self) -> None:
        self.model = await self.group.start(
            "model", [sys.executable, "-m", "benchmarks.fake_model", "--tokens", "10"]
        )
        self.model_http = httpx.AsyncClient(base_url=f"http://{self.model.address}", timeout=10)

    async def new_database(self, *, seed: bool) -> str:
        self._runtime_dbs += 1
        path = self.tmp / f"bench-{self._runtime_dbs}.db"
        url = f"sqlite+aiosqlite:///{path}"
        await self.migrate(url)
        if seed and self.config.history:
            self.log(f"seeding histories {self.config.history} into {path.name}")
            await asyncio.to_thread(
                seed_histories, path, self.config.history, self.config.history_message_bytes
            )
        return url

    async def migrate(self, url: str) -> None:
        """`agent-runtime migrate` of the runtime under test."""
        migrate = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agent_runtime",
            "migrate",
            "--database-url",
            url,
            cwd=self.runtime_src,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(migrate.communicate(), 120)
        if migrate.returncode != 0:
            raise RuntimeError(f"migrate failed:\n{output.decode(errors='replace')}")

    async def start_runtime(self, *, seed: bool) -> Child:
        url = await self.new_database(seed=seed)
        child = await self.group.start(
            f"runtime-{self._runtime_dbs}",
            [sys.executable, "-m", "agent_runtime", "serve"],
            env={
                "AGENT_RUNTIME_LISTEN": "127.0.0.1:0",
                "AGENT_RUNTIME_DATABASE_URL": url,
                "AGENT_RUNTIME_LLM_BASE_URL": self.model_url,
            },
            cwd=self.runtime_src,
        )
        self.servers["runtime"] = child
        return child

    async def start_floor(self, label: str = "floor") -> Child:
        child = await self.group.start(
            label,
            [sys.executable, "-m", "benchmarks.floor_relay", "--listen", "127.0.0.1:0"],
            # The runtime's model settings: the floor builds its model client from them. It
            # runs this checkout's code even with --runtime-src: an A/B keeps one floor.
            env={"AGENT_RUNTIME_LLM_BASE_URL": self.model_url},
        )
        self.servers["floor"] = child
        return child

    async def start_peer(self) -> Child:
        command = await peer_litellm.ensure_installed(self.log)
        models = [model_name(self.config.tokens, 0), capacity_model(self)]
        child = await peer_litellm.start(self.group, command, self.tmp, self.model_url, models)
        self.servers["peer"] = child
        return child

    def target(self, system: str) -> tuple[Protocol, str]:
        """(protocol, address) of a system: gRPC host:port, or the peer's base URL."""
        address = self.servers[system].address
        return ("openai", f"http://{address}/v1") if system == "peer" else ("grpc", address)

    def client(self, system: str, streams: int) -> TurnClient:
        protocol, address = self.target(system)
        if protocol == "openai":
            return OpenAIHttpClient(address)
        return GrpcClient(address, channels_for(streams, self.config.channels))

    def stop_server(self, system: str) -> None:
        child = self.servers.pop(system, None)
        if child is not None:
            self.group.stop(child)

    async def model_stats(self, *, reset: bool = False) -> dict[str, int]:
        assert self.model_http is not None
        if reset:
            response = await self.model_http.post("/stats/reset")
        else:
            response = await self.model_http.get("/stats")
        result: dict[str, int] = response.json()
        return result

    def check_alive(self) -> None:
        for child in [*self.servers.values(), *([self.model] if self.model else [])]:
            if not child.alive():
                raise RuntimeError(f"{child.name} died:\n{child.log_tail()}")

    # -- one measured phase -----------------------------------------------------------------

    async def measure(
        self,
        system: str,
        sessions: list[str],
        turns: int,
        *,
        tokens: int,
        rate: float = 0.0,
        **options: Any,
    ) -> dict[str, Any]:
        """One measured phase: `len(sessions)` concurrent workers, `turns` turns each
        (see load.run_sessions), in one block; `options` are _block's."""
        block = await self._block(system, sessions, turns, tokens=tokens, rate=rate, **options)
        return self._summary([block], len(sessions), tokens, rate)

    async def _block(
        self,
        system: str,
        sessions: list[str],
        turns: int,
        *,
        tokens: int,
        rate: float = 0.0,
        new_session_every: int = 0,
        warmup_turns: int = 1,
        memory: bool = False,
        max_seconds: float | None = None,
    ) -> _Block:
        """The turns of one system, after `warmup_turns` unmeasured turns per worker, and
        what they cost, not summarised yet."""
        child = self.servers[system]
        assert self.model is not None
        config = self.config
        model = model_name(tokens, rate)
        client = self.client(system, len(sessions))
        try:
            await client.wait_ready()
            if warmup_turns:
                warm = await run_sessions(
                    client,
                    [f"{session}.warm" if new_session_every else session for session in sessions],
                    warmup_turns,
                    model_name(tokens, 0),
                    call_timeout=config.call_timeout,
                    max_seconds=config.phase_seconds,
                )
                failed = summarize_phase(warm, tokens)["errors"]
                if failed:
                    self.log(f"  warm-up: {failed} of {len(warm.records)} turns failed")
            self.check_alive()
            await self.model_stats(reset=True)
            sampler = MemorySampler(child.pid) if memory else None
            rss_before = memory_kib(child.pid)
            if sampler is not None:
                sampler.start()
            cpu = CpuMeter({"server": process_tree(child.pid), "model": self.model.pid})
            cpu.start()
            run: PhaseRun = await run_sessions(
                client,
                sessions,
                turns,
                model,
                call_timeout=config.call_timeout,
                max_seconds=max_seconds or config.phase_seconds,
                new_session_every=new_session_every,
            )
            cpu_used = cpu.stop()
            if sampler is not None:
                await sampler.stop()
            rss_after = memory_kib(child.pid)
        finally:
            await client.close()
        self.check_alive()
        return _Block(
            run,
            cpu_used,
            await self.model_stats(),
            rss_before,
            rss_after,
            sampler.samples if sampler is not None else None,
        )

    def _summary(
        self, blocks: list[_Block], concurrency: int, tokens: int, rate: float
    ) -> dict[str, Any]:
        """One system's figures over its blocks (several when the phase was interleaved)."""
        run = PhaseRun(
            [record for block in blocks for record in block.run.records],
            sum(block.run.wall_s for block in blocks),
            any(block.run.timed_out for block in blocks),
        )
        cpu_used, model_stats = merge_costs((block.cpu, block.model_stats) for block in blocks)
        summary = summarize_phase(run, tokens)
        summary["concurrency"] = concurrency
        summary["sessions"] = len({record.session_id for record in run.records})
        summary["tokens_per_answer"] = tokens
        summary["model_rate"] = rate
        summary["rounds"] = len(blocks)
        summary["cpu_s"] = cpu_used
        ok = summary["ok_turns"]
        summary["server_cpu_ms_per_turn"] = cpu_used["server"] * 1000 / ok if ok else math.nan
        summary["server_main_thread_cpu_ms_per_turn"] = (
            cpu_used["server_main_thread"] * 1000 / ok if ok else math.nan
        )
        summary["model_stats"] = model_stats
        summary["peak_open_calls"] = max(peak_overlap(_spans(block.run)) for block in blocks)
        summary["rss_kib_before"] = blocks[0].rss_before["VmRSS"]
        summary["rss_kib_after"] = blocks[-1].rss_after["VmRSS"]
        summary["peak_rss_kib"] = blocks[-1].rss_after["VmHWM"]
        samples = blocks[-1].rss_samples
        if samples is not None:
            summary["rss_samples_kib"] = [[round(t, 2), kib] for t, kib in samples]
        return summary

    # -- the phases -------------------------------------------------------------------------

    async def throughput(self) -> dict[str, dict[str, Any]]:
        """Each level in `rounds` rounds, each round a block of the floor's turns then a block
        of the runtime's: a host whose speed drifts during the level slows both alike."""
        config = self.config
        results: dict[str, dict[str, Any]] = {}
        for concurrency in config.concurrency:
            per_worker = max(2, math.ceil(config.turns / concurrency))
            rounds = max(1, min(config.rounds, per_worker // MIN_TURNS_PER_BLOCK))
            # The peer's added latency is compared at c=1 only.
            systems = [*SYSTEMS, *(["peer"] if "peer" in self.servers and concurrency == 1 else [])]
            blocks: dict[str, list[_Block]] = {system: [] for system in systems}
            for round_index in range(rounds):
                # the round's share of each worker's turns, the first rounds taking the rest
                turns = per_worker // rounds + (round_index < per_worker % rounds)
                for system in systems:
                    workers = [
                        f"bench-{system}-c{concurrency}-r{round_index}-{i}"
                        for i in range(concurrency)
                    ]
                    block = await self._block(
                        system,
                        workers,
                        turns,
                        tokens=config.tokens,
                        new_session_every=config.turns_per_session,
                        warmup_turns=1 if round_index == 0 else 0,
                    )
                    blocks[system].append(block)
            level: dict[str, Any] = {}
            for system in systems:
                summary = self._summary(blocks[system], concurrency, config.tokens, 0.0)
                level[system] = summary
                self.log(
                    f"  c={concurrency:<4} {system:<8} {summary['turns_per_s']:8.1f} turns/s  "
                    f"e2e p50 {summary['e2e_ms']['p50']:7.2f} ms  "
                    f"p99 {summary['e2e_ms']['p99']:7.2f} ms  "
                    f"added p50 {summary['added_ms']['p50']:6.2f} ms  "
                    f"cpu {summary['server_cpu_ms_per_turn']:5.2f} ms/turn  "
                    f"errors {summary['errors']}  neighbours {_neighbours(summary):.2f} cores"
                )
            results[str(concurrency)] = level
        return results

    async def history(self) -> dict[str, Any]:
        config = self.config
        results: dict[str, Any] = {"runtime": {}, "message_bytes": config.history_message_bytes}
        for length in config.history:
            summary = await self.measure(
                "runtime",
                [history_session_id(length)],
                config.history_turns,
                tokens=config.tokens,
                warmup_turns=2,
            )
            results["runtime"][str(length)] = summary
            self.log(
                f"  {length:>6} prior messages: e2e p50 {summary['e2e_ms']['p50']:7.2f} ms  "
                f"p99 {summary['e2e_ms']['p99']:7.2f} ms  errors {summary['errors']}"
            )
        floor = await self.measure(
            "floor", ["bench-floor-history"], config.history_turns, tokens=config.tokens
        )
        results["floor"] = floor
        self.log(f"  floor (no history):   e2e p50 {floor['e2e_ms']['p50']:7.2f} ms")
        return results

    async def slow_streams(self) -> dict[str, Any]:
        """Fresh processes, so VmHWM is this phase's peak and not an earlier one's."""
        config = self.config
        results: dict[str, Any] = {
            "streams": config.slow_streams,
            "tokens_per_answer": config.slow_tokens,
            "tokens_per_second": config.slow_rate,
        }
        for system in SYSTEMS:
            self.stop_server(system)
            if system == "runtime":
                await self.start_runtime(seed=False)
            else:
                await self.start_floor("floor-slow")
            # A few unmeasured turns first, so the fresh process has its code paths loaded.
            warm = self.client(system, 4)
            try:
                await warm.wait_ready()
                await run_sessions(
                    warm,
                    [f"bench-{system}-slow-warm-{i}" for i in range(4)],
                    2,
                    model_name(config.tokens, 0),
                    call_timeout=config.call_timeout,
                    max_seconds=config.phase_seconds,
                )
            finally:
                await warm.close()
            sessions = [f"bench-{system}-slow-{i}" for i in range(config.slow_streams)]
            stream_seconds = config.slow_tokens / config.slow_rate if config.slow_rate else 0
            summary = await self.measure(
                system,
                sessions,
                1,
                tokens=config.slow_tokens,
                rate=config.slow_rate,
                warmup_turns=0,
                memory=True,
                max_seconds=max(10.0, stream_seconds * 2),
            )
            results[system] = summary
            self.log(
                f"  {system:<8} peak RSS {summary['peak_rss_kib'] / 1024:7.1f} MiB  "
                f"token delay p99 {summary['token_delay_ms']['p99']:7.2f} ms  "
                f"errors {summary['errors']} {summary['error_kinds']}  "
                f"peak model streams {summary['model_stats']['peak_in_flight']}  "
                f"e2e p99 {summary['e2e_ms']['p99']:8.1f} ms"
            )
        return results

    async def profile(self) -> dict[str, Any] | None:
        """Where the runtime's time goes, in extra runs that are not part of the figures:
        at c=32 of the burst phase, first what its threads are doing (sampled from /proc,
        no profiler attached), then under py-spy; then under py-spy again at one level of
        the capacity phase (`capacity_profile_level` streams at the paced model's rate).
        Writes profile.txt."""
        config = self.config
        child = self.servers["runtime"]
        concurrency = 32 if not config.quick else 4
        workers = [f"bench-profile-c{concurrency}-{i}" for i in range(concurrency)]

        async def burst(seconds: float, label: str) -> dict[str, Any]:
            return await self.measure(
                "runtime",
                [f"{worker}-{label}" for worker in workers],
                10_000,
                tokens=config.tokens,
                new_session_every=config.turns_per_session,
                max_seconds=seconds,
            )

        sampler = ThreadStateSampler(child.pid)
        sampler.start()
        plain = await burst(config.profile_seconds / 2, "threads")
        states = await sampler.stop()
        result: dict[str, Any] = {
            "concurrency": concurrency,
            "thread_states": states,
            "thread_state_samples": sampler.samples,
            "turns_per_s_sampled_run": plain["turns_per_s"],
        }
        lines = [
            f"What the runtime's threads were doing at c={concurrency} of the burst phase "
            f"({plain['ok_turns']} turns, {plain['turns_per_s']:.1f} turns/s, "
            f"{sampler.samples} samples of /proc/<pid>/task/*/{{stat,syscall}}; average "
            "number of threads in each state; futex is mostly idle workers):",
            "",
            *(f"{count:8.2f}  {state}" for state, count in states.items()),
            "",
            "",
        ]
        py_spy = shutil.which("py-spy") or _venv_tool("py-spy")
        if py_spy is None:
            self.log("  py-spy not found: its part of the profile skipped (pip install py-spy)")
        else:

            async def burst_load() -> str:
                profiled = await burst(config.profile_seconds - 1.5, "py-spy")
                result["py_spy_turns"] = profiled["ok_turns"]
                result["turns_per_s_under_py_spy"] = profiled["turns_per_s"]
                return (
                    f"burst phase: {profiled['ok_turns']} turns at c={concurrency} (zero-latency "
                    f"model, {config.tokens} tokens per answer) in {profiled['wall_s']:.1f} s"
                )

            lines += await self._py_spy(py_spy, "burst", config.profile_seconds, burst_load)
            level = config.capacity_profile_level
            seconds = config.capacity_window_answers * (
                config.capacity_ttfb_ms / 1000 + config.capacity_tokens / config.capacity_rate
            )

            async def capacity_load() -> str:
                count = config.load_processes or processes_for(level, 4)
                async with LoadProcesses(count, self.tmp) as load:
                    block = await capacity_block(self, load, "runtime", level, "profile")
                summary = block.result.summary()
                result["capacity_level"] = level
                result["capacity_tokens_in_window"] = summary["tokens_in_window"]
                return (
                    f"capacity phase: {level} streams of {config.capacity_tokens} tokens at "
                    f"{config.capacity_rate:g} tokens/s; {summary['tokens_in_window']} tokens "
                    f"received in the {summary['window_s']:.1f} s window, token delay p99 "
                    f"{summary['token_delay_ms']['p99']:.1f} ms under py-spy"
                )

            # The whole block is profiled: ramp-up, the window and the ramp-down.
            lines += await self._py_spy(py_spy, "capacity", seconds * 3 + 2, capacity_load)
        path = config.out / "profile.txt"
        path.write_text("\n".join(lines) + "\n")
        self.log(f"  wrote {path}")
        return result

    async def _py_spy(
        self,
        py_spy: str,
        label: str,
        seconds: float,
        load: Callable[[], Awaitable[str]],
    ) -> list[str]:
        """py-spy on the runtime while `load` runs; the summary's lines for profile.txt."""
        raw = self.tmp / f"runtime-{label}.pyspy.txt"
        spy = await asyncio.create_subprocess_exec(
            py_spy,
            "record",
            "--pid",
            str(self.servers["runtime"].pid),
            "--rate",
            "250",
            "--duration",
            str(math.ceil(seconds)),
            "--threads",
            "--format",
            "raw",
            "--output",
            str(raw),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        await asyncio.sleep(1.0)  # py-spy attaches
        what = await load()
        _, err = await asyncio.wait_for(spy.communicate(), seconds + 60)
        if spy.returncode != 0 or not raw.exists():
            self.log(f"  py-spy failed: {err.decode(errors='replace')[-500:]}")
            return [f"py-spy failed during the {label} run", ""]
        report = profiling.summarize_raw(raw.read_text())
        return [profiling.render(report, what=what), ""]

    # -- everything -------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        config = self.config
        started = time.time()
        revision_at_start = _git_revision(self.runtime_src)
        tree_at_start = _runtime_tree(self.runtime_src)
        async with self.group:
            try:
                await self.start_model()
                await self.start_runtime(seed=True)
                await self.start_floor()
                if config.peer:
                    await self.start_peer()
                self.log(
                    f"model {self.model_url}, "
                    + ", ".join(f"{name} {child.address}" for name, child in self.servers.items())
                    + f"; logs in {self.tmp}"
                )
                self.log("burst: throughput and latency (zero-latency model)")
                throughput = await self.throughput()
                systems = [*SYSTEMS, *(["peer"] if config.peer else [])]
                self.log(
                    f"capacity: {config.capacity_tokens} tokens at {config.capacity_rate:g}/s "
                    f"after {config.capacity_ttfb_ms:g} ms, levels {config.capacity_levels}"
                )
                capacity_results = await capacity(self, systems)
                self.stop_server("peer")
                self.log("history length")
                history = await self.history()
                profile = None
                if config.profile:
                    self.log(
                        "profile (runtime: thread states and py-spy at c=32; py-spy at "
                        f"{config.capacity_profile_level} paced streams)"
                    )
                    profile = await self.profile()
                self.log(f"{config.slow_streams} slow streams")
                slow = await self.slow_streams()
                replicas = None
                if config.postgres:
                    self.log(f"replicas {config.replicas} on PostgreSQL")
                    replicas = await replica_scaling(self)
            except BaseException:
                self.log(f"benchmark failed; process logs kept in {self.tmp}")
                config.keep_tmp = True
                raise
            finally:
                if self.model_http is not None:
                    await self.model_http.aclose()
        runtime_log = summarize_logs(sorted(self.tmp.glob("runtime-*.log")))
        if runtime_log["warnings"] or runtime_log["errors"]:
            self.log(
                f"the runtime logged {runtime_log['warnings']} warnings and "
                f"{runtime_log['errors']} errors (see results.md)"
            )
        if not config.keep_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
        lowest = str(min(config.concurrency))
        meta = _meta(config, time.time() - started)
        meta["git"] = revision_at_start
        meta["git_at_end"] = _git_revision(self.runtime_src)
        # A commit of docs alone moves HEAD: only a change of agent_runtime/ is a warning.
        meta["runtime_changed"] = _runtime_tree(self.runtime_src) != tree_at_start
        if meta["runtime_changed"]:
            self.log(
                f"warning: agent_runtime/ changed during the run ({revision_at_start} -> "
                f"{meta['git_at_end']}); processes started later ran the newer code"
            )
        return {
            "meta": meta,
            "throughput": throughput,
            "capacity": capacity_results,
            "peer": _peer_meta(config),
            "added_latency": {
                "concurrency": int(lowest),
                "runtime": _latency_parts(throughput[lowest]["runtime"]),
                "floor": _latency_parts(throughput[lowest]["floor"]),
                **(
                    {"peer": _latency_parts(throughput[lowest]["peer"])}
                    if "peer" in throughput[lowest]
                    else {}
                ),
            },
            "history": history,
            "slow_streams": slow,
            "replicas": replicas,
            "profile": profile,
            "runtime_log": runtime_log,
        }


@dataclass
class _Block:
    """One system's turns in one stretch of a phase, with what they cost."""

    run: PhaseRun
    cpu: dict[str, float]
    model_stats: dict[str, int]
    rss_before: dict[str, int]
    rss_after: dict[str, int]
    rss_samples: list[tuple[float, int]] | None


_LOG_LINE = re.compile(r"^\S+ \S+ (WARNING|ERROR|CRITICAL) (.*)$")
_VOLATILE = re.compile(r"\b(?:turn|msg|ses|err|call)_[0-9a-f]{8,}\b|\bbench-[\w.-]+|\d+(?:\.\d+)?")


def summarize_logs(paths: list[Path]) -> dict[str, Any]:
    """Warnings and errors the runtime processes logged, grouped by message shape."""
    kinds: Counter[str] = Counter()
    counts = {"warnings": 0, "errors": 0}
    for path in paths:
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            found = _LOG_LINE.match(line)
            if found is None:
                continue
            counts["warnings" if found.group(1) == "WARNING" else "errors"] += 1
            kinds[f"{found.group(1)} {_VOLATILE.sub('…', found.group(2))[:200]}"] += 1
    return {**counts, "kinds": dict(kinds.most_common(10))}


def _neighbours(summary: dict[str, Any]) -> float:
    """Cores used on average by processes outside the benchmark during a phase."""
    cpu = summary["cpu_s"]
    return float(cpu["others"] / cpu["wall"]) if cpu["wall"] else 0.0


def _latency_parts(summary: dict[str, Any]) -> dict[str, Any]:
    keys = ("added_ms", "upstream_ms", "model_ttfb_ms", "downstream_ms", "ttft_ms")
    return {key: summary[key] for key in keys}


def _peer_meta(config: Config) -> dict[str, Any] | None:
    if not config.peer:
        return None
    return {
        "name": config.peer,
        "package": peer_litellm.REQUIREMENT,
        "setup": "one uvicorn worker, no master key, no database (stateless)",
    }


def _spans(run: PhaseRun) -> list[tuple[int, int]]:
    return [(record.sent_ns, record.end_ns or record.sent_ns) for record in run.records]


def _venv_tool(name: str) -> str | None:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _runtime_tree(where: Path) -> str:
    """What the runtime's processes run: agent_runtime/'s tree at HEAD, and a digest of its
    uncommitted changes."""

    def git(*argv: str) -> str:
        return subprocess.run(
            ["git", *argv], cwd=where, capture_output=True, text=True, timeout=10, check=True
        ).stdout

    try:
        tree = git("rev-parse", "HEAD:agent_runtime").strip()
        changes = hashlib.sha256(git("diff", "HEAD", "--", "agent_runtime").encode()).hexdigest()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{tree}+{changes[:12]}"


def _git_revision(where: Path) -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "agent_runtime"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}{' + uncommitted changes in agent_runtime/' if dirty else ''}"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _meta(config: Config, seconds: float) -> dict[str, Any]:
    settings = asdict(config)
    settings["out"] = str(config.out)
    settings["db_dir"] = str(config.db_dir) if config.db_dir else None
    settings["runtime_src"] = str(config.runtime_src) if config.runtime_src else None
    settings["postgres"] = _without_password(config.postgres)
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average_at_end": _load_average(),
        "duration_s": round(seconds, 1),
        "quick": config.quick,
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": {
            name: _version(name)
            for name in (
                "grpcio",
                "protobuf",
                "sqlalchemy",
                "aiosqlite",
                "asyncpg",
                "aiohttp",  # the model client's transport (runtime and floor)
                "httpx",  # the model client's API (runtime and floor)
                "httpx-aiohttp",
            )
        },
        "sqlite": _sqlite_version(),
        "git": "",
        "runtime_src": str((config.runtime_src or REPO).resolve()),
        "config": settings,
    }


def _without_password(url: str) -> str:
    if not url:
        return ""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _load_average() -> list[float]:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return []


def _sqlite_version() -> str:
    import sqlite3

    return sqlite3.sqlite_version
