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

from benchmarks.report import Target, history_ends, target_level

RUNTIME = "#d9541e"
FLOOR = "#4c72b0"
GOOD = "#2e8b57"
BAD = "#c0392b"
TARGET = "#555555"


def _nan0(value: float) -> float:
    return 0.0 if value is None or math.isnan(value) else value


def _scorecard(ax: Axes, results: dict[str, Any], checks: list[Target]) -> None:
    ax.axis("off")
    met = sum(target.met for target in checks)
    ax.set_title(f"Targets: {met} of {len(checks)} met", loc="left", fontweight="bold")
    y = 0.9
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
            fontsize=9,
            transform=ax.transAxes,
            va="top",
        )
        y -= 0.19
    meta = results["meta"]
    note = (
        f"{meta['cpus']} cores shared by load generator, fake model and server; "
        f"floor on {meta.get('floor_http_client', 'httpx')}; "
        f"{meta['date'][:10]}" + ("  (QUICK RUN)" if meta["quick"] else "")
    )
    ax.text(0.0, 0.0, note, fontsize=7.5, color=TARGET, transform=ax.transAxes)


def _bars(ax: Axes, labels: list[str], runtime: list[float], floor: list[float]) -> list[float]:
    xs = list(range(len(labels)))
    width = 0.38
    ax.bar([x - width / 2 for x in xs], floor, width, color=FLOOR, label="floor (bare relay)")
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
        "Throughput (turns/s, higher is better)\nlabel: runtime ÷ floor; target at "
        f"c={target}: ≥ 0.8x",
        fontsize=10,
    )
    ax.set_ylabel("turns per second")
    ax.set_ylim(0, max([*runtime, *floor, 1.0]) * 1.3)
    ax.legend(fontsize=8, loc="upper left")


def _latency(ax: Axes, results: dict[str, Any]) -> None:
    levels = list(results["throughput"])
    labels = [f"c={c}" for c in levels]
    xs = list(range(len(levels)))
    width = 0.38
    for offset, system, color in ((-width / 2, "floor", FLOOR), (width / 2, "runtime", RUNTIME)):
        p50 = [_nan0(results["throughput"][c][system]["e2e_ms"]["p50"]) for c in levels]
        p99 = [_nan0(results["throughput"][c][system]["e2e_ms"]["p99"]) for c in levels]
        positions = [x + offset for x in xs]
        ax.bar(positions, p99, width, color=color, alpha=0.35)
        ax.bar(positions, p50, width, color=color, label=f"{system}: p50 (dark), p99 (light)")
    target = target_level(results)
    run99 = results["throughput"][target]["runtime"]["e2e_ms"]["p99"]
    flo99 = results["throughput"][target]["floor"]["e2e_ms"]["p99"]
    share = run99 / flo99 if flo99 else math.nan
    index = levels.index(target)
    ax.annotate(
        f"p99 {share:.2f}x",
        (index + width / 2, _nan0(run99)),
        ha="center",
        va="bottom",
        fontsize=9,
        fontweight="bold",
        color=GOOD if share <= 2 else BAD,
    )
    ax.set_xticks(xs, labels)
    ax.set_yscale("log")
    highest = max(
        _nan0(results["throughput"][c][system]["e2e_ms"]["p99"])
        for c in levels
        for system in ("floor", "runtime")
    )
    ax.set_ylim(top=max(highest, 1.0) * 6)
    ax.set_ylabel("ms (log scale)")
    ax.set_title(
        f"End-to-end turn latency (lower is better)\ntarget at c={target}: p99 ≤ 2x floor's p99",
        fontsize=10,
    )
    ax.legend(fontsize=8, loc="upper left")


def _added(ax: Axes, results: dict[str, Any]) -> None:
    added = results["added_latency"]
    systems = ["floor", "runtime"]
    up = [_nan0(added[s]["upstream_ms"]["p50"]) for s in systems]
    down = [_nan0(added[s]["downstream_ms"]["p50"]) for s in systems]
    total = [_nan0(added[s]["added_ms"]["p50"]) for s in systems]
    ys = [0, 1]
    ax.barh(ys, up, color=[FLOOR, RUNTIME], alpha=0.45)
    ax.barh(ys, down, left=up, color=[FLOOR, RUNTIME])
    for y, value in zip(ys, total, strict=True):
        ax.text(value, y, f" {value:.2f} ms", va="center", fontsize=9, fontweight="bold")
    ax.axvline(2.0, color=TARGET, linestyle="--", linewidth=1)
    ax.text(2.0, 1.45, " target < 2 ms", color=TARGET, fontsize=8)
    ax.set_yticks(ys, systems)
    ax.set_ylim(-0.6, 1.7)
    ax.set_xlim(0, max(2.5, max(total) * 1.35))
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
    fig, axes = plt.subplots(2, 3, figsize=(16, 9.5))
    _scorecard(axes[0][0], results, checks)
    _throughput(axes[0][1], results)
    _latency(axes[0][2], results)
    _added(axes[1][0], results)
    _history(axes[1][1], results)
    _slow(axes[1][2], results)
    fig.suptitle(
        "agent-runtime vs a bare gRPC relay (the floor), same fake model, same run",
        fontsize=13,
        fontweight="bold",
    )
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)
