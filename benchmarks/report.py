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
    ratio: float | None = None  # runtime / floor
    target: str = ""
    met: bool | None = None
    peer: float | None = None
    peer_ratio: float | None = None  # runtime / peer


@dataclass
class Target:
    key: str
    name: str
    requirement: str
    runtime: float
    reference: float | None  # what the requirement compares with (the floor's, the peer's)
    reference_name: str  # "floor", "peer" or "" (an absolute requirement)
    unit: str
    measured: float  # the figure the requirement is about (a ratio or an absolute value)
    measured_text: str
    met: bool
    margin: str  # "met with 0.12x to spare" / "missed by 0.30x (38 %)"


def target_level(results: dict[str, Any]) -> str:
    levels = sorted(int(level) for level in results["throughput"])
    return "32" if 32 in levels else str(levels[-1])


def history_ends(results: dict[str, Any]) -> tuple[str, str]:
    lengths = sorted(int(length) for length in results["history"]["runtime"])
    return str(lengths[0]), str(lengths[-1])


def cpu_level(results: dict[str, Any]) -> str | None:
    """The capacity level whose CPU per token the targets compare: the configured one if it
    ran, else the highest that ran."""
    levels = results["capacity"]["levels"]
    wanted = str(results["meta"]["config"].get("capacity_cpu_level", 200))
    if wanted in levels:
        return wanted
    return max(levels, key=int) if levels else None


def _ok(value: float) -> bool:
    return not math.isnan(value)


def _margin(measured: float, limit: float, *, upper: bool, unit: str) -> str:
    """How far `measured` is inside (or outside) the bound `limit`."""
    if math.isnan(measured):
        return "not measured"
    gap = limit - measured if upper else measured - limit
    shown = f"{abs(gap):.2f}x" if unit == "x" else f"{abs(gap):.2f} {unit}"
    if gap >= 0:
        return f"met with {shown} to spare"
    share = f" ({abs(gap) / limit:.0%} of the bound)" if limit else ""
    return f"missed by {shown}{share}"


def _ratio_target(
    key: str,
    name: str,
    run: float,
    reference: float,
    reference_name: str,
    unit: str,
    limit: float,
    *,
    upper: bool,
) -> Target:
    value = ratio(run, reference)
    met = _ok(value) and (value <= limit if upper else value >= limit)
    bound = "<=" if upper else ">="
    return Target(
        key,
        name,
        f"{bound} {limit:g}x the {reference_name}'s",
        run,
        reference,
        reference_name,
        unit,
        value,
        f"{value:.2f}x",
        met,
        _margin(value, limit, upper=upper, unit="x"),
    )


def targets(results: dict[str, Any]) -> list[Target]:
    out: list[Target] = []
    cap = results["capacity"]
    capacity = cap["capacity"]
    run_cap, flo_cap = capacity["runtime"]["streams"], capacity["floor"]["streams"]
    target = _ratio_target(
        "capacity",
        f"capacity at {cap['tokens_per_second']:g} tokens/s (streams with p99 token delay "
        f"<= {cap['delay_limit_ms']:g} ms, no errors)",
        run_cap,
        flo_cap,
        "floor",
        "streams",
        0.8,
        upper=False,
    )
    if capacity["floor"]["at_least"]:
        target.measured_text += " (the floor passed every level run: its capacity is higher)"
    out.append(target)
    level = cpu_level(results)
    if level is not None:
        at = cap["levels"][level]
        out.append(
            _ratio_target(
                "cpu_per_token",
                f"server CPU per token at {level} streams",
                at["runtime"]["server_cpu_us_per_token"],
                at["floor"]["server_cpu_us_per_token"],
                "floor",
                "us",
                1.25,
                upper=True,
            )
        )
    burst = target_level(results)
    at = results["throughput"][burst]
    out.append(
        _ratio_target(
            "burst_throughput",
            f"burst: turns/s at c={burst}",
            at["runtime"]["turns_per_s"],
            at["floor"]["turns_per_s"],
            "floor",
            "/s",
            0.8,
            upper=False,
        )
    )
    out.append(
        _ratio_target(
            "burst_p99",
            f"burst: p99 end-to-end latency at c={burst}",
            at["runtime"]["e2e_ms"]["p99"],
            at["floor"]["e2e_ms"]["p99"],
            "floor",
            "ms",
            2.0,
            upper=True,
        )
    )
    added = results["added_latency"]
    run_added = added["runtime"]["added_ms"]["p50"]
    flo_added = added["floor"]["added_ms"]["p50"]
    over = run_added - flo_added
    out.append(
        Target(
            "added_latency_c1",
            f"added latency at c={added['concurrency']}, p50 (TTFT - the model's own TTFB)",
            "<= the floor's + 2 ms",
            run_added,
            flo_added,
            "floor",
            "ms",
            over,
            f"floor + {over:.2f} ms",
            _ok(over) and over <= 2.0,
            _margin(over, 2.0, upper=True, unit="ms"),
        )
    )
    if "peer" in added:
        out.append(
            _ratio_target(
                "peer_added_latency",
                f"added latency at c={added['concurrency']}, p50, against the peer",
                run_added,
                added["peer"]["added_ms"]["p50"],
                "peer",
                "ms",
                1.0,
                upper=True,
            )
        )
        if level is not None and "peer" in cap["levels"][level]:
            at = cap["levels"][level]
            out.append(
                _ratio_target(
                    "peer_cpu_per_token",
                    f"server CPU per token at {level} streams, against the peer",
                    at["runtime"]["server_cpu_us_per_token"],
                    at["peer"]["server_cpu_us_per_token"],
                    "peer",
                    "us",
                    1.0,
                    upper=True,
                )
            )
    short, long = history_ends(results)
    history = results["history"]["runtime"]
    out.append(
        _ratio_target(
            "history",
            f"turn with {int(long):,} prior messages vs {int(short):,} (p50)",
            history[long]["e2e_ms"]["p50"],
            history[short]["e2e_ms"]["p50"],
            f"{int(short):,}-message turn",
            "ms",
            1.5,
            upper=True,
        )
    )
    slow = results["slow_streams"]
    run_slow, flo_slow = slow["runtime"], slow["floor"]
    rss_kib = run_slow["peak_rss_kib"]
    errors = run_slow["errors"]
    ttft = ratio(run_slow["ttft_ms"]["p99"], flo_slow["ttft_ms"]["p99"])
    met = rss_kib < GIB_KIB and errors == 0 and _ok(ttft) and ttft <= 2.0
    missed = [
        *(
            [f"RSS over 1 GiB by {(rss_kib - GIB_KIB) / 1024:.0f} MiB"]
            if rss_kib >= GIB_KIB
            else []
        ),
        *([f"{errors} errors"] if errors else []),
        *([f"TTFT p99 {ttft:.2f}x the floor's, over 2x"] if not (_ok(ttft) and ttft <= 2) else []),
    ]
    out.append(
        Target(
            "slow_streams",
            f"{slow['streams']:,} concurrent slow streams",
            "< 1 GiB RSS, no errors, TTFT p99 <= 2x the floor's",
            rss_kib / 1024,
            flo_slow["peak_rss_kib"] / 1024,
            "floor",
            "MiB",
            ttft,
            f"{rss_kib / 1024:.0f} MiB, {errors} errors, TTFT p99 {ttft:.2f}x",
            met,
            "met" if met else "missed: " + "; ".join(missed),
        )
    )
    return out


def rows(results: dict[str, Any], checks: list[Target]) -> list[Row]:
    met = {target.key: target.met for target in checks}
    out: list[Row] = []

    def pair(
        section: str,
        metric: str,
        unit: str,
        by: dict[str, Any],
        get: Any,
        target: str = "",
        ok: bool | None = None,
    ) -> None:
        """One row: `get(summary)` of each system present in `by`."""
        run = get(by["runtime"])
        flo = get(by["floor"]) if "floor" in by else None
        peer = get(by["peer"]) if "peer" in by else None
        out.append(
            Row(
                section,
                metric,
                unit,
                run,
                flo,
                ratio(run, flo) if flo is not None else None,
                target,
                ok,
                peer,
                ratio(run, peer) if peer is not None else None,
            )
        )

    cap = results["capacity"]
    level_for_cpu = cpu_level(results)
    for streams, by in cap["levels"].items():
        section = (
            f"Capacity, {streams} concurrent streams ({cap['tokens_per_answer']} tokens at "
            f"{cap['tokens_per_second']:g}/s after {cap['ttfb_ms']:g} ms; {cap['rounds']} "
            "blocks per system, alternating)"
        )
        limit = cap["delay_limit_ms"]
        pair(section, "added delay per token, p50", "ms", by, lambda s: s["token_delay_ms"]["p50"])
        pair(
            section,
            "added delay per token, p99",
            "ms",
            by,
            lambda s: s["token_delay_ms"]["p99"],
            f"<= {limit:g} ms to pass",
        )
        pair(section, "added time to first token, p99", "ms", by, lambda s: s["added_ms"]["p99"])
        is_cpu = streams == level_for_cpu
        pair(
            section,
            "server CPU per token",
            "us",
            by,
            lambda s: s["server_cpu_us_per_token"],
            "<= 1.25x floor" if is_cpu else "",
            met.get("cpu_per_token") if is_cpu else None,
        )
        pair(section, "server CPU per turn", "ms", by, lambda s: s["server_cpu_ms_per_turn"])
        pair(section, "server cores used", "", by, lambda s: s["cores"]["server"])
        pair(
            section,
            "AssistantDelta chunks per token",
            "",
            by,
            lambda s: s["delta_chunks_per_token"],
        )
        pair(section, "tokens received per second", "/s", by, lambda s: s["tokens_per_s"])
        pair(section, "server RSS", "MiB", by, lambda s: s["rss_kib"] / 1024)
        pair(section, "errors", "count", by, lambda s: s["errors"])
        pair(
            section,
            "harness cores (load generators + fake model)",
            "",
            by,
            lambda s: s["cores"]["load_generators"] + s["cores"]["model"],
        )
        pair(section, "other processes' cores", "", by, lambda s: s["cores"]["others"])

    for concurrency, level_results in results["throughput"].items():
        per_session = results["meta"]["config"]["turns_per_session"]
        rounds = level_results["runtime"].get("rounds", 1)
        interleaved = f", in {rounds} rounds alternating" if rounds > 1 else ""
        section = (
            f"Burst (zero-latency model), c={concurrency} ({level_results['runtime']['turns']} "
            f"turns, {per_session} per session{interleaved})"
        )
        is_target = concurrency == target_level(results)
        pair(
            section,
            "turns/s",
            "/s",
            level_results,
            lambda s: s["turns_per_s"],
            ">= 0.8x floor" if is_target else "",
            met["burst_throughput"] if is_target else None,
        )
        pair(
            section,
            "AssistantDelta chunks/s",
            "/s",
            level_results,
            lambda s: s["delta_chunks_per_s"],
        )
        for key, label in (
            ("ttfc_ms", "time to first chunk"),
            ("ttft_ms", "time to first token (first AssistantDelta)"),
            ("e2e_ms", "end-to-end turn latency"),
        ):
            pair(section, f"{label} p50", "ms", level_results, lambda s, k=key: s[k]["p50"])
            is_p99_target = is_target and key == "e2e_ms"
            pair(
                section,
                f"{label} p99",
                "ms",
                level_results,
                lambda s, k=key: s[k]["p99"],
                "<= 2x floor" if is_p99_target else "",
                met["burst_p99"] if is_p99_target else None,
            )
        pair(
            section,
            "server CPU per turn",
            "ms",
            level_results,
            lambda s: s["server_cpu_ms_per_turn"],
        )
        pair(section, "errors", "count", level_results, lambda s: s["errors"])

    added = results["added_latency"]
    section = f"Added latency, c={added['concurrency']} (from the burst run above)"
    for stat in ("p50", "p99"):
        pair(
            section,
            f"added latency {stat} (TTFT - model's own TTFB)",
            "ms",
            added,
            lambda s, st=stat: s["added_ms"][st],
            "<= floor + 2 ms" if stat == "p50" else "",
            met["added_latency_c1"] if stat == "p50" else None,
        )
    for key, label in (
        ("upstream_ms", "  of which: client sent -> model got the request"),
        ("downstream_ms", "  of which: model wrote 1st token -> client got it"),
        ("model_ttfb_ms", "model's own TTFB (not added)"),
    ):
        pair(section, f"{label}, p50", "ms", added, lambda s, k=key: s[k]["p50"])

    history = results["history"]
    short, long = history_ends(results)
    section = (
        f"Cost against history length, c=1 ({results['meta']['config']['history_turns']} turns "
        "each; the floor has no history)"
    )
    for length, summary in history["runtime"].items():
        for stat in ("p50", "p99"):
            pair(
                section,
                f"turn latency with {int(length):,} prior messages, {stat}",
                "ms",
                {"runtime": summary, "floor": history["floor"]},
                lambda s, st=stat: s["e2e_ms"][st],
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
            met["history"],
        )
    )

    slow = results["slow_streams"]
    section = (
        f"{slow['streams']:,} concurrent slow streams ({slow['tokens_per_answer']} tokens at "
        f"{slow['tokens_per_second']:g} tokens/s each; fresh processes)"
    )
    pair(
        section,
        "peak RSS (VmHWM)",
        "MiB",
        slow,
        lambda s: s["peak_rss_kib"] / 1024,
        "< 1 GiB",
        slow["runtime"]["peak_rss_kib"] < GIB_KIB,
    )
    pair(
        section, "errors", "count", slow, lambda s: s["errors"], "0", slow["runtime"]["errors"] == 0
    )
    for stat in ("p50", "p99"):
        pair(
            section,
            f"delay a token takes from model to client, {stat}",
            "ms",
            slow,
            lambda s, st=stat: s["token_delay_ms"][st],
        )
    pair(
        section,
        "time to first token p99",
        "ms",
        slow,
        lambda s: s["ttft_ms"]["p99"],
        "<= 2x floor",
        met["slow_streams"],
    )
    pair(section, "end-to-end p99", "ms", slow, lambda s: s["e2e_ms"]["p99"])
    pair(
        section,
        "most model streams open at once",
        "count",
        slow,
        lambda s: s["model_stats"]["peak_in_flight"],
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
    if unit == "count":
        return f"{value:,.0f}"
    if unit == "":
        return f"{value:,.2f}" if isinstance(value, float) else f"{value:,}"
    if unit == "ms":
        digits = 2 if abs(value) < 10 else 1 if abs(value) < 1000 else 0
        return f"{value:,.{digits}f} ms"
    if unit == "us":
        return f"{value:,.0f} µs"
    if unit == "streams":
        return f"{value:,.0f} streams"
    if unit == "MiB":
        return f"{value:,.0f} MiB"
    return f"{value:,.1f}{unit}"


def _met(value: bool | None) -> str:
    return "" if value is None else ("yes" if value else "**NO**")


def _capacity_text(results: dict[str, Any], system: str) -> str:
    found = results["capacity"]["capacity"][system]
    text = f"{found['streams']}"
    if found["at_least"]:
        text = f">= {text} (passed every level run)"
    if found["harness_limited"]:
        text += " (the next level was harness-limited)"
    return text


def markdown(results: dict[str, Any], checks: list[Target], table: list[Row]) -> str:
    meta = results["meta"]
    peer = results.get("peer")
    cap = results["capacity"]
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
        f"SQLite {meta['sqlite']}. The load generators, the fake model and the system under "
        "test share these cores.",
        "",
    ]
    if meta.get("runtime_changed", meta.get("git_at_end", meta["git"]) != meta["git"]):
        lines += [
            f"**Warning: agent_runtime/ changed during the run (at the end: "
            f"{meta['git_at_end']}); processes started later ran newer code.**",
            "",
        ]
    if meta["quick"]:
        lines += ["**Quick run (tiny sizes): a smoke test, not a measurement.**", ""]
    lines += [
        "**The floor** is the runtime's own model client (httpx on the same transport, built "
        "from the same settings) and its delta coalescing, framing each turn as the runtime "
        "does (TurnStarted, deltas, AssistantMessage, TurnCompleted), with no database and no "
        "domain logic: every ratio to it is the cost of persistence and logic.",
        "",
    ]
    if peer:
        lines += [
            f"**The peer** is the LiteLLM proxy ({peer['package']}; {peer['setup']}), "
            "forwarding to the same fake model, driven by an OpenAI-style streaming HTTP "
            "client. It keeps no state, while the runtime makes two durable commits per turn "
            "(the user's message before the model call, the answer after it).",
            "",
        ]
    lines += ["What each figure means: [README.md](README.md).", "", "## Targets", ""]
    lines += [
        "| target | required | runtime | compared with | measured | met? | by how much |",
        "|---|---|---|---|---|---|---|",
    ]
    for target in checks:
        reference = (
            f"{fmt(target.reference, target.unit)} ({target.reference_name})"
            if target.reference is not None
            else "—"
        )
        lines.append(
            f"| {target.name} | {target.requirement} | {fmt(target.runtime, target.unit)} | "
            f"{reference} | {target.measured_text} | {_met(target.met)} | {target.margin} |"
        )
    met_count = sum(target.met for target in checks)
    lines += ["", f"{met_count} of {len(checks)} targets met.", ""]
    systems = cap["systems"]
    lines += [
        "## Capacity",
        "",
        f"{cap['tokens_per_answer']} tokens at {cap['tokens_per_second']:g} tokens/s after "
        f"{cap['ttfb_ms']:g} ms per answer; closed-loop clients on sessions of their own; "
        f"a level passes with p99 added token delay <= {cap['delay_limit_ms']:g} ms and no "
        f"errors; {cap['load_processes']} load-generator process(es) at most.",
        "",
        "| system | capacity (streams) |",
        "|---|---|",
        *(f"| {system} | {_capacity_text(results, system)} |" for system in systems),
        "",
        "| streams | "
        + " | ".join(f"{s}: p99 token delay / CPU per token" for s in systems)
        + " | harness-limited? |",
        "|---" * (len(systems) + 2) + "|",
    ]
    for streams, by in cap["levels"].items():
        cells = [
            f"{fmt(by[s]['token_delay_ms']['p99'], 'ms')} / "
            f"{fmt(by[s]['server_cpu_us_per_token'], 'us')}"
            + ("" if by[s]["passes"] else " (fail)")
            for s in systems
        ]
        limited = [s for s in systems if by[s]["harness_limited"]]
        crowded = [s for s in systems if by[s].get("neighbours_limited")]
        note = ", ".join(
            [*(f"{s}: yes" for s in limited), *(f"{s}: busy neighbours" for s in crowded)]
        )
        lines.append(f"| {streams} | " + " | ".join(cells) + f" | {note or 'no'} |")
    if cap.get("not_run"):
        lines += ["", f"Levels not run (every system past capacity below): {cap['not_run']}."]
    lines += ["", "## All figures", ""]
    show_peer = any(row.peer is not None for row in table)
    section = None
    for row in table:
        if row.section != section:
            section = row.section
            head = "| metric | runtime | floor | ÷ floor |"
            rule = "|---|---|---|---|"
            if show_peer:
                head += " peer | ÷ peer |"
                rule += "---|---|"
            lines += ["", f"### {section}", "", head + " target | met? |", rule + "---|---|"]
        cells = [row.metric, fmt(row.runtime, row.unit), fmt(row.floor, row.unit)]
        cells.append(fmt(row.ratio, "x"))
        if show_peer:
            cells += [fmt(row.peer, row.unit), fmt(row.peer_ratio, "x")]
        cells += [row.target, _met(row.met)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += _replicas_section(results.get("replicas"))
    lines += _errors_section(results)
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


def _errors_section(results: dict[str, Any]) -> list[str]:
    found: list[str] = []
    for level, by in results["throughput"].items():
        found += [
            f"- burst c={level}, {s}: {x['error_kinds']}" for s, x in by.items() if x["errors"]
        ]
    for level, by in results["capacity"]["levels"].items():
        found += [
            f"- capacity {level} streams, {s}: {x['error_kinds']}"
            for s, x in by.items()
            if x["errors"]
        ]
    slow = results["slow_streams"]
    found += [
        f"- slow streams, {s}: {slow[s]['error_kinds']}"
        for s in ("runtime", "floor")
        if slow[s]["errors"]
    ]
    return ["", "## Errors by kind", "", *found] if found else []


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
        f"replicas and over {replicas.get('tenants', 1)} tenant(s); "
        f"{replicas.get('watchers_per_replica', 0)} idle WatchEvents streams per replica; "
        f"lease {replicas.get('lease_seconds') or 'the default'} s; each level on a fresh "
        f"database; {replicas['pool_size']} pooled connections per replica. All replicas, "
        "PostgreSQL, the model and the load generator share the machine's cores, so more "
        "replicas add contention as well as capacity. Database transactions are counted over "
        "the replicas' whole life (warm-up turns included).",
        "",
        "| replicas | turns/s | vs 1 replica | e2e p50 | e2e p99 | server CPU/turn | "
        "database transactions/turn | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for count, level in levels.items():
        lines.append(
            f"| {count} | {fmt(level['turns_per_s'], '/s')} | "
            f"{fmt(ratio(level['turns_per_s'], one), 'x')} | "
            f"{fmt(level['e2e_ms']['p50'], 'ms')} | {fmt(level['e2e_ms']['p99'], 'ms')} | "
            f"{fmt(level['server_cpu_ms_per_turn'], 'ms')} | "
            f"{fmt(level.get('db_transactions_per_turn', math.nan), '')} | {level['errors']} |"
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
    paths = {
        "json": out / "results.json",
        "markdown": out / "results.md",
        "chart": out / "chart.png",
    }
    # The measurements first: a report that fails below must not lose the run.
    paths["json"].write_text(json.dumps(_clean(results), indent=1, allow_nan=False) + "\n")
    checks = targets(results)
    table = rows(results, checks)
    results["targets"] = [asdict(target) for target in checks]
    results["table"] = [asdict(row) for row in table]
    paths["json"].write_text(json.dumps(_clean(results), indent=1, allow_nan=False) + "\n")
    paths["markdown"].write_text(markdown(results, checks, table))
    draw(results, checks, paths["chart"])
    return paths
