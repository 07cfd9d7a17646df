"""chart.png: the targets at a glance, then one panel per question of the benchmark."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.patches import Patch

from benchmarks.report import Target, cpu_level, history_ends, target_level

RUNTIME = "#d9541e"
FLOOR = "#4c72b0"
PEER = "#8e44ad"
COLORS = {"runtime": RUNTIME, "floor": FLOOR, "peer": PEER}
GOOD = "#2e8b57"
BAD = "#c0392b"
TARGET = "#555555"


def _nan0(value: float) -> float:
    return 0.0 if value is None or math.isnan(value) else value


def _scorecard(ax: Axes, results: dict[str, Any], checks: list[Target]) -> None:
    ax.axis("off")
    met = sum(target.met for target in checks)
    ax.set_title(f"Targets: {met} of {len(checks)} met", loc="left", fontweight="bold")
    y = 0.95
    step = min(0.19, 0.9 / max(1, len(checks)))
    for target in checks:
        color = GOOD if target.met else BAD
        ax.text(
            0.0,
            y,
            "PASS" if target.met else "FAIL",
            color=color,
            fontweight="bold",
            fontsize=10,
            transform=ax.transAxes,
            va="top",
        )
        ax.text(
            0.16,
            y,
            f"{target.name}\n{target.requirement}: {target.measured_text}",
            fontsize=7.5,
            transform=ax.transAxes,
            va="top",
        )
        y -= step
    meta = results["meta"]
    note = (
        f"{meta['cpus']} cores shared by load generators, fake model and server; "
        f"{meta['date'][:10]}" + ("  (QUICK RUN)" if meta["quick"] else "")
    )
    ax.text(0.0, 0.0, note, fontsize=7.5, color=TARGET, transform=ax.transAxes)


def _bars(ax: Axes, labels: list[str], runtime: list[float], floor: list[float]) -> list[float]:
    xs = list(range(len(labels)))
    width = 0.38
    ax.bar([x - width / 2 for x in xs], floor, width, color=FLOOR, label="floor")
    ax.bar([x + width / 2 for x in xs], runtime, width, color=RUNTIME, label="runtime")
    ax.set_xticks(xs, labels)
    return [x + width / 2 for x in xs]


def _throughput(ax: Axes, results: dict[str, Any]) -> None:
    levels = list(results["throughput"])
    runtime = [_nan0(results["throughput"][c]["runtime"]["turns_per_s"]) for c in levels]
    floor = [_nan0(results["throughput"][c]["floor"]["turns_per_s"]) for c in levels]
    xs = _bars(ax, [f"c={c}" for c in levels], runtime, floor)
    target = target_level(results)
    for x, level, run, flo in zip(xs, levels, runtime, floor, strict=True):
        share = run / flo if flo else math.nan
        color = (GOOD if share >= 0.8 else BAD) if level == target else "black"
        ax.annotate(
            f"{share:.2f}x",
            (x, run),
            ha="center",
            va="bottom",
            fontsize=9,
            color=color,
            fontweight="bold",
        )
    ax.set_title(
        "Burst (zero-latency model): turns/s\nlabel: runtime ÷ floor; target at "
        f"c={target}: ≥ 0.8x",
        fontsize=10,
    )
    ax.set_ylabel("turns per second")
    ax.set_ylim(0, max([*runtime, *floor, 1.0]) * 1.3)
    ax.legend(fontsize=8, loc="upper left")


def _capacity_delay(ax: Axes, results: dict[str, Any]) -> None:
    """The capacity chart: p99 (and p50) added token delay against concurrent streams."""
    cap = results["capacity"]
    levels = [int(level) for level in cap["levels"]]
    for system in cap["systems"]:
        color = COLORS[system]
        p99 = [cap["levels"][str(n)][system]["token_delay_ms"]["p99"] for n in levels]
        p50 = [cap["levels"][str(n)][system]["token_delay_ms"]["p50"] for n in levels]
        found = cap["capacity"][system]
        ax.plot(
            levels,
            p99,
            "o-",
            color=color,
            label=f"{system} p99 (capacity {found['streams']}{'+' if found['at_least'] else ''})",
        )
        ax.plot(levels, p50, "--", color=color, alpha=0.6, linewidth=1)
        for n in levels:
            summary = cap["levels"][str(n)][system]
            if summary["errors"] or summary["harness_limited"]:
                ax.annotate(
                    "E" if summary["errors"] else "H",
                    (n, _nan0(summary["token_delay_ms"]["p99"])),
                    fontsize=8,
                    color=BAD,
                    ha="left",
                    va="bottom",
                )
    limit = cap["delay_limit_ms"]
    ax.axhline(limit, color=TARGET, linestyle="--", linewidth=1)
    ax.text(
        levels[-1] if levels else 0,
        limit * 1.1,
        f"pass: p99 <= {limit:g} ms",
        fontsize=8,
        ha="right",
        color=TARGET,
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(levels, [str(n) for n in levels])
    ax.minorticks_off()
    ax.set_xlabel("concurrent streams (closed loop)")
    ax.set_ylabel("added delay per token, ms (log)")
    ax.set_title(
        f"Capacity at {cap['tokens_per_second']:g} tokens/s: delay added to each token\n"
        "solid p99, dashed p50; H: harness-limited, E: errors",
        fontsize=10,
    )
    ax.legend(fontsize=7.5, loc="upper left")


def _capacity_cores(ax: Axes, results: dict[str, Any]) -> None:
    """Who used the cores during each level's runtime blocks: is the harness the limit?"""
    cap = results["capacity"]
    levels = list(cap["levels"])
    xs = list(range(len(levels)))
    parts = (
        ("server", "runtime", RUNTIME),
        ("load_generators", "load generators", TARGET),
        ("model", "fake model", "#999999"),
        ("others", "other processes", "#dddddd"),
    )
    bottom = [0.0] * len(levels)
    for key, label, color in parts:
        values = [_nan0(cap["levels"][n]["runtime"]["cores"][key]) for n in levels]
        ax.bar(xs, values, 0.6, bottom=bottom, color=color, label=label)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    cpus = results["meta"]["cpus"]
    ax.axhline(cpus, color=BAD, linestyle="--", linewidth=1)
    ax.set_xticks(xs, levels)
    ax.set_xlabel("concurrent streams (the runtime's blocks)")
    ax.set_ylabel("cores")
    ax.set_ylim(0, cpus * 1.3)
    ax.set_title(
        f"Cores used in the capacity window ({cpus} on this machine)\n"
        "the harness must not be what fills them",
        fontsize=10,
    )
    ax.legend(fontsize=7.5, loc="upper left", ncol=2)


def _capacity_cpu(ax: Axes, results: dict[str, Any]) -> None:
    cap = results["capacity"]
    levels = [int(level) for level in cap["levels"]]
    for system in cap["systems"]:
        cpu = [cap["levels"][str(n)][system]["server_cpu_us_per_token"] for n in levels]
        ax.plot(levels, cpu, "o-", color=COLORS[system], label=system)
    harness = [cap["levels"][str(n)]["runtime"]["harness_cpu_us_per_token"] for n in levels]
    ax.plot(levels, harness, ":", color=TARGET, label="harness (load generators + model)")
    level = cpu_level(results)
    if level is not None:
        ax.axvline(int(level), color=TARGET, linewidth=0.8, alpha=0.5)
    ax.set_xscale("log")
    ax.set_xticks(levels, [str(n) for n in levels])
    ax.minorticks_off()
    ax.set_ylim(bottom=0)
    ax.set_xlabel("concurrent streams")
    ax.set_ylabel("CPU µs per token")
    ax.set_title(
        f"Server CPU per token delivered\ntarget at {level}: runtime <= 1.25x floor",
        fontsize=10,
    )
    ax.legend(fontsize=7.5, loc="upper right")


def _added(ax: Axes, results: dict[str, Any]) -> None:
    added = results["added_latency"]
    systems = [s for s in ("floor", "runtime", "peer") if s in added]
    colors = [COLORS[s] for s in systems]
    up = [_nan0(added[s]["upstream_ms"]["p50"]) for s in systems]
    down = [_nan0(added[s]["downstream_ms"]["p50"]) for s in systems]
    total = [_nan0(added[s]["added_ms"]["p50"]) for s in systems]
    ys = list(range(len(systems)))
    ax.barh(ys, up, color=colors, alpha=0.45)
    ax.barh(ys, down, left=up, color=colors)
    for y, value in zip(ys, total, strict=True):
        ax.text(value, y, f" {value:.2f} ms", va="center", fontsize=9, fontweight="bold")
    bound = total[0] + 2.0
    ax.axvline(bound, color=TARGET, linestyle="--", linewidth=1)
    ax.text(bound, len(systems) - 0.55, " target: floor + 2 ms", color=TARGET, fontsize=8)
    ax.set_yticks(ys, systems)
    ax.set_ylim(-0.6, len(systems) - 0.3)
    ax.set_xlim(0, max(bound * 1.2, max(total) * 1.35))
    ax.set_xlabel("ms (p50 of each part)")
    ax.set_title(
        f"Added latency to first token at c={added['concurrency']}, p50\n"
        "(time to first token - the model's own time to first byte)",
        fontsize=10,
    )
    ax.legend(
        handles=[
            Patch(color="grey", alpha=0.45, label="request: client sent -> model has it"),
            Patch(color="grey", label="first token: model wrote it -> client has it"),
        ],
        fontsize=7.5,
        loc="lower right",
    )


def _history(ax: Axes, results: dict[str, Any]) -> None:
    history = results["history"]
    lengths = list(history["runtime"])
    p50 = [_nan0(history["runtime"][n]["e2e_ms"]["p50"]) for n in lengths]
    xs = list(range(len(lengths)))
    ax.bar(xs, p50, 0.55, color=RUNTIME, label="runtime, p50")
    short, _ = history_ends(results)
    base = _nan0(history["runtime"][short]["e2e_ms"]["p50"])
    ax.axhline(
        base * 1.5,
        color=TARGET,
        linestyle="--",
        linewidth=1,
        label=f"target: 1.5x the {int(short):,}-message turn",
    )
    ax.axhline(
        _nan0(history["floor"]["e2e_ms"]["p50"]),
        color=FLOOR,
        linewidth=1.5,
        label="floor (no history), p50",
    )
    for x, value in zip(xs, p50, strict=True):
        share = value / base if base else math.nan
        ax.annotate(
            f"{share:.2f}x",
            (x, value),
            ha="center",
            va="bottom",
            fontsize=9,
            fontweight="bold",
            color=GOOD if share <= 1.5 else BAD,
        )
    ax.set_xticks(xs, [f"{int(n):,}" for n in lengths])
    ax.set_xlabel("messages already in the session")
    ax.set_ylabel("ms")
    ax.set_ylim(0, max([*p50, base * 1.5]) * 1.3)
    ax.set_title(
        f"Turn latency against history length, c=1\nlabel: ÷ the {int(short):,}-message turn",
        fontsize=10,
    )
    ax.legend(fontsize=7.5, loc="upper left")


def _slow(ax: Axes, results: dict[str, Any]) -> None:
    slow = results["slow_streams"]
    systems = ["floor", "runtime"]
    rss = [slow[s]["peak_rss_kib"] / 1024 for s in systems]
    xs = [0, 1]
    ax.bar(xs, rss, 0.55, color=[FLOOR, RUNTIME])
    ax.axhline(1024, color=TARGET, linestyle="--", linewidth=1)
    ax.text(-0.55, 1034, "1 GiB (target: below)", color=TARGET, fontsize=8, va="bottom")
    for x, system, value in zip(xs, systems, rss, strict=True):
        s = slow[system]
        errors = s["errors"]
        text = (
            f"{value:.0f} MiB\n{errors} errors\np99 token delay\n"
            f"{_nan0(s['token_delay_ms']['p99']):.1f} ms"
        )
        ax.annotate(
            text,
            (x, value),
            ha="center",
            va="bottom",
            fontsize=8.5,
            color=BAD if errors else "black",
        )
    ax.set_xticks(xs, systems)
    ax.set_xlim(-0.6, 1.6)
    ax.set_ylim(0, 1024 * 1.35)
    ax.set_ylabel("peak RSS, MiB")
    ax.set_title(
        f"{slow['streams']:,} concurrent streams at {slow['tokens_per_second']:g} "
        "tokens/s\ntarget: < 1 GiB RSS, no errors",
        fontsize=10,
    )


def draw(results: dict[str, Any], checks: list[Target], path: Path) -> None:
    fig, axes = plt.subplots(2, 4, figsize=(22, 10))
    _scorecard(axes[0][0], results, checks)
    _capacity_delay(axes[0][1], results)
    _capacity_cpu(axes[0][2], results)
    _throughput(axes[0][3], results)
    _added(axes[1][0], results)
    _history(axes[1][1], results)
    _slow(axes[1][2], results)
    _capacity_cores(axes[1][3], results)
    peer = " and the LiteLLM proxy (the peer)" if results.get("peer") else ""
    fig.suptitle(
        f"agent-runtime vs the floor (its model client and framing, no database){peer}; "
        "same fake model, same run",
        fontsize=13,
        fontweight="bold",
    )
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)
