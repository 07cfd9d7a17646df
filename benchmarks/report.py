"""From the raw results to results.json, results.md (and, via benchmarks.chart, chart.png)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.stats import ratio

GIB_KIB = 1024 * 1024


@dataclass
class Row:
    section: str
    metric: str
    unit: str
    runtime: float
    floor: float | None = None
    ratio: float | None = None
    target: str = ""
    met: bool | None = None


@dataclass
class Target:
    key: str
    name: str
    requirement: str
    runtime: float
    floor: float | None
    measured: float  # the figure the requirement is about (a ratio or an absolute value)
    measured_text: str
    met: bool


def target_level(results: dict[str, Any]) -> str:
    levels = sorted(int(level) for level in results["throughput"])
    return "32" if 32 in levels else str(levels[-1])


def history_ends(results: dict[str, Any]) -> tuple[str, str]:
    lengths = sorted(int(length) for length in results["history"]["runtime"])
    return str(lengths[0]), str(lengths[-1])


def _le(value: float, limit: float) -> bool:
    return not math.isnan(value) and value <= limit


def targets(results: dict[str, Any]) -> list[Target]:
    level = target_level(results)
    at = results["throughput"][level]
    run, flo = at["runtime"], at["floor"]
    out: list[Target] = []

    throughput = ratio(run["turns_per_s"], flo["turns_per_s"])
    out.append(
        Target(
            "throughput_c32",
            f"throughput at c={level}",
            ">= 0.8x floor",
            run["turns_per_s"],
            flo["turns_per_s"],
            throughput,
            f"{throughput:.2f}x",
            not math.isnan(throughput) and throughput >= 0.8,
        )
    )
    p99 = ratio(run["e2e_ms"]["p99"], flo["e2e_ms"]["p99"])
    out.append(
        Target(
            "p99_e2e_c32",
            f"p99 end-to-end latency at c={level}",
            "<= 2x floor's p99",
            run["e2e_ms"]["p99"],
            flo["e2e_ms"]["p99"],
            p99,
            f"{p99:.2f}x",
            _le(p99, 2.0),
        )
    )
    added = results["added_latency"]
    added_run = added["runtime"]["added_ms"]["p50"]
    out.append(
        Target(
            "added_latency_c1",
            f"added latency at c={added['concurrency']}, p50",
            "< 2 ms",
            added_run,
            added["floor"]["added_ms"]["p50"],
            added_run,
            f"{added_run:.2f} ms",
            not math.isnan(added_run) and added_run < 2.0,
        )
    )
    short, long = history_ends(results)
    history = results["history"]["runtime"]
    growth = ratio(history[long]["e2e_ms"]["p50"], history[short]["e2e_ms"]["p50"])
    out.append(
        Target(
            "history_10000_vs_10",
            f"turn with {int(long):,} prior messages vs {int(short):,} (p50)",
            "<= 1.5x",
            history[long]["e2e_ms"]["p50"],
            None,
            growth,
            f"{growth:.2f}x",
            _le(growth, 1.5),
        )
    )
    slow = results["slow_streams"]
    rss_kib = slow["runtime"]["peak_rss_kib"]
    errors = slow["runtime"]["errors"]
    out.append(
        Target(
            "slow_streams",
            f"{slow['streams']:,} concurrent slow streams",
            "< 1 GiB RSS, no errors",
            rss_kib / 1024,
            slow["floor"]["peak_rss_kib"] / 1024,
            rss_kib / 1024,
            f"{rss_kib / 1024:.0f} MiB, {errors} errors",
            rss_kib < GIB_KIB and errors == 0,
        )
    )
    return out


def rows(results: dict[str, Any], checks: list[Target]) -> list[Row]:
    met = {target.key: target.met for target in checks}
    level = target_level(results)
    out: list[Row] = []

    def pair(
        section: str,
        metric: str,
        unit: str,
        run: float,
        flo: float,
        target: str = "",
        ok: bool | None = None,
    ) -> None:
        out.append(Row(section, metric, unit, run, flo, ratio(run, flo), target, ok))

    for concurrency, level_results in results["throughput"].items():
        run, flo = level_results["runtime"], level_results["floor"]
        per_session = results["meta"]["config"]["turns_per_session"]
        rounds = run.get("rounds", 1)
        interleaved = f", in {rounds} rounds alternating with the floor" if rounds > 1 else ""
        section = (
            f"Throughput and latency, c={concurrency} ({run['turns']} turns, "
            f"{per_session} per session{interleaved})"
        )
        is_target = concurrency == level
        pair(
            section,
            "turns/s",
            "/s",
            run["turns_per_s"],
            flo["turns_per_s"],
            ">= 0.8x floor" if is_target else "",
            met["throughput_c32"] if is_target else None,
        )
        pair(
            section,
            "AssistantDelta chunks/s",
            "/s",
            run["delta_chunks_per_s"],
            flo["delta_chunks_per_s"],
        )
        for key, label in (
            ("ttfc_ms", "time to first chunk"),
            ("ttft_ms", "time to first token (first AssistantDelta)"),
            ("e2e_ms", "end-to-end turn latency"),
        ):
            pair(section, f"{label} p50", "ms", run[key]["p50"], flo[key]["p50"])
            is_p99_target = is_target and key == "e2e_ms"
            pair(
                section,
                f"{label} p99",
                "ms",
                run[key]["p99"],
                flo[key]["p99"],
                "<= 2x floor" if is_p99_target else "",
                met["p99_e2e_c32"] if is_p99_target else None,
            )
        pair(
            section,
            "server CPU per turn",
            "ms",
            run["server_cpu_ms_per_turn"],
            flo["server_cpu_ms_per_turn"],
        )
        pair(
            section,
            "  of which the event loop (main thread)",
            "ms",
            run["server_main_thread_cpu_ms_per_turn"],
            flo["server_main_thread_cpu_ms_per_turn"],
        )
        out.append(Row(section, "errors", "", run["errors"], flo["errors"]))

    added = results["added_latency"]
    section = f"Added latency, c={added['concurrency']} (ms; from the run above)"
    run, flo = added["runtime"], added["floor"]
    for stat in ("p50", "p99"):
        pair(
            section,
            f"added latency {stat} (TTFT - model's own TTFB)",
            "ms",
            run["added_ms"][stat],
            flo["added_ms"][stat],
            "< 2 ms" if stat == "p50" else "",
            met["added_latency_c1"] if stat == "p50" else None,
        )
    for key, label in (
        ("upstream_ms", "  of which: client sent -> model got the request"),
        ("downstream_ms", "  of which: model wrote 1st token -> client got it"),
        ("model_ttfb_ms", "model's own TTFB (not added)"),
    ):
        pair(section, f"{label}, p50", "ms", run[key]["p50"], flo[key]["p50"])

    history = results["history"]
    floor_e2e = history["floor"]["e2e_ms"]
    short, long = history_ends(results)
    section = (
        f"Cost against history length, c=1 ({results['meta']['config']['history_turns']} turns "
        f"each; floor has no history)"
    )
    for length, summary in history["runtime"].items():
        for stat in ("p50", "p99"):
            pair(
                section,
                f"turn latency with {int(length):,} prior messages, {stat}",
                "ms",
                summary["e2e_ms"][stat],
                floor_e2e[stat],
            )
    growth = ratio(
        history["runtime"][long]["e2e_ms"]["p50"], history["runtime"][short]["e2e_ms"]["p50"]
    )
    out.append(
        Row(
            section,
            f"p50 with {int(long):,} / p50 with {int(short):,}",
            "x",
            growth,
            None,
            None,
            "<= 1.5x",
            met["history_10000_vs_10"],
        )
    )

    slow = results["slow_streams"]
    run, flo = slow["runtime"], slow["floor"]
    section = (
        f"{slow['streams']:,} concurrent slow streams ({slow['tokens_per_answer']} tokens at "
        f"{slow['tokens_per_second']:g} tokens/s each; fresh processes)"
    )
    pair(
        section,
        "peak RSS (VmHWM)",
        "MiB",
        run["peak_rss_kib"] / 1024,
        flo["peak_rss_kib"] / 1024,
        "< 1 GiB",
        run["peak_rss_kib"] < GIB_KIB,
    )
    out.append(
        Row(section, "errors", "", run["errors"], flo["errors"], None, "0", run["errors"] == 0)
    )
    for stat in ("p50", "p99"):
        pair(
            section,
            f"delay a token takes from model to client, {stat}",
            "ms",
            run["token_delay_ms"][stat],
            flo["token_delay_ms"][stat],
        )
    pair(section, "time to first token p99", "ms", run["ttft_ms"]["p99"], flo["ttft_ms"]["p99"])
    pair(section, "end-to-end p99", "ms", run["e2e_ms"]["p99"], flo["e2e_ms"]["p99"])
    pair(
        section,
        "most model streams open at once",
        "",
        run["model_stats"]["peak_in_flight"],
        flo["model_stats"]["peak_in_flight"],
    )
    pair(
        section, "most gRPC calls open at once", "", run["peak_open_calls"], flo["peak_open_calls"]
    )
    return out


# -- formatting -------------------------------------------------------------------------------


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    if unit == "x":
        return f"{value:.2f}x"
    if unit in ("", "count"):
        return f"{value:,.0f}"
    if unit == "ms":
        digits = 2 if abs(value) < 10 else 1 if abs(value) < 1000 else 0
        return f"{value:,.{digits}f} ms"
    if unit == "MiB":
        return f"{value:,.0f} MiB"
    return f"{value:,.1f}{unit}"


def _met(value: bool | None) -> str:
    return "" if value is None else ("yes" if value else "**NO**")


def markdown(results: dict[str, Any], checks: list[Target], table: list[Row]) -> str:
    meta = results["meta"]
    lines = [
        "# agent-runtime benchmark results",
        "",
        f"Generated by `scripts/bench{' --quick' if meta['quick'] else ''}` on {meta['date']} "
        f"in {meta['duration_s']:.0f} s; runtime at git {meta['git']}"
        + (
            f" (a frozen checkout, `--runtime-src {meta['config']['runtime_src']}`)."
            if meta["config"].get("runtime_src")
            else "."
        ),
        f"Machine: {meta['cpus']} x {meta['cpu_model']}, {meta['memory_gib']} GiB, "
        f"Linux {meta['kernel']}, Python {meta['python']}, grpcio {meta['versions']['grpcio']}, "
        f"SQLite {meta['sqlite']}. The load generator, the fake model, and the server under test "
        "share these cores.",
        "",
    ]
    phases = [
        *(level[system] for level in results["throughput"].values() for system in level),
        *results["history"]["runtime"].values(),
        results["history"]["floor"],
        results["slow_streams"]["runtime"],
        results["slow_streams"]["floor"],
    ]
    others = sum(phase["cpu_s"]["others"] for phase in phases)
    wall = sum(phase["cpu_s"]["wall"] for phase in phases)
    lines += [
        f"Other processes on the machine used {others / wall if wall else 0:.2f} cores on "
        "average during the measured phases (0 would be a quiet machine).",
        "",
    ]
    if meta.get("git_at_end", meta["git"]) != meta["git"]:
        lines += [
            f"**Warning: agent_runtime/ changed during the run (at the end: "
            f"{meta['git_at_end']}); processes started later ran newer code.**",
            "",
        ]
    if meta["quick"]:
        lines += ["**Quick run (tiny sizes): a smoke test, not a measurement.**", ""]
    # Results written before the option existed had the floor on httpx.
    floor_client = meta.get("floor_http_client", "httpx")
    lines += [
        "The floor is a bare grpc.aio relay of the same model answer (no database, no logic) "
        f"whose model calls go through {floor_client}"
        + (", the runtime's own model client's library" if floor_client == "aiohttp" else "")
        + "; ratio = runtime ÷ floor. What each figure means: [README.md](README.md).",
        "",
        "## Targets",
        "",
        "| target | required | runtime | floor | measured | met? |",
        "|---|---|---|---|---|---|",
    ]
    for target in checks:
        unit = (
            "MiB" if target.key == "slow_streams" else "/s" if "throughput" in target.key else "ms"
        )
        lines.append(
            f"| {target.name} | {target.requirement} | {fmt(target.runtime, unit)} | "
            f"{fmt(target.floor, unit)} | {target.measured_text} | {_met(target.met)} |"
        )
    met = sum(target.met for target in checks)
    lines += ["", f"{met} of {len(checks)} targets met.", "", "## All figures", ""]
    section = None
    for row in table:
        if row.section != section:
            section = row.section
            lines += [
                "",
                f"### {section}",
                "",
                "| metric | runtime | floor | ratio | target | met? |",
                "|---|---|---|---|---|---|",
            ]
        lines.append(
            f"| {row.metric} | {fmt(row.runtime, row.unit)} | {fmt(row.floor, row.unit)} | "
            f"{fmt(row.ratio, 'x')} | {row.target} | {_met(row.met)} |"
        )
    lines += _replicas_section(results.get("replicas"))
    errors = {
        name: results["throughput"][level][name]["error_kinds"]
        for level in results["throughput"]
        for name in ("runtime", "floor")
        if results["throughput"][level][name]["errors"]
    }
    slow_errors = {
        name: results["slow_streams"][name]["error_kinds"]
        for name in ("runtime", "floor")
        if results["slow_streams"][name]["errors"]
    }
    if errors or slow_errors:
        lines += ["", "## Errors by kind", ""]
        for level in results["throughput"]:
            for name in ("runtime", "floor"):
                kinds = results["throughput"][level][name]["error_kinds"]
                if kinds:
                    lines.append(f"- c={level}, {name}: {kinds}")
        for name, kinds in slow_errors.items():
            lines.append(f"- slow streams, {name}: {kinds}")
    log = results.get("runtime_log") or {}
    if log.get("warnings") or log.get("errors"):
        lines += [
            "",
            "## The runtime's own log",
            "",
            f"{log['warnings']} warnings and {log['errors']} errors over the run "
            "(ids and numbers replaced by …):",
            "",
        ]
        lines += [f"- {count} times: `{kind}`" for kind, count in log["kinds"].items()]
    return "\n".join(lines) + "\n"


def _replicas_section(replicas: dict[str, Any] | None) -> list[str]:
    """The replica mode (`--postgres`), when it ran."""
    if not replicas:
        return []
    levels = replicas["levels"]
    one = levels.get("1", {}).get("turns_per_s", math.nan)
    lines = [
        "",
        "## Replicas on PostgreSQL",
        "",
        f"c={replicas['concurrency']} concurrent sessions spread round-robin over the "
        f"replicas; each level on a fresh database; {replicas['pool_size']} pooled "
        "connections per replica. All replicas, PostgreSQL, the model and the load generator "
        "share the machine's cores, so more replicas add contention as well as capacity.",
        "",
        "| replicas | turns/s | vs 1 replica | e2e p50 | e2e p99 | server CPU/turn | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for count, level in levels.items():
        lines.append(
            f"| {count} | {fmt(level['turns_per_s'], '/s')} | "
            f"{fmt(ratio(level['turns_per_s'], one), 'x')} | "
            f"{fmt(level['e2e_ms']['p50'], 'ms')} | {fmt(level['e2e_ms']['p99'], 'ms')} | "
            f"{fmt(level['server_cpu_ms_per_turn'], 'ms')} | {level['errors']} |"
        )
    kinds = {count: level["error_kinds"] for count, level in levels.items() if level["errors"]}
    lines += [f"- errors with {count} replica(s): {found}" for count, found in kinds.items()]
    return lines


def _clean(value: Any) -> Any:
    """NaN and infinities become null, so the JSON is strict."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(item) for item in value]
    return value


def write_outputs(results: dict[str, Any], out: Path) -> dict[str, Path]:
    from benchmarks.chart import draw

    out.mkdir(parents=True, exist_ok=True)
    checks = targets(results)
    table = rows(results, checks)
    results["targets"] = [asdict(target) for target in checks]
    results["table"] = [asdict(row) for row in table]
    paths = {
        "json": out / "results.json",
        "markdown": out / "results.md",
        "chart": out / "chart.png",
    }
    paths["json"].write_text(json.dumps(_clean(results), indent=1, allow_nan=False) + "\n")
    paths["markdown"].write_text(markdown(results, checks, table))
    draw(results, checks, paths["chart"])
    return paths
