"""The capacity phase: how many concurrent streams each system carries at a real model's pace.

The fake model answers `capacity_tokens` tokens (200) at `capacity_rate` tokens/s (50), the
first after `capacity_ttfb_ms` (300 ms): one answer takes T = 4.3 s. At each level of
concurrent streams, closed-loop clients, each on sessions of its own, run turn after turn
against one system at a time; the systems alternate block by block (`capacity_rounds`
rounds of floor, runtime, and the peer if any), as the throughput phase alternates.

One block, for one system:

    0 ........ T ............................ T + W ......... T + W + T
    clients start,    every client in a turn     no turn starts     the last
    staggered over T  (the steady window W)      after this         turns end

Client i of n starts at i/n x T, so that the model's first bytes do not all come at once.
From T on, every client is in a turn until the first of them stops starting new ones, at
T + W (W = `capacity_window_answers` x T): that window is what is measured. The delay each
token took from the model's write to the client's receive counts if it was received in the
window; time to first token counts for the turns sent in it; the CPU of every process is
read at the window's two ends; errors count over the whole block. The load generators run
in processes of their own (load_process.py), so that their CPU shows apart and one
process's event loop does not add its own delay to every token.

A system's capacity is the highest level whose p99 token delay is within
`capacity_delay_limit_ms` (50 ms) with no errors. Once every system has failed a level at
or above `capacity_cpu_level` (the level whose CPU per token the targets compare), the
higher levels are not run. A level is marked harness-limited when a load process or the
fake model used most of a core, or when the machine's cores were all busy while the system
under test had less than one of them while the harness used more than the machine's other
processes (with more from the others, the level is marked as limited by its neighbours):
then the harness, not the system, may have set the limit.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from benchmarks.load import WindowResult, model_name
from benchmarks.load_process import (
    MAX_PROCESSES,
    LoadProcesses,
    RunCommand,
    processes_for,
)
from benchmarks.processes import CpuMeter, memory_kib, process_tree
from benchmarks.stats import merge_costs

if TYPE_CHECKING:
    from benchmarks.runner import Bench

# A process using more than this share of a core is taken as saturated.
SATURATED_CORES = 0.85
# The machine counts as saturated above this share of all its cores.
MACHINE_SATURATED = 0.95


@dataclass
class _Block:
    result: WindowResult
    cpu: dict[str, float]
    rss_kib: int
    model_stats: dict[str, Any]
    processes: int


def answer_seconds(bench: Bench) -> float:
    config = bench.config
    return config.capacity_ttfb_ms / 1000 + config.capacity_tokens / config.capacity_rate


def capacity_model(bench: Bench) -> str:
    config = bench.config
    return model_name(config.capacity_tokens, config.capacity_rate, config.capacity_ttfb_ms)


async def capacity(bench: Bench, systems: list[str]) -> dict[str, Any]:
    config = bench.config
    answer_s = answer_seconds(bench)
    results: dict[str, Any] = {
        "systems": systems,
        "tokens_per_answer": config.capacity_tokens,
        "tokens_per_second": config.capacity_rate,
        "ttfb_ms": config.capacity_ttfb_ms,
        "answer_s": answer_s,
        "window_answers": config.capacity_window_answers,
        "rounds": config.capacity_rounds,
        "delay_limit_ms": config.capacity_delay_limit_ms,
        "levels": {},
        "not_run": [],
    }
    processes = config.load_processes or processes_for(max(config.capacity_levels), MAX_PROCESSES)
    results["load_processes"] = processes
    async with LoadProcesses(processes, bench.tmp) as load:
        for position, level in enumerate(config.capacity_levels):
            blocks: dict[str, list[_Block]] = {system: [] for system in systems}
            for round_index in range(config.capacity_rounds):
                for system in systems:
                    block = await capacity_block(bench, load, system, level, f"r{round_index}")
                    blocks[system].append(block)
            summaries = {system: _summary(bench, blocks[system], level) for system in systems}
            results["levels"][str(level)] = summaries
            for system, summary in summaries.items():
                bench.log(
                    f"  {level:>4} streams {system:<8} token delay p50 "
                    f"{summary['token_delay_ms']['p50']:7.2f} p99 "
                    f"{summary['token_delay_ms']['p99']:8.2f} ms  added TTFT p99 "
                    f"{summary['added_ms']['p99']:8.2f} ms  cpu "
                    f"{summary['server_cpu_us_per_token']:6.1f} us/token "
                    f"({summary['cores']['server']:.2f} cores)  errors {summary['errors']}  "
                    f"{'PASS' if summary['passes'] else 'fail'}"
                    f"{'  (harness-limited)' if summary['harness_limited'] else ''}"
                )
            past_cpu_level = level >= config.capacity_cpu_level
            if past_cpu_level and not any(summary["passes"] for summary in summaries.values()):
                results["not_run"] = config.capacity_levels[position + 1 :]
                if results["not_run"]:
                    bench.log(f"  every system past capacity: levels {results['not_run']} skipped")
                break
    results["capacity"] = {system: capacity_of(results, system) for system in systems}
    return results


def capacity_of(results: dict[str, Any], system: str) -> dict[str, Any]:
    """The highest passing level; whether the ramp ended before the system failed (then
    its capacity is that or more); whether the first level above it that failed was
    harness-limited (then the harness may have set the limit, not the system)."""
    levels = results["levels"]
    passing = [int(level) for level, by in levels.items() if by[system]["passes"]]
    highest = max(passing, default=0)
    failed_above = [int(level) for level in levels if int(level) > highest]
    return {
        "streams": highest,
        "at_least": not failed_above,
        "harness_limited": bool(failed_above)
        and levels[str(min(failed_above))][system]["harness_limited"],
    }


async def capacity_block(
    bench: Bench, load: LoadProcesses, system: str, level: int, label: str
) -> _Block:
    """`level` closed-loop clients against `system` for one block (see the module's doc)."""
    config = bench.config
    assert bench.model is not None
    answer_s = answer_seconds(bench)
    protocol, address = bench.target(system)
    server_pids = process_tree(bench.servers[system].pid)
    processes = min(load.count, processes_for(level, load.count))
    start_ns = time.time_ns() + 500_000_000  # every load process has its command by then
    window_start_ns = start_ns + int(answer_s * 1e9)
    window_end_ns = window_start_ns + int(config.capacity_window_answers * answer_s * 1e9)
    command = RunCommand(
        protocol=protocol,
        address=address,
        sessions=[],
        model=capacity_model(bench),
        tokens=config.capacity_tokens,
        start_ns=start_ns,
        stagger_s=answer_s,
        stop_starting_s=(window_end_ns - start_ns) / 1e9,
        window_start_ns=window_start_ns,
        window_end_ns=window_end_ns,
        call_timeout=config.call_timeout,
        new_session_every=config.turns_per_session,
        out="",
    )
    sessions = [f"bench-{system}-cap{level}-{label}-{i}" for i in range(level)]
    await bench.model_stats(reset=True)
    meter = CpuMeter(
        {
            "server": server_pids,
            "model": bench.model.pid,
            **{f"load_{index}": pid for index, pid in enumerate(load.pids[:processes])},
        }
    )

    async def measure_window() -> tuple[dict[str, float], int]:
        await _sleep_until(window_start_ns)
        meter.start()
        await _sleep_until(window_end_ns)
        used = meter.stop()
        return used, sum(memory_kib(pid)["VmRSS"] for pid in server_pids)

    result, (cpu, rss_kib) = await asyncio.gather(
        load.run(processes, sessions, command), measure_window()
    )
    bench.check_alive()
    return _Block(result, cpu, rss_kib, await bench.model_stats(), processes)


async def _sleep_until(wall_ns: int) -> None:
    delay = (wall_ns - time.time_ns()) / 1e9
    if delay > 0:
        await asyncio.sleep(delay)


def _summary(bench: Bench, blocks: list[_Block], level: int) -> dict[str, Any]:
    config = bench.config
    merged = WindowResult(0, 0)
    cpu, model_stats = merge_costs((block.cpu, block.model_stats) for block in blocks)
    window_s = 0.0
    for block in blocks:
        merged.merge(block.result)
        window_s += (block.result.end_ns - block.result.start_ns) / 1e9
    merged.start_ns, merged.end_ns = 0, int(window_s * 1e9)  # for the rates below
    summary = merged.summary()
    tokens = summary["tokens_in_window"]
    wall = cpu.get("wall", 0.0) or math.nan
    loads = {name: seconds for name, seconds in cpu.items() if name.startswith("load_")}
    load_names = [name for name in loads if not name.endswith("_main_thread")]
    cores = {
        "server": cpu["server"] / wall,
        "model": cpu["model"] / wall,
        "load_generators": sum(loads[name] for name in load_names) / wall,
        "busiest_load_generator": max((loads[name] for name in load_names), default=0) / wall,
        "bench": cpu["client"] / wall,
        "others": cpu["others"] / wall,
    }
    machine = sum(cores[name] for name in ("server", "model", "load_generators", "bench"))
    cores["machine"] = machine + cores["others"]
    cpus = os.cpu_count() or 1
    harness = cores["load_generators"] + cores["model"] + cores["bench"]
    # All cores busy, and the system under test had less than one of them: someone else
    # set the pace, the harness or the machine's other processes, whichever used more.
    crowded = cores["machine"] >= MACHINE_SATURATED * cpus and cores["server"] < SATURATED_CORES
    harness_limited = (
        cores["busiest_load_generator"] >= SATURATED_CORES
        or cores["model"] >= SATURATED_CORES
        or (crowded and harness >= cores["others"])
    )
    delay_p99 = summary["token_delay_ms"]["p99"]
    summary.update(
        {
            "streams": level,
            "cpu_s": cpu,
            "cores": {name: round(value, 3) for name, value in cores.items()},
            "server_cpu_us_per_token": cpu["server"] * 1e6 / tokens if tokens else math.nan,
            # A turn's worth of tokens (its fixed costs are spread over the window too).
            "server_cpu_ms_per_turn": (
                cpu["server"] * 1e3 / tokens * config.capacity_tokens if tokens else math.nan
            ),
            "harness_cpu_us_per_token": (
                (cpu["model"] + sum(loads[name] for name in load_names)) * 1e6 / tokens
                if tokens
                else math.nan
            ),
            "rss_kib": max(block.rss_kib for block in blocks),
            "model_stats": model_stats,
            "load_processes": blocks[0].processes,
            "passes": (
                summary["errors"] == 0
                and not math.isnan(delay_p99)
                and delay_p99 <= config.capacity_delay_limit_ms
            ),
            "harness_limited": harness_limited,
            "neighbours_limited": crowded and harness < cores["others"],
        }
    )
    return summary
