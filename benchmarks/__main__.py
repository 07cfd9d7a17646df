"""`scripts/bench`: see docs/benchmarks/README.md, or run with --help."""

from __future__ import annotations

import os

# Before grpc is imported: the children are started with fork+exec while this process's
# gRPC client threads run, and gRPC's fork handlers would only log that they step aside.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import argparse
import asyncio
import signal
import sys
import time
from pathlib import Path

from benchmarks.report import write_outputs
from benchmarks.runner import PEERS, REPO, Config


def _ints(text: str) -> list[int]:
    try:
        values = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"need positive integers: {text!r}")
    return values


def _parser() -> argparse.ArgumentParser:
    defaults = Config(out=REPO / "docs" / "benchmarks")
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Benchmark agent-runtime against the floor (the runtime's model client "
        "and stream framing, without its database and logic) and optionally a peer (the "
        "LiteLLM proxy), each in its own process on 127.0.0.1, against a fake model: a burst "
        "phase (zero-latency model), a capacity phase (a model at a real pace), history, slow "
        "streams. Writes results.json, results.md and chart.png.",
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="tiny sizes, a few seconds: a smoke test")
    add("--out", type=Path, default=defaults.out, help="output folder (default docs/benchmarks)")
    add("--concurrency", type=_ints, help="burst phase: sessions per level (default 1,32,256)")
    add("--turns", type=int, help=f"burst phase: turns per level (default {defaults.turns})")
    add(
        "--turns-per-session",
        type=int,
        help="throughput phase: a worker moves to a new session after this many turns (10)",
    )
    add(
        "--rounds",
        type=int,
        help="throughput phase: alternate floor and runtime this many times per level, so a "
        f"drift of the host's speed weighs on both (default {defaults.rounds}; 1: floor, then "
        "runtime)",
    )
    add("--tokens", type=int, help=f"burst, history: tokens per answer ({defaults.tokens})")
    add(
        "--capacity-levels",
        type=_ints,
        help="capacity phase: concurrent streams per level (default "
        + ",".join(map(str, defaults.capacity_levels))
        + ")",
    )
    add("--capacity-tokens", type=int, help="capacity phase: tokens per answer (200)")
    add("--capacity-rate", type=float, help="capacity phase: tokens per second (50)")
    add("--capacity-ttfb-ms", type=float, help="capacity phase: model's time to first token (300)")
    add(
        "--capacity-window-answers",
        type=float,
        help="capacity phase: length of a block's measured window, in answer times (1)",
    )
    add(
        "--capacity-rounds",
        type=int,
        help="capacity phase: blocks per system per level, the systems alternating (2)",
    )
    add(
        "--capacity-delay-limit-ms",
        type=float,
        help="capacity phase: p99 token delay a level may have to pass (50)",
    )
    add(
        "--capacity-cpu-level",
        type=int,
        help="capacity phase: the level whose CPU per token the targets compare; the ramp "
        "stops early only above it (200)",
    )
    add(
        "--capacity-profile-level",
        type=int,
        help="--profile: the capacity level the runtime is profiled at (200)",
    )
    add(
        "--load-processes",
        type=int,
        help="capacity phase: load-generator processes (default: 1 per 100 streams, at most 4)",
    )
    add(
        "--peer",
        choices=PEERS,
        help="also measure this peer: litellm, the LiteLLM proxy (installed into its own "
        "virtualenv under ~/.cache/agent-runtime-bench on first use)",
    )
    add("--history", type=_ints, help="prior messages per history level (default 10,1000,10000)")
    add("--history-turns", type=int, help=f"turns per history level ({defaults.history_turns})")
    add("--history-message-bytes", type=int, help="size of each seeded message (default 300)")
    add("--slow-streams", type=int, help="concurrent slow streams (default 1000)")
    add("--slow-tokens", type=int, help="tokens per slow answer (default 40)")
    add("--slow-rate", type=float, help="tokens per second of a slow answer (default 20)")
    add("--channels", type=int, help="gRPC connections per client (default: 1 per 64 calls)")
    add("--call-timeout", type=float, help="deadline of one StreamMessage call, s (120)")
    add("--phase-seconds", type=float, help="no turn of a phase starts after this, s (120)")
    add(
        "--profile",
        action="store_true",
        help="also profile the runtime with py-spy: at c=32 of the burst phase and at one "
        "level of the capacity phase",
    )
    add("--profile-seconds", type=float, help="length of the profiled run, s (15)")
    add("--db-dir", type=Path, help="where the SQLite files and logs go (default: system temp)")
    add("--keep-tmp", action="store_true", help="keep the databases and process logs")
    add(
        "--runtime-src",
        type=Path,
        help="measure the agent_runtime/ of another checkout (default: this one), for A/B runs",
    )
    add(
        "--postgres",
        metavar="URL",
        help="also run the replica mode: replicas on fresh databases on this PostgreSQL server "
        "(e.g. postgresql://postgres@127.0.0.1:5432/test)",
    )
    add("--replicas", type=_ints, help="replica counts of the replica mode (default 1,2,3)")
    add("--replica-concurrency", type=int, help="concurrent sessions there (default 64)")
    add("--replica-pool-size", type=int, help="database connections per replica (default 10)")
    add("--replica-tenants", type=int, help="tenants the replica mode's sessions spread over (1)")
    add(
        "--replica-watchers",
        type=int,
        help="idle WatchEvents streams per replica, each on a session nobody writes to (0)",
    )
    add(
        "--replica-lease-seconds",
        type=float,
        help="the replicas' AGENT_RUNTIME_LEASE_SECONDS (default: the runtime's, 30)",
    )
    add("--max-seconds", type=float, default=1800.0, help="abort the whole run after this")
    return parser


def config_from(args: argparse.Namespace) -> Config:
    out = args.out if args.out.is_absolute() else Path.cwd() / args.out
    config = Config.quick_sizes(out) if args.quick else Config(out=out)
    for name in (
        "concurrency",
        "turns",
        "turns_per_session",
        "rounds",
        "tokens",
        "history",
        "history_turns",
        "history_message_bytes",
        "slow_streams",
        "slow_tokens",
        "slow_rate",
        "channels",
        "call_timeout",
        "phase_seconds",
        "profile_seconds",
        "db_dir",
        "runtime_src",
        "capacity_levels",
        "capacity_tokens",
        "capacity_rate",
        "capacity_ttfb_ms",
        "capacity_window_answers",
        "capacity_rounds",
        "capacity_delay_limit_ms",
        "capacity_profile_level",
        "capacity_cpu_level",
        "load_processes",
        "peer",
        "postgres",
        "replicas",
        "replica_concurrency",
        "replica_pool_size",
        "replica_tenants",
        "replica_watchers",
        "replica_lease_seconds",
    ):
        value = getattr(args, name)
        if value is not None:
            setattr(config, name, value)
    config.profile = args.profile
    config.keep_tmp = args.keep_tmp
    return config


async def _run(config: Config, max_seconds: float) -> dict[str, object]:
    from benchmarks.runner import Bench

    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", flush=True)

    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, main.cancel)  # unwinds, so every child is stopped
    async with asyncio.timeout(max_seconds):
        return await Bench(config, log).run()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config = config_from(args)
    config.out.mkdir(parents=True, exist_ok=True)
    try:
        results = asyncio.run(_run(config, args.max_seconds))
    except TimeoutError:
        print(f"scripts/bench: gave up after {args.max_seconds:.0f} s", file=sys.stderr)
        return 1
    except asyncio.CancelledError:
        print("scripts/bench: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"scripts/bench: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    paths = write_outputs(results, config.out)
    for kind, path in paths.items():
        print(f"wrote {kind}: {path}")
    print((config.out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
